//! Filters over traces, in one place: a tracker's `spec.filter` (routing, decided
//! from the routing metadata alone, without parsing the trace) and a query's
//! filter (on a view of the trace line) compile to the same [`Criteria`], so a
//! field means the same everywhere (`core` and `""` are both the core group,
//! `pods/*` any subresource of pods, `system:*` a prefix).

use crate::api::{MatchRule, QueryFilter, Rating, ReadOnly, Stage, TrackerFilter};
use crate::trace::{RouteMeta, is_read_only};

/// The fields filters look at, whichever way a trace is held: its routing
/// metadata at delivery, a view of its line in a query. Fields a holder does not
/// know answer empty.
pub trait TraceFields {
    fn verb(&self) -> &str;
    /// API group; `""` for core.
    fn api_group(&self) -> &str;
    /// `resource` or `resource/subresource`.
    fn resource(&self) -> &str;
    fn namespace(&self) -> &str;
    fn user(&self) -> &str;
    fn in_user_group(&self, _group: &str) -> bool {
        false
    }
    fn resource_name(&self) -> &str {
        ""
    }
    /// `normal`, `warning` or `incident`.
    fn rating(&self) -> &str {
        ""
    }
    fn has_source_ip(&self, _ip: &str) -> bool {
        false
    }
    fn trace_id(&self) -> &str {
        ""
    }
}

impl TraceFields for RouteMeta<'_> {
    fn verb(&self) -> &str {
        &self.verb
    }
    fn api_group(&self) -> &str {
        &self.group
    }
    fn resource(&self) -> &str {
        &self.resource
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn user(&self) -> &str {
        &self.user
    }
    fn in_user_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// Compiled match criteria: every field that is set must match; within a field
/// any entry may.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Criteria {
    verbs: Vec<String>,
    /// Normalised: the core group is `""`.
    api_groups: Vec<String>,
    resources: Vec<String>,
    namespaces: Vec<String>,
    users: Vec<String>,
    user_groups: Vec<String>,
    resource_names: Vec<String>,
    ratings: Vec<&'static str>,
    source_ips: Vec<String>,
    trace_ids: Vec<String>,
}

fn core_is_empty(groups: &[String]) -> Vec<String> {
    groups
        .iter()
        .map(|g| if g == "core" { String::new() } else { g.clone() })
        .collect()
}

/// The name of a rating in trace records.
pub fn rating_name(r: Rating) -> &'static str {
    match r {
        Rating::Normal => "normal",
        Rating::Warning => "warning",
        Rating::Incident => "incident",
    }
}

impl Criteria {
    /// A tracker's match rule.
    pub fn from_rule(r: &MatchRule) -> Criteria {
        Criteria {
            verbs: r.verbs.clone(),
            api_groups: core_is_empty(&r.api_groups),
            resources: r.resources.clone(),
            namespaces: r.namespaces.clone(),
            users: r.users.clone(),
            user_groups: r.user_groups.clone(),
            ..Criteria::default()
        }
    }

    /// A query's filter.
    pub fn from_query(f: &QueryFilter) -> Criteria {
        Criteria {
            verbs: f.verbs.clone(),
            api_groups: core_is_empty(&f.api_groups),
            resources: f.resources.clone(),
            namespaces: f.namespaces.clone(),
            users: f.users.clone(),
            resource_names: f.resource_names.clone(),
            ratings: f.ratings.iter().copied().map(rating_name).collect(),
            source_ips: f.source_ips.clone(),
            trace_ids: f.trace_ids.clone(),
            ..Criteria::default()
        }
    }

    pub fn matches(&self, t: &impl TraceFields) -> bool {
        fn any<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
            list.is_empty() || list.iter().any(f)
        }
        any(&self.verbs, |v| v == "*" || v == t.verb())
            && any(&self.api_groups, |g| g == "*" || g == t.api_group())
            && any(&self.resources, |p| resource_matches(p, t.resource()))
            && any(&self.namespaces, |n| n == t.namespace())
            && any(&self.users, |u| name_matches(u, t.user()))
            && any(&self.user_groups, |g| t.in_user_group(g))
            && any(&self.resource_names, |n| n == t.resource_name())
            && any(&self.ratings, |r| *r == t.rating())
            && any(&self.source_ips, |ip| t.has_source_ip(ip))
            && any(&self.trace_ids, |id| id == t.trace_id())
    }
}

