//! Mutated audit batches, for the webhook's robustness property: whatever the
//! body, parsing and encoding never panic, a body is refused (400) exactly when
//! it is not an `audit.k8s.io/v1` `EventList`, and no planted secret reaches
//! what would be stored. The unit tests run a short sweep; `kubetrail bench
//! --fuzz-cases N` runs a long one.

use serde_json::{Value, json};

/// The value planted in every sensitive field of the seed batches.
pub const PLANT: &str = "PLANTEDxSECRETxVALUE";

/// A small, seeded xorshift generator: the same seed gives the same cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// The kinds of mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    Truncate,
    TypeSwap,
    DeepNest,
    InvalidUtf8,
    HugeString,
    DuplicateKey,
    DropField,
    ByteFlip,
}

pub const MUTATIONS: [Mutation; 8] = [
    Mutation::Truncate,
    Mutation::TypeSwap,
    Mutation::DeepNest,
    Mutation::InvalidUtf8,
    Mutation::HugeString,
    Mutation::DuplicateKey,
    Mutation::DropField,
    Mutation::ByteFlip,
];

fn event(i: usize, resource: &str, subresource: Option<&str>, group: &str, req: Value, resp: Value) -> Value {
    let mut object_ref = json!({"resource": resource, "namespace": "d", "name": format!("o{i}"), "apiVersion": "v1", "apiGroup": group});
    if let Some(s) = subresource {
        object_ref["subresource"] = json!(s);
    }
    json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": format!("fuzz-{i}"),
        "stage": "ResponseComplete", "requestURI": format!("/api/v1/namespaces/d/{resource}/o{i}"), "verb": "update",
        "user": {"username": "alice", "groups": ["dev"]}, "sourceIPs": ["10.0.0.1"], "objectRef": object_ref,
        "responseStatus": {"code": 200}, "requestObject": req, "responseObject": resp,
        "requestReceivedTimestamp": "2026-11-24T01:00:00.000000Z", "stageTimestamp": "2026-11-24T01:00:00.010000Z"})
}

/// A valid batch whose Secrets, TokenRequests and TokenReviews carry [`PLANT`],
/// with ordinary events around them.
pub fn seed_batch(rng: &mut Rng) -> Value {
    let secret = json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"data\":{{\"k\":\"{PLANT}\"}}}}")}},
        "data": {"k": PLANT}, "stringData": {"p": PLANT}});
    let mut items = vec![
        event(0, "secrets", None, "", secret.clone(), secret.clone()),
        event(
            1,
            "configmaps",
            None,
            "",
            json!({"kind": "ConfigMap", "data": {"a": "b"}}),
            Value::Null,
        ),
        event(
            2,
            "serviceaccounts",
            Some("token"),
            "",
            json!({"kind": "TokenRequest", "spec": {"audiences": ["a"]}}),
            json!({"kind": "TokenRequest", "status": {"token": PLANT}}),
        ),
        event(
            3,
            "tokenreviews",
            None,
            "authentication.k8s.io",
            json!({"kind": "TokenReview", "spec": {"token": PLANT}}),
            json!({"kind": "TokenReview", "spec": {"token": PLANT}, "status": {"authenticated": true}}),
        ),
        event(
            4,
            "secrets",
            None,
            "",
            json!([{"op": "replace", "path": "/data/k", "value": PLANT}]),
            json!({"kind": "SecretList", "items": [secret]}),
        ),
        event(
            5,
            "pods",
            None,
            "",
            json!({"kind": "Pod", "spec": {"containers": [{"name": "c"}]}}),
            Value::Null,
        ),
    ];
    // Vary order and size a little.
    let n = items.len();
    items.rotate_left(rng.below(n));
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
}

/// A random node of `v` (by a random walk), to mutate.
fn random_node<'v>(rng: &mut Rng, v: &'v mut Value) -> &'v mut Value {
    let depth = rng.below(8);
    let mut cur = v;
    for _ in 0..depth {
        let len = match &*cur {
            Value::Object(m) => m.len(),
            Value::Array(a) => a.len(),
            _ => 0,
        };
        if len == 0 {
            break;
        }
        let i = rng.below(len);
        cur = match cur {
            Value::Object(m) => m.values_mut().nth(i).expect("in range"),
            Value::Array(a) => &mut a[i],
            _ => unreachable!("checked above"),
        };
    }
    cur
}

