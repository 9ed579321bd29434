//! Which traces a KeyEventNotification selects: operations, presets, users,
//! groups, namespaces, ratings (all ANDed, each a list of alternatives) and a
//! CEL condition over the trace record.

use crate::api::{KeyEventNotificationSpec, OperationSelector, Preset, Rating};
use crate::route::{name_matches, resource_matches};
use crate::trace::{RouteMeta, View};

/// Why a notification's selection cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("condition does not compile: {0}")]
    Compile(String),
    #[error("condition refers to {0}; the only variable is `trace`")]
    UnknownVariable(String),
}

/// What a selection reads beyond verb, resource, namespace and user: from the
/// routing metadata when it carries them (so only matches are parsed), else
/// from the trace line.
pub struct Facts<'a> {
    pub code: Option<i32>,
    pub name: &'a str,
    pub impersonated: bool,
    pub rating: &'a str,
}

impl<'a> Facts<'a> {
    /// `None` for a record spooled by a version whose metadata lacks them.
    pub fn from_meta(m: &'a RouteMeta<'a>) -> Option<Facts<'a>> {
        (m.code >= 0).then(|| {
            let code = (m.code > 0).then_some(m.code);
            Facts {
                code,
                name: &m.name,
                impersonated: m.impersonated,
                rating: crate::route::rating_name(crate::trace::rating(code, &m.stage)),
            }
        })
    }

    pub fn from_view(v: &'a View<'a>) -> Facts<'a> {
        Facts {
            code: v.code,
            name: &v.resource_name,
            impersonated: v.impersonated_user.as_deref().is_some_and(|u| !u.is_empty()),
            rating: &v.trace_rating,
        }
    }
}

/// A compiled selection.
pub struct Selection {
    operations: Vec<OperationSelector>,
    presets: Vec<Preset>,
    users: Vec<String>,
    groups: Vec<String>,
    namespaces: Vec<String>,
    ratings: Vec<&'static str>,
    condition: Option<cel::Program>,
}

/// Compiles a CEL condition; the only variable it may name is `trace`.
pub fn compile_condition(source: &str) -> Result<cel::Program, SelectError> {
    let program = cel::Program::compile(source).map_err(|e| SelectError::Compile(e.to_string()))?;
    if let Some(v) = program
        .references()
        .variables()
        .into_iter()
        .find(|v| *v != "trace")
    {
        return Err(SelectError::UnknownVariable(v.to_string()));
    }
    Ok(program)
}

fn any_or_empty<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
    list.is_empty() || list.iter().any(f)
}

fn listed(list: &[String], value: &str) -> bool {
    any_or_empty(list, |p| p == "*" || name_matches(p, value))
}

fn mutating(verb: &str) -> bool {
    !matches!(verb, "get" | "list" | "watch")
}

fn preset_matches(p: Preset, m: &RouteMeta<'_>, v: &Facts<'_>) -> bool {
    let (verb, group, resource) = (m.verb.as_ref(), m.group.as_ref(), m.resource.as_ref());
    match p {
        Preset::AllDeletes => matches!(verb, "delete" | "deletecollection"),
        Preset::RbacChanges => {
            group == "rbac.authorization.k8s.io"
                && matches!(
                    resource,
                    "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
                )
                && mutating(verb)
        }
        Preset::DeniedRequests => matches!(v.code, Some(401 | 403)),
        Preset::SecretReads => group.is_empty() && resource == "secrets" && !mutating(verb),
        Preset::SecretAccess => group.is_empty() && resource == "secrets",
        Preset::PodExec => {
            group.is_empty() && matches!(resource, "pods/exec" | "pods/attach" | "pods/portforward")
        }
        Preset::KubetrailChanges => group == "kubetrail.io" && mutating(verb),
        Preset::Impersonation => v.impersonated,
    }
}

fn operation_matches(o: &OperationSelector, m: &RouteMeta<'_>, name: Option<&str>) -> bool {
    let group_ok = any_or_empty(&o.api_groups, |g| {
        g == "*" || g == m.group.as_ref() || (g == "core" && m.group.is_empty())
    });
    let names_ok = match name {
        Some(n) => listed(&o.resource_names, n),
        None => true,
    };
    group_ok
        && any_or_empty(&o.verbs, |v| v == "*" || v == m.verb.as_ref())
        && any_or_empty(&o.resources, |r| r == "*" || resource_matches(r, &m.resource))
        && names_ok
}

