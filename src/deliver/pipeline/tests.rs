//! The pipeline's unit tests (delivery itself is tested end to end).

#[test]
fn a_period_never_ends_in_the_second_it_began() {
    use crate::integrity::digest::digest_key;
    let key = |ms| digest_key("p", "c", "t", "w", ms);
    // Started at .774, drained at .990 of the same second: ends at the next second.
    let start = 1_796_279_983_774;
    let end = sealed_end(start, start + 216);
    assert_eq!(end, 1_796_279_984_000);
    assert_ne!(key(start), key(end), "the next period's digest gets its own key");
    // A period that already spans a second boundary ends where asked.
    assert_eq!(sealed_end(start, start + 60_000), start + 60_000);
    assert_eq!(
        sealed_end(1_796_279_983_000, 1_796_279_984_000),
        1_796_279_984_000
    );
}

use super::chain::sealed_end;
use super::worker::*;
use super::*;
use crate::api::FieldRedaction;
use futures::FutureExt as _;

#[test]
fn retry_delays_grow_and_cap() {
    assert_eq!(retry_delay(1), Duration::from_secs(1));
    assert_eq!(retry_delay(2), Duration::from_secs(2));
    assert_eq!(retry_delay(6), Duration::from_secs(30));
    assert_eq!(retry_delay(100), Duration::from_secs(30));
}

#[test]
fn tracker_redaction_applies_only_where_configured() {
    let meta = |group: &'static str, resource: &'static str| RouteMeta {
        verb: "create".into(),
        group: group.into(),
        resource: resource.into(),
        namespace: "d".into(),
        user: "u".into(),
        groups: vec![],
        stage: "ResponseComplete".into(),
        time_ms: 0,
        key: 0,
        malformed: false,
        code: 0,
        name: "".into(),
        impersonated: false,
    };
    let r = Redaction {
        fields: vec![FieldRedaction {
            api_group: "core".into(),
            resource: "configmaps".into(),
            paths: vec!["data".into()],
        }],
    };
    let cm = br#"{"request":{"data":{"k":"v1"},"metadata":{}},"response":{"kind":"ConfigMapList","items":[{"data":{"k":"v2"}}]}}"#;
    let out = String::from_utf8(redact_for(&r, &meta("", "configmaps"), cm).unwrap()).unwrap();
    assert!(!out.contains("v1") && !out.contains("v2"), "{out}");
    assert!(redact_for(&r, &meta("", "secrets"), cm).is_none());
    assert!(redact_for(&r, &meta("apps", "configmaps"), cm).is_none());
    assert!(redact_for(&Redaction::default(), &meta("", "configmaps"), cm).is_none());
    // Deeper than the parser goes: the bodies go, the rest stays.
    let deep = format!(
        r#"{{"trace_id":"t","request":{{"data":{}"v3"{}}}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    let out = String::from_utf8(redact_for(&r, &meta("", "configmaps"), deep.as_bytes()).unwrap()).unwrap();
    assert_eq!(out, r#"{"request":"[redacted]","trace_id":"t"}"#);
}

/// A store that cannot be opened fails the write with the store's own
/// reason (a missing credentials Secret is `CredentialsNotFound`), not a
/// generic one, and is opened again on the next attempt.
#[test]
fn a_store_that_cannot_open_keeps_its_reason() {
    let missing = crate::store::StoreError::CredentialsNotFound {
        namespace: "kubetrail".into(),
        name: "s3".into(),
    };
    let problem = missing.problem();
    let factory: StoreFactory = {
        let problem = problem.clone();
        Arc::new(move || futures::future::ready(Err(problem.clone())).boxed())
    };
    let mut sink = None;
    let failure = futures::executor::block_on(open_sink(&factory, &mut sink)).unwrap_err();
    assert_eq!(failure.problem.reason, Reason::CredentialsNotFound);
    assert_eq!(failure.problem, problem);
    assert!(!failure.transient);
    assert!(sink.is_none());
    // An open store is kept.
    let dir: StoreFactory =
        Arc::new(|| futures::future::ready(Ok(Store::Dir(std::path::PathBuf::from("/nonexistent")))).boxed());
    let mut sink = None;
    assert!(futures::executor::block_on(open_sink(&dir, &mut sink)).is_ok());
    assert!(matches!(sink, Some(Store::Dir(_))));
}
