//! The query engine's tests.

use super::overview::*;
use super::scan::*;
use super::*;

/// Every field a query can read.
const QUERY_FIELDS: Fields = Fields::of(&[
    Field::TraceId,
    Field::TraceName,
    Field::TraceRating,
    Field::ServiceType,
    Field::ResourceType,
    Field::ResourceName,
    Field::Namespace,
    Field::User,
    Field::SourceIps,
    Field::Time,
    Field::Code,
]);

fn all_lines(key: &str, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = Lines::new(key, bytes).unwrap();
    let mut out = Vec::new();
    while let Some(l) = lines.next_line().unwrap() {
        out.push(l.to_vec());
    }
    out
}

#[test]
fn lines_span_members_frames_and_long_lines() {
    use std::io::Write;
    // A line longer than the 1 MiB block, and a last line without a newline.
    let long = vec![b'x'; 3 << 20];
    let parts: [&[u8]; 3] = [b"a\nb\n", &long, b"\nc"];
    let expect = vec![b"a".to_vec(), b"b".to_vec(), long.clone(), b"c".to_vec()];
    let plain: Vec<u8> = parts.concat();
    assert_eq!(all_lines("f.jsonl", &plain), expect);
    // Each part its own gzip member / zstd frame, as delivery writes them.
    let mut gz = Vec::new();
    let mut zst = Vec::new();
    for part in parts {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(part).unwrap();
        gz.extend(e.finish().unwrap());
        zst.extend(zstd::encode_all(part, 1).unwrap());
    }
    assert_eq!(all_lines("f.jsonl.gz", &gz), expect);
    assert_eq!(all_lines("f.jsonl.zst", &zst), expect);
    // A damaged file is an error, not a silent end.
    let mut lines = Lines::new("f.jsonl.gz", &gz[..gz.len() / 2]).unwrap();
    let mut result = Ok(None);
    for _ in 0..10 {
        result = lines.next_line().map(|l| l.map(<[u8]>::to_vec));
        if !matches!(result, Ok(Some(_))) {
            break;
        }
    }
    assert!(result.is_err(), "a cut gzip file is reported: {result:?}");
}

fn q(from: &str, to: &str) -> Query {
    let (from, to) = (
        crate::trace::parse_time_ms(from).unwrap(),
        crate::trace::parse_time_ms(to).unwrap(),
    );
    Query {
        limit: 10,
        parallelism: 4,
        ..Query::new("p", vec!["c".into()], "t", from, to)
    }
}

#[test]
fn duplicates_are_keyed_by_content_not_by_trace_id() {
    let a = r#"{"trace_id":"same","time":"2026-11-24T01:00:00Z","trace_name":"delete secrets","record_time":"2026-11-24T01:00:00.1Z","tracker":"t"}"#;
    // The same operation stored again by another replica: only record_time differs.
    let a_again = a.replace("01:00:00.1Z", "01:00:07.9Z");
    let b = r#"{"trace_id":"same","time":"2026-11-24T01:00:00Z","trace_name":"get secrets","record_time":"2026-11-24T01:00:00.1Z","tracker":"t"}"#;
    let old = r#"{"trace_id":"same","time":"2026-11-24T01:00:02Z"}"#;
    let body = format!("{a}\n{b}\n{a_again}\n{old}\n{old}\n");
    let scan = scan_file(
        &q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"),
        "x.jsonl",
        body.into_bytes(),
        10,
    );
    let distinct: HashSet<u64> = scan.matched.iter().copied().collect();
    assert_eq!(scan.matched.len(), 5);
    assert_eq!(
        distinct.len(),
        3,
        "two operations sharing an Audit-ID are two; copies are one"
    );
    // Results are keyed by content: the same three.
    let shown: HashSet<u64> = scan.hits.iter().map(|(k, _)| *k).collect();
    assert_eq!(shown.len(), 3);
    // Alike in trace ID, time and length, different in content: two results.
    let c = a.replace("delete", "update");
    let scan = scan_file(
        &q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z"),
        "x.jsonl",
        format!("{a}\n{c}\n").into_bytes(),
        10,
    );
    let shown: HashSet<u64> = scan.hits.iter().map(|(k, _)| *k).collect();
    assert_eq!(shown.len(), 2, "both operations are shown");
}