impl Selection {
    pub fn compile(spec: &KeyEventNotificationSpec) -> Result<Selection, SelectError> {
        let condition = spec.condition.as_deref().map(compile_condition).transpose()?;
        Ok(Selection {
            operations: spec.operations.clone(),
            presets: spec.presets.clone(),
            users: spec.users.clone(),
            groups: spec.user_groups.clone(),
            namespaces: spec.namespaces.clone(),
            ratings: spec
                .ratings
                .iter()
                .map(|r: &Rating| crate::route::rating_name(*r))
                .collect(),
            condition,
        })
    }

    /// What the routing metadata alone can rule out (most traffic, cheaply).
    pub fn prefilter(&self, m: &RouteMeta<'_>) -> bool {
        // One message per request: its final stage (exec and watch sessions
        // are reported when they end; the apiserver's other stages repeat it).
        if m.malformed || !matches!(m.stage.as_ref(), "ResponseComplete" | "Panic" | "Admission") {
            return false;
        }
        listed(&self.users, &m.user)
            && (self.groups.is_empty() || m.groups.iter().any(|g| self.groups.iter().any(|x| x == g)))
            && (self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == m.namespace.as_ref()))
            && any_or_empty(&self.operations, |o| operation_matches(o, m, None))
    }

    /// The whole selection; `line` is the trace line, parsed into a value for
    /// the condition only when everything else matched.
    pub fn matches(&self, m: &RouteMeta<'_>, f: &Facts<'_>, line: &[u8]) -> bool {
        if !self.prefilter(m)
            || !any_or_empty(&self.operations, |o| operation_matches(o, m, Some(f.name)))
            || !any_or_empty(&self.presets, |p| preset_matches(*p, m, f))
            || !any_or_empty(&self.ratings, |r| *r == f.rating)
        {
            return false;
        }
        match &self.condition {
            None => true,
            Some(program) => evaluate(program, m, line),
        }
    }
}