fn other_type(rng: &mut Rng, v: &Value) -> Value {
    let choices = [
        Value::Null,
        json!(true),
        json!(-7),
        json!(1.5e300),
        json!("swapped"),
        json!([1, "a"]),
        json!({"x": 1}),
    ];
    loop {
        let c = choices[rng.below(choices.len())].clone();
        if std::mem::discriminant(&c) != std::mem::discriminant(v) {
            return c;
        }
    }
}

/// One mutated body from a valid batch; `huge` is the least length of the
/// strings [`Mutation::HugeString`] plants (above the per-event limit).
pub fn mutate(rng: &mut Rng, batch: &Value, m: Mutation, huge: usize) -> Vec<u8> {
    let mut v = batch.clone();
    match m {
        Mutation::TypeSwap => {
            let node = random_node(rng, &mut v);
            *node = other_type(rng, node);
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Mutation::DeepNest => {
            let depth = 50 + rng.below(400);
            let node = random_node(rng, &mut v);
            let inner = node.take();
            // Above a planted value only arrays: an object around it would just
            // move it to a field no rule names (data, not damage).
            let arrays_only = inner.to_string().contains(PLANT);
            *node = (0..depth).fold(inner, |acc, i| {
                if arrays_only || i % 2 == 0 {
                    json!([acc])
                } else {
                    json!({"n": acc})
                }
            });
            // Serializing recurses too: keep it below what the stack holds.
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Mutation::HugeString => {
            let node = random_node(rng, &mut v);
            *node = Value::String("H".repeat(huge + rng.below(huge.saturating_mul(3))));
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Mutation::DropField => {
            let node = random_node(rng, &mut v);
            if let Value::Object(map) = node
                && !map.is_empty()
            {
                let k = map.keys().nth(rng.below(map.len())).cloned().unwrap_or_default();
                map.remove(&k);
            }
            serde_json::to_vec(&v).unwrap_or_default()
        }
        Mutation::Truncate => {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            b.truncate(rng.below(b.len()));
            b
        }
        Mutation::InvalidUtf8 => {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            let at = rng.below(b.len());
            let bad: &[u8] = [&[0xff][..], &[0xc3, 0x28], &[0xed, 0xa0, 0x80], &[0x80]][rng.below(4)];
            b.splice(at..at, bad.iter().copied());
            b
        }
        Mutation::DuplicateKey => {
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            let opens: Vec<usize> = b
                .iter()
                .enumerate()
                .filter(|(_, c)| **c == b'{')
                .map(|(i, _)| i)
                .collect();
            let at = opens[rng.below(opens.len())] + 1;
            let keys = [
                "kind",
                "apiVersion",
                "items",
                "auditID",
                "verb",
                "objectRef",
                "data",
                "requestObject",
            ];
            let k = keys[rng.below(keys.len())];
            let val = [
                "\"EventList\"",
                "\"audit.k8s.io/v1\"",
                "[]",
                "\"x\"",
                "7",
                "{}",
                "null",
            ][rng.below(7)];
            let ins = format!("\"{k}\":{val},");
            b.splice(at..at, ins.bytes());
            b
        }
        Mutation::ByteFlip => {
            // Bytes of the structure (not inside strings, where a flip only
            // renames a key or a resource: data, not damage).
            let mut b = serde_json::to_vec(&v).unwrap_or_default();
            let (mut in_str, mut esc) = (false, false);
            let structural: Vec<usize> = b
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let outside = !in_str && *c != b'"';
                    match (in_str, esc, *c) {
                        (true, true, _) => esc = false,
                        (true, false, b'\\') => esc = true,
                        (_, false, b'"') => in_str = !in_str,
                        _ => {}
                    }
                    outside.then_some(i)
                })
                .collect();
            for _ in 0..1 + rng.below(4) {
                let at = structural[rng.below(structural.len())];
                b[at] = rng.next_u64() as u8;
            }
            b
        }
    }
}

/// Whether `body` is an `audit.k8s.io/v1` `EventList` (a JSON object with
/// `kind` and `apiVersion` once each and right, and `items` absent or an
/// array), decided independently of the webhook's parser. `None` when the
/// reference parser cannot decide (nesting deeper than it goes).
pub fn is_event_list(body: &[u8]) -> Option<bool> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
    // The top level's keys, to see duplicates a map-building parser hides.
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = a.next_key::<String>()? {
                        a.next_value::<IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) if e.to_string().contains("recursion limit") => return None,
        Err(_) => return Some(false),
    };
    let Value::Object(map) = &v else {
        return Some(false);
    };
    let keys = serde_json::from_slice::<Keys>(body).ok()?.0;
    for k in ["kind", "apiVersion", "items"] {
        if keys.iter().filter(|x| *x == k).count() > 1 {
            return Some(false);
        }
    }
    Some(
        map.get("kind") == Some(&json!("EventList"))
            && map.get("apiVersion") == Some(&json!(crate::audit::API_VERSION))
            && matches!(map.get("items"), None | Some(Value::Array(_))),
    )
}