/// A tracker's filter, ready to match.
#[derive(Clone, Debug)]
pub struct Filter {
    include: Vec<Criteria>,
    exclude: Vec<Criteria>,
    read_only: ReadOnly,
    stages: Vec<&'static str>,
}

fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::RequestReceived => "RequestReceived",
        Stage::ResponseStarted => "ResponseStarted",
        Stage::ResponseComplete => "ResponseComplete",
        Stage::Panic => "Panic",
        Stage::Admission => "Admission",
    }
}

impl Filter {
    pub fn new(spec: &TrackerFilter) -> Filter {
        Filter {
            include: spec.include.iter().map(Criteria::from_rule).collect(),
            exclude: spec.exclude.iter().map(Criteria::from_rule).collect(),
            read_only: spec.read_only,
            stages: spec.stages.iter().copied().map(stage_name).collect(),
        }
    }

    /// Whether the tracker keeps this trace.
    pub fn matches(&self, m: &RouteMeta<'_>) -> bool {
        if m.malformed {
            return true;
        }
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
            && (self.include.is_empty() || self.include.iter().any(|r| r.matches(m)))
            && !self.exclude.iter().any(|r| r.matches(m))
    }
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

/// A stored trace line read back (queries filter with the same criteria).
impl TraceFields for crate::trace::View<'_> {
    fn verb(&self) -> &str {
        crate::trace::View::verb(self)
    }
    fn api_group(&self) -> &str {
        match self.service_type.as_ref() {
            "core" => "",
            g => g,
        }
    }
    fn resource(&self) -> &str {
        &self.resource_type
    }
    fn namespace(&self) -> &str {
        &self.namespace
    }
    fn user(&self) -> &str {
        &self.user
    }
    fn resource_name(&self) -> &str {
        &self.resource_name
    }
    fn rating(&self) -> &str {
        &self.trace_rating
    }
    fn has_source_ip(&self, ip: &str) -> bool {
        self.source_ips.iter().any(|x| x == ip)
    }
    fn trace_id(&self) -> &str {
        &self.trace_id
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
            key: 0,
            malformed: false,
            code: 0,
            name: "".into(),
            impersonated: false,
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

#[cfg(test)]
mod criteria_tests {
    use super::*;
    use std::borrow::Cow;

    #[test]
    fn a_tracker_rule_and_a_query_filter_mean_the_same() {
        let m = RouteMeta {
            verb: "delete".into(),
            group: "".into(),
            resource: "pods/exec".into(),
            namespace: "shop".into(),
            user: "system:serviceaccount:shop:ci".into(),
            groups: vec![Cow::Borrowed("ci")],
            stage: "ResponseComplete".into(),
            time_ms: 0,
            key: 0,
            malformed: false,
            code: 0,
            name: "".into(),
            impersonated: false,
        };
        for json in [
            r#"{"apiGroups":["core"],"resources":["pods/*"],"users":["system:serviceaccount:*"],"verbs":["delete"]}"#,
            r#"{"apiGroups":[""],"resources":["*/exec"],"namespaces":["shop"],"verbs":["*"]}"#,
        ] {
            let rule: MatchRule = serde_json::from_str(json).unwrap();
            let query: QueryFilter = serde_json::from_str(json).unwrap();
            assert!(Criteria::from_rule(&rule).matches(&m), "{json}");
            assert_eq!(
                Criteria::from_rule(&rule),
                Criteria::from_query(&query),
                "one compiled form: {json}"
            );
        }
        let other: MatchRule = serde_json::from_str(r#"{"apiGroups":["apps"]}"#).unwrap();
        assert!(!Criteria::from_rule(&other).matches(&m));
    }
}