#[test]
fn prefixes_cover_exactly_the_days_asked() {
    let p = day_prefixes(&q("2026-11-22T23:00:00Z", "2026-11-24T00:00:00Z"));
    assert_eq!(p, ["p/KubeTrail/c/2026/11/22/t/", "p/KubeTrail/c/2026/11/23/t/"]);
    let p = day_prefixes(&q("2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z"));
    assert_eq!(p, ["p/KubeTrail/c/2026/11/24/t/"]);
}

#[test]
fn view_reads_fields_in_any_order_and_stops_early() {
    let v = View::read(br#"{"time":"t","trace_id":"a","namespace":"n"}"#, QUERY_FIELDS).unwrap();
    assert_eq!(
        (v.time.as_ref(), v.trace_id.as_ref(), v.namespace.as_ref()),
        ("t", "a", "n")
    );
    // Once every field was seen, what follows is not even looked at.
    let line = br#"{"trace_id":"a","trace_name":"get pods","trace_rating":"normal","service_type":"core","resource_type":"pods","resource_name":"p","namespace":"n","user":"u","source_ips":[],"code":200,"time":"t","request":{"broken"#;
    assert_eq!(View::read(line, QUERY_FIELDS).unwrap().user, "u");
    assert!(View::read(b"{not json", QUERY_FIELDS).is_none());
    assert!(
        View::read(br#"{"trace_id":"a","#, QUERY_FIELDS).is_none(),
        "a cut line with fields missing is refused"
    );
    // A query that reads only the ID and time stops after those two.
    let line = br#"{"trace_id":"a","user":"u","time":"t","namespace":{"broken"#;
    let v = View::read(line, Fields::of(&[Field::TraceId, Field::Time])).unwrap();
    assert_eq!(
        (v.trace_id.as_ref(), v.user.as_ref()),
        ("a", ""),
        "unneeded fields stay empty"
    );
}

#[test]
fn file_times_come_from_the_name() {
    let k = "p/KubeTrail/c/2026/11/24/t/c_t_20261124T010101Z_w-1_0a1b2c3d-000000000042-00007.jsonl.gz";
    assert_eq!(
        file_time_ms(k),
        crate::trace::parse_time_ms("2026-11-24T01:01:01Z")
    );
    assert_eq!(file_time_ms("p/x.jsonl"), None);
}

#[test]
fn filters_and_scope() {
    let line = r#"{"trace_id":"a","trace_name":"delete secrets","trace_rating":"warning","service_type":"core","resource_type":"secrets","resource_name":"db","namespace":"shop","user":"alice","source_ips":["10.0.0.1"],"time":"2026-11-24T01:00:00Z","request":{"big":[1,2,3]}}"#;
    let v = View::read(line.as_bytes(), QUERY_FIELDS).unwrap();
    let mut query = q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z");
    // The view a query reads (only the fields it needs) decides as the full one does.
    let partial = |query: &Query| View::read(line.as_bytes(), needed_fields(query)).unwrap();
    assert!(matches(&query, &Criteria::from_query(&query.filter), &v));
    let set = |f: &mut QueryFilter, yaml: &str| *f = serde_json::from_str(yaml).unwrap();
    for (yaml, expect) in [
        (r#"{"verbs":["delete"]}"#, true),
        (r#"{"verbs":["get"]}"#, false),
        (r#"{"apiGroups":[""]}"#, true),
        (r#"{"apiGroups":["core"]}"#, true),
        (r#"{"apiGroups":["apps"]}"#, false),
        (r#"{"resources":["secrets"],"resourceNames":["db"]}"#, true),
        (r#"{"resourceNames":["other"]}"#, false),
        (r#"{"users":["ali*"],"ratings":["warning"]}"#, true),
        (r#"{"ratings":["normal"]}"#, false),
        (r#"{"sourceIps":["10.0.0.1"]}"#, true),
        (r#"{"traceIds":["b"]}"#, false),
    ] {
        set(&mut query.filter, yaml);
        let c = Criteria::from_query(&query.filter);
        assert_eq!(matches(&query, &c, &v), expect, "{yaml}");
        assert_eq!(
            matches(&query, &c, &partial(&query)),
            expect,
            "{yaml}, needed fields only"
        );
    }
    query.filter = QueryFilter::default();
    query.namespace_scope = Some("other".into());
    let c = Criteria::from_query(&query.filter);
    assert!(
        !matches(&query, &c, &v),
        "another namespace's trace is out of scope"
    );
    assert!(!matches(&query, &c, &partial(&query)));
    query.namespace_scope = Some("shop".into());
    assert!(matches(&query, &Criteria::from_query(&query.filter), &v));
    assert!(matches(&query, &c, &partial(&query)));
}

/// Trace files in a local directory, named as delivery names them.
async fn files(dir: &std::path::Path, groups: &[&[(&str, &str, &str, i32)]]) -> Store {
    use crate::deliver::batch::{Batch, tracker_suffix};
    use crate::store::key::{FileId, object_key};
    let sink = Store::Dir(dir.to_path_buf());
    for (n, group) in groups.iter().enumerate() {
        let mut b = Batch::new(crate::api::Compression::Gzip);
        for (id, time, user, code) in group.iter() {
            let rating = match code {
                500.. => "incident",
                400.. => "warning",
                _ => "normal",
            };
            let line = format!(
                r#"{{"trace_id":"{id}","time":"{time}","trace_name":"get pods","trace_rating":"{rating}","resource_type":"pods","user":"{user}","code":{code},"namespace":"n"}}"#
            );
            b.push(line.as_bytes(), &tracker_suffix("t")).unwrap();
        }
        let key = object_key(&FileId {
            prefix: "p",
            cluster: "c",
            tracker: "t",
            writer: "w",
            epoch: "00000000",
            start_seq: n as u64,
            start_idx: 0,
            earliest_ms: crate::trace::parse_time_ms(group[0].1).unwrap(),
            compression: crate::api::Compression::Gzip,
        });
        sink.put(&key, b.finish().unwrap(), crate::api::Compression::Gzip)
            .await
            .unwrap();
    }
    sink
}

#[tokio::test]
async fn pages_follow_the_cursor_and_skip_the_files_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let sink = files(
        dir.path(),
        &[
            &[
                ("a", "2026-11-24T01:00:00Z", "u", 200),
                ("b", "2026-11-24T01:10:00Z", "u", 200),
            ],
            &[
                ("c", "2026-11-24T02:00:00Z", "u", 200),
                ("d", "2026-11-24T02:00:00Z", "u", 200),
            ],
            &[
                ("e", "2026-11-24T03:00:00Z", "u", 200),
                ("f", "2026-11-24T03:30:00Z", "u", 200),
            ],
        ],
    )
    .await;
    let mut query = q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z");
    query.limit = 2;
    let mut seen = Vec::new();
    let mut read = Vec::new();
    loop {
        let out = run(&sink, &query, 31).await.unwrap();
        read.push(out.scanned_objects);
        seen.extend(out.hits.iter().map(|h| h.trace_id.clone()));
        match out.hits.last() {
            Some(h) if out.matched > out.hits.len() as u64 => {
                query.cursor = Some((h.time_ms, h.trace_id.clone()));
            }
            _ => break,
        }
    }
    // Two traces at the same millisecond are split by ID, never lost or repeated.
    assert_eq!(seen, ["f", "e", "d", "c", "b", "a"]);
    assert_eq!(
        read,
        [3, 3, 2],
        "a page reads no file that starts after its cursor"
    );
    query.order = Order::OldestFirst;
    query.cursor = Some((
        crate::trace::parse_time_ms("2026-11-24T02:00:00Z").unwrap(),
        "c".into(),
    ));
    let out = run(&sink, &query, 31).await.unwrap();
    let ids: Vec<_> = out.hits.iter().map(|h| h.trace_id.as_str()).collect();
    assert_eq!(ids, ["d", "e"], "oldest first continues after the cursor");
}

#[tokio::test]
async fn a_file_written_long_before_the_range_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let sink = files(dir.path(), &[&[("a", "2026-11-24T01:00:00Z", "u", 200)]]).await;
    let key = sink.list("p/").await.unwrap().remove(0).key;
    let set_written = |at: &str| {
        let ms = crate::trace::parse_time_ms(at).unwrap() as u64;
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join(&key))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
            .unwrap();
    };
    let later = q("2026-11-24T05:00:00Z", "2026-11-24T06:00:00Z");
    set_written("2026-11-24T01:00:30Z");
    assert_eq!(run(&sink, &later, 31).await.unwrap().scanned_objects, 0);
    // Within the clock slack it is still read (the store's clock may lag).
    set_written("2026-11-24T04:30:00Z");
    assert_eq!(run(&sink, &later, 31).await.unwrap().scanned_objects, 1);
    let whole = q("2026-11-24T00:00:00Z", "2026-11-24T06:00:00Z");
    assert_eq!(run(&sink, &whole, 31).await.unwrap().hits.len(), 1);
}

#[tokio::test]
async fn newest_first_stops_when_no_file_left_can_hold_a_newer_trace() {
    let dir = tempfile::tempdir().unwrap();
    let sink = files(
        dir.path(),
        &[
            &[("a", "2026-11-24T01:00:00Z", "u", 200)],
            &[("b", "2026-11-24T05:00:00Z", "u", 200)],
            &[("c", "2026-11-24T09:00:00Z", "u", 200)],
        ],
    )
    .await;
    // Each file written 30 s after its trace, as delivery would.
    for o in sink.list("p/").await.unwrap() {
        let ms = file_time_ms(&o.key).unwrap() as u64 + 30_000;
        let f = std::fs::File::options()
            .write(true)
            .open(dir.path().join(&o.key))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
            .unwrap();
    }
    let mut query = q("2026-11-24T00:00:00Z", "2026-11-25T00:00:00Z");
    query.limit = 1;
    let full = run(&sink, &query, 31).await.unwrap();
    assert_eq!(
        (full.scanned_objects, full.matched),
        (3, 3),
        "exact counts by default"
    );
    query.stop_early = true;
    let out = run(&sink, &query, 31).await.unwrap();
    assert_eq!(out.hits[0].trace_id, "c");
    assert_eq!(
        out.scanned_objects, 1,
        "the older files cannot hold anything newer"
    );
    assert!(out.truncated, "more may exist: a page shows a next link");
    // A file rewritten late (a replay) may hold anything: it is read.
    let a = sink
        .list("p/")
        .await
        .unwrap()
        .into_iter()
        .find(|o| o.key.contains("T010000Z"))
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(dir.path().join(&a.key))
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    assert_eq!(run(&sink, &query, 31).await.unwrap().scanned_objects, 3);
}

#[tokio::test]
async fn the_overview_counts_every_match_by_bucket_rating_and_user() {
    let dir = tempfile::tempdir().unwrap();
    let sink = files(
        dir.path(),
        &[
            &[
                ("a", "2026-11-24T01:05:00Z", "ann", 200),
                ("b", "2026-11-24T01:55:00Z", "bob", 403),
            ],
            &[
                ("c", "2026-11-24T02:15:00Z", "ann", 500),
                ("d", "2026-11-24T02:20:00Z", "ann", 200),
            ],
            // The same trace delivered twice (a retry) counts once.
            &[("d", "2026-11-24T02:20:00Z", "ann", 200)],
        ],
    )
    .await;
    let query = q("2026-11-24T01:30:00Z", "2026-11-24T03:00:00Z");
    let o = overview(&sink, &query, 31, 3_600_000, 10).await.unwrap();
    assert_eq!(
        o.from_ms,
        crate::trace::parse_time_ms("2026-11-24T01:00:00Z").unwrap(),
        "whole hours"
    );
    assert_eq!(
        o.buckets,
        vec![[0, 1, 0], [1, 0, 1]],
        "a (01:05) is before the range"
    );
    assert_eq!(o.total, 3);
    assert_eq!(o.top_users, vec![("ann".to_string(), 2), ("bob".to_string(), 1)]);
    assert_eq!(o.top_denied, vec![("get pods".to_string(), 1)]);
}