/// Whether the mutation made a planted value impossible to recognise: an item
/// that carries it no longer names a sensitive resource, and none of its bodies
/// a sensitive kind (a flipped byte in `"secrets"`, a dropped `objectRef` over
/// a JSON patch). Such a value is just data; every other one must be redacted.
fn unattributable(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(items) = v.get("items").and_then(Value::as_array) else {
        return false;
    };
    items.iter().any(|it| {
        if !it.to_string().contains(PLANT) {
            return false;
        }
        let o = it.get("objectRef");
        let s = |k: &str| o.and_then(|o| o.get(k)).and_then(Value::as_str).unwrap_or("");
        let resource = match s("subresource") {
            "" => s("resource").to_string(),
            sub => format!("{}/{sub}", s("resource")),
        };
        let by_ref =
            !crate::redact::fields_for(crate::redact::builtin(), s("apiGroup"), &resource).is_empty();
        // Either body naming a sensitive kind marks both (as the trace builder does).
        let by_kind = ["requestObject", "responseObject"].iter().any(|b| {
            it.get(*b)
                .is_some_and(|v| !crate::redact::fields_by_kind(&v.to_string()).is_empty())
        });
        !(by_ref || by_kind)
    })
}

/// What one case showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

/// Runs one body through the webhook's parse and encode, and checks the
/// property; `Err` says how it failed.
pub fn check(body: &[u8], max_event_bytes: usize) -> Result<Outcome, String> {
    let received = jiff::Timestamp::from_second(1_795_482_000).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let result = std::panic::catch_unwind(|| {
        super::encode(
            body,
            "fuzz",
            crate::trace::Source::Webhook,
            received,
            1,
            max_event_bytes,
        )
        .map(|e| e.payload)
    })
    .map_err(|_| "panicked".to_string())?;
    let expected = is_event_list(body);
    match result {
        Ok(payload) => {
            if expected == Some(false) {
                return Err("accepted a body that is not an EventList".into());
            }
            if memchr::memmem::find(&payload, PLANT.as_bytes()).is_some() && !unattributable(body) {
                let at = memchr::memmem::find(&payload, PLANT.as_bytes()).unwrap_or(0);
                return Err(format!(
                    "a planted secret reached the spool payload: …{}",
                    String::from_utf8_lossy(&payload[at.saturating_sub(400)..at + PLANT.len()])
                ));
            }
            Ok(Outcome::Accepted)
        }
        Err(e) => {
            if expected == Some(true) {
                return Err(format!("refused an EventList: {e}"));
            }
            Ok(Outcome::Refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_is_accepted_and_redacted() {
        let mut rng = Rng::new(7);
        let seed = serde_json::to_vec(&seed_batch(&mut rng)).unwrap();
        assert!(memchr::memmem::find(&seed, PLANT.as_bytes()).is_some());
        assert_eq!(check(&seed, 1 << 20), Ok(Outcome::Accepted));
        assert_eq!(
            is_event_list(br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","kind":"EventList"}"#),
            Some(false)
        );
        assert_eq!(is_event_list(b"[]"), Some(false));
    }

    /// The property over a short sweep of every mutation (the long run is
    /// `kubetrail bench --fuzz-cases`).
    #[test]
    fn mutated_batches_never_panic_leak_or_get_the_wrong_answer() {
        let mut rng = Rng::new(0x5eed);
        let mut seen = std::collections::HashMap::new();
        for case in 0..3000 {
            let seed = seed_batch(&mut rng);
            let m = MUTATIONS[case % MUTATIONS.len()];
            let body = mutate(&mut rng, &seed, m, 64 * 1024);
            match check(&body, 32 * 1024) {
                Ok(o) => *seen.entry((m, o == Outcome::Accepted)).or_insert(0) += 1,
                Err(e) => panic!(
                    "case {case} ({m:?}): {e}\n{}",
                    String::from_utf8_lossy(&body[..body.len().min(2000)])
                ),
            }
        }
        // The sweep reached both answers.
        assert!(
            seen.keys().any(|(_, ok)| *ok) && seen.keys().any(|(_, ok)| !*ok),
            "{seen:?}"
        );
    }
}