/// Runs the condition with `trace` bound to the trace record plus `verb` and
/// `api_group` from the routing metadata. An error (a missing field, a type
/// mismatch) counts as false, as in Kubernetes' match conditions.
fn evaluate(program: &cel::Program, m: &RouteMeta<'_>, line: &[u8]) -> bool {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(line) else {
        return false;
    };
    if let Some(obj) = value.as_object_mut() {
        obj.insert("verb".into(), m.verb.as_ref().into());
        obj.insert("api_group".into(), m.group.as_ref().into());
        obj.entry("code").or_insert(serde_json::Value::from(0));
    }
    let mut ctx = cel::Context::default();
    if ctx.add_variable("trace", value).is_err() {
        return false;
    }
    matches!(program.execute(&ctx), Ok(cel::Value::Bool(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> KeyEventNotificationSpec {
        let mut base = serde_json::json!({"kubernetesEvent": true});
        base.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    fn meta(
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        user: &'static str,
    ) -> RouteMeta<'static> {
        RouteMeta {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: "ns".into(),
            user: user.into(),
            groups: vec!["system:authenticated".into()],
            stage: "ResponseComplete".into(),
            time_ms: 0,
            key: 0,
            malformed: false,
            code: 0,
            name: "".into(),
            impersonated: false,
        }
    }

    fn line(code: i32, name: &str, user: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "trace_id": "a", "trace_name": "x", "trace_rating": if code >= 400 { "warning" } else { "normal" },
            "resource_name": name, "user": user, "code": code, "time": "2026-12-01T00:00:00Z",
            "stage": "ResponseComplete",
        }))
        .unwrap()
    }

    /// Both ways agree: facts from the line, and from the metadata.
    fn check(sel: &Selection, m: &RouteMeta<'_>, l: &[u8]) -> bool {
        let v: View<'_> = serde_json::from_slice(l).unwrap();
        let by_line = sel.matches(m, &Facts::from_view(&v), l);
        let mut m2 = m.clone();
        m2.code = v.code.unwrap_or(0);
        m2.name = v.resource_name.clone();
        let by_meta = sel.matches(&m2, &Facts::from_meta(&m2).unwrap(), l);
        assert_eq!(by_line, by_meta, "metadata and line disagree");
        by_line
    }

    #[test]
    fn presets_select_what_they_name() {
        let sel = Selection::compile(&spec(
            serde_json::json!({"presets": ["allDeletes", "rbacChanges", "deniedRequests"]}),
        ))
        .unwrap();
        assert!(check(
            &sel,
            &meta("delete", "", "secrets", "u"),
            &line(200, "s", "u")
        ));
        assert!(check(
            &sel,
            &meta("patch", "rbac.authorization.k8s.io", "rolebindings", "u"),
            &line(200, "b", "u")
        ));
        assert!(!check(
            &sel,
            &meta("get", "rbac.authorization.k8s.io", "rolebindings", "u"),
            &line(200, "b", "u")
        ));
        assert!(check(&sel, &meta("get", "", "pods", "u"), &line(403, "p", "u")));
        assert!(!check(
            &sel,
            &meta("update", "", "configmaps", "u"),
            &line(200, "c", "u")
        ));
        let sel = Selection::compile(&spec(
            serde_json::json!({"presets": ["secretReads", "podExec", "kubetrailChanges"]}),
        ))
        .unwrap();
        assert!(check(
            &sel,
            &meta("get", "", "secrets", "u"),
            &line(200, "s", "u")
        ));
        assert!(!check(
            &sel,
            &meta("update", "", "secrets", "u"),
            &line(200, "s", "u")
        ));
        assert!(check(
            &sel,
            &meta("create", "", "pods/exec", "u"),
            &line(101, "p", "u")
        ));
        assert!(check(
            &sel,
            &meta("delete", "kubetrail.io", "trackers", "u"),
            &line(200, "t", "u")
        ));
    }

    #[test]
    fn lists_are_anded_and_only_final_stages_count() {
        let sel = Selection::compile(&spec(serde_json::json!({
            "operations": [{"verbs": ["delete"], "resources": ["secrets"], "resourceNames": ["db-*"]}],
            "users": ["alice", "ci-*"], "namespaces": ["ns"],
        })))
        .unwrap();
        assert!(check(
            &sel,
            &meta("delete", "", "secrets", "alice"),
            &line(200, "db-1", "alice")
        ));
        assert!(check(
            &sel,
            &meta("delete", "", "secrets", "ci-bot"),
            &line(200, "db-1", "ci-bot")
        ));
        assert!(!check(
            &sel,
            &meta("delete", "", "secrets", "bob"),
            &line(200, "db-1", "bob")
        ));
        assert!(!check(
            &sel,
            &meta("delete", "", "secrets", "alice"),
            &line(200, "web", "alice")
        ));
        let mut m = meta("delete", "", "secrets", "alice");
        m.stage = "ResponseStarted".into();
        assert!(!check(&sel, &m, &line(200, "db-1", "alice")));
        let mut m = meta("delete", "", "secrets", "alice");
        m.namespace = "other".into();
        assert!(!check(&sel, &m, &line(200, "db-1", "alice")));
    }

    #[test]
    fn conditions_are_cel_over_the_trace() {
        let sel = Selection::compile(&spec(serde_json::json!({
            "condition": "trace.code >= 400 && !trace.user.startsWith('system:') && trace.verb == 'get'",
        })))
        .unwrap();
        assert!(check(
            &sel,
            &meta("get", "", "pods", "alice"),
            &line(403, "p", "alice")
        ));
        assert!(!check(
            &sel,
            &meta("get", "", "pods", "system:x"),
            &line(403, "p", "system:x")
        ));
        assert!(!check(
            &sel,
            &meta("get", "", "pods", "alice"),
            &line(200, "p", "alice")
        ));
        assert!(!check(
            &sel,
            &meta("list", "", "pods", "alice"),
            &line(403, "p", "alice")
        ));
        // A field the trace lacks: false, not an error that stops anything.
        let sel =
            Selection::compile(&spec(serde_json::json!({"condition": "trace.nothing == 'x'"}))).unwrap();
        assert!(!check(
            &sel,
            &meta("get", "", "pods", "alice"),
            &line(200, "p", "alice")
        ));
    }

    #[test]
    fn invalid_conditions_are_refused_with_the_reason() {
        let e = compile_condition("trace.code >= ").err().unwrap();
        assert!(matches!(e, SelectError::Compile(_)), "{e}");
        let e = compile_condition("request.code == 1").err().unwrap();
        assert!(e.to_string().contains("request"), "{e}");
    }
}
