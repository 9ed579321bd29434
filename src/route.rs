//! Routing: which traces a tracker keeps (its `spec.filter`), decided from the
//! routing metadata alone, without parsing the trace.

use crate::api::{MatchRule, ReadOnly, Stage, TrackerFilter};
use crate::trace::{RouteMeta, is_read_only};

/// A tracker's filter, ready to match.
#[derive(Clone, Debug)]
pub struct Filter {
    include: Vec<MatchRule>,
    exclude: Vec<MatchRule>,
    read_only: ReadOnly,
    stages: Vec<&'static str>,
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::RequestReceived => "RequestReceived",
        Stage::ResponseStarted => "ResponseStarted",
        Stage::ResponseComplete => "ResponseComplete",
        Stage::Panic => "Panic",
    }
}

impl Filter {
    pub fn new(spec: &TrackerFilter) -> Filter {
        Filter {
            include: spec.include.clone(),
            exclude: spec.exclude.clone(),
            read_only: spec.read_only,
            stages: spec.stages.iter().copied().map(stage_name).collect(),
        }
    }

    /// Whether the tracker keeps this trace.
    pub fn matches(&self, m: &RouteMeta<'_>) -> bool {
        if !self.stages.contains(&m.stage.as_ref()) {
            return false;
        }
        let read = is_read_only(&m.verb);
        let keep_kind = match self.read_only {
            ReadOnly::Include => true,
            ReadOnly::Exclude => !read,
            ReadOnly::Only => read,
        };
        keep_kind
            && (self.include.is_empty() || self.include.iter().any(|r| rule_matches(r, m)))
            && !self.exclude.iter().any(|r| rule_matches(r, m))
    }
}

/// Every field that is set must match; within a field any entry may.
pub fn rule_matches(r: &MatchRule, m: &RouteMeta<'_>) -> bool {
    any_or_empty(&r.verbs, |v| v == "*" || *v == m.verb)
        && any_or_empty(&r.api_groups, |g| {
            g == "*" || g == &m.group || (g == "core" && m.group.is_empty())
        })
        && any_or_empty(&r.resources, |p| resource_matches(p, &m.resource))
        && any_or_empty(&r.namespaces, |n| n == &m.namespace)
        && any_or_empty(&r.users, |u| name_matches(u, &m.user))
        && any_or_empty(&r.user_groups, |g| m.groups.iter().any(|mg| mg == g))
}

fn any_or_empty(list: &[String], f: impl Fn(&String) -> bool) -> bool {
    list.is_empty() || list.iter().any(f)
}

/// `*` matches everything; `pods` only pods; `pods/exec` that subresource;
/// `pods/*` any subresource of pods; `*/exec` that subresource of anything.
pub fn resource_matches(pattern: &str, resource: &str) -> bool {
    if pattern == "*" || pattern == resource {
        return true;
    }
    let (res, sub) = resource.split_once('/').unwrap_or((resource, ""));
    match pattern.split_once('/') {
        Some((pr, "*")) => pr == res && !sub.is_empty(),
        Some(("*", ps)) => ps == sub,
        _ => false,
    }
}

/// Exact, or a prefix match with a trailing `*`.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn meta<'a>(
        verb: &'a str,
        group: &'a str,
        resource: &'a str,
        ns: &'a str,
        user: &'a str,
    ) -> RouteMeta<'a> {
        RouteMeta {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            user: user.into(),
            groups: vec![Cow::Borrowed("dev")],
            stage: "ResponseComplete".into(),
            time_ms: 0,
            hash: "".into(),
        }
    }

    fn filter(yaml: &str) -> Filter {
        Filter::new(&serde_json::from_str(yaml).unwrap())
    }

    #[test]
    fn empty_filter_keeps_completed_requests_only() {
        let f = filter("{}");
        assert!(f.matches(&meta("get", "", "pods", "d", "alice")));
        let mut m = meta("get", "", "pods", "d", "alice");
        m.stage = "ResponseStarted".into();
        assert!(!f.matches(&m));
        m.stage = "Panic".into();
        assert!(f.matches(&m));
    }

    #[test]
    fn read_only_modes() {
        let exclude = filter(r#"{"readOnly":"exclude"}"#);
        let only = filter(r#"{"readOnly":"only"}"#);
        for verb in ["get", "list", "watch"] {
            assert!(!exclude.matches(&meta(verb, "", "pods", "d", "a")));
            assert!(only.matches(&meta(verb, "", "pods", "d", "a")));
        }
        for verb in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(exclude.matches(&meta(verb, "", "pods", "d", "a")));
            assert!(!only.matches(&meta(verb, "", "pods", "d", "a")));
        }
    }

    #[test]
    fn include_and_exclude_rules() {
        let f = filter(
            r#"{"include":[{"resources":["secrets"],"verbs":["delete","create"]},{"apiGroups":["rbac.authorization.k8s.io"]}],
                "exclude":[{"users":["system:*"]},{"namespaces":["kube-system"]}]}"#,
        );
        assert!(f.matches(&meta("delete", "", "secrets", "d", "alice")));
        assert!(
            !f.matches(&meta("get", "", "secrets", "d", "alice")),
            "verb not included"
        );
        assert!(!f.matches(&meta("delete", "", "configmaps", "d", "alice")));
        assert!(f.matches(&meta(
            "create",
            "rbac.authorization.k8s.io",
            "rolebindings",
            "d",
            "bob"
        )));
        assert!(!f.matches(&meta(
            "delete",
            "",
            "secrets",
            "d",
            "system:kube-controller-manager"
        )));
        assert!(!f.matches(&meta("delete", "", "secrets", "kube-system", "alice")));
    }

    #[test]
    fn groups_core_and_cluster_scope() {
        let f = filter(r#"{"include":[{"apiGroups":["core"],"namespaces":[""],"userGroups":["dev"]}]}"#);
        assert!(f.matches(&meta("create", "", "namespaces", "", "alice")));
        assert!(
            !f.matches(&meta("create", "", "pods", "d", "alice")),
            "namespaced"
        );
        assert!(
            !f.matches(&meta("create", "apps", "deployments", "", "alice")),
            "other group"
        );
        let mut m = meta("create", "", "namespaces", "", "alice");
        m.groups = vec![Cow::Borrowed("ops")];
        assert!(!f.matches(&m), "user group");
    }

    #[test]
    fn resource_patterns() {
        assert!(resource_matches("*", "pods/exec"));
        assert!(resource_matches("pods", "pods"));
        assert!(!resource_matches("pods", "pods/exec"));
        assert!(resource_matches("pods/exec", "pods/exec"));
        assert!(resource_matches("pods/*", "pods/log"));
        assert!(!resource_matches("pods/*", "pods"));
        assert!(resource_matches("*/status", "deployments/status"));
        assert!(!resource_matches("*/status", "deployments"));
        assert!(name_matches(
            "system:serviceaccount:*",
            "system:serviceaccount:a:b"
        ));
        assert!(!name_matches("alice", "alice2"));
    }
}
