//! The verifier's tests: key names, and whole chains in a directory store.

mod names {
    use super::super::*;

    #[test]
    fn names_and_counts() {
        assert_eq!(
            writer_of(
                "p/KubeTrail/c/2026/11/24/t/c_t_20261124T010101Z_kubetrail-0_0a1b-000000000042-00007.jsonl.gz",
                "c",
                "t"
            )
            .as_deref(),
            Some("kubetrail-0")
        );
        assert_eq!(writer_of("p/x.jsonl.gz", "c", "t"), None);
        assert_eq!(
            previous_period_start("p/KubeTrail-Digest/c/2026/11/24/t/c_t_20261124T010000Z_w_digest.json"),
            "2026-11-24T01:00:00Z"
        );
        assert_eq!(grouped(2304), "2,304");
        assert_eq!(grouped(168), "168");
        assert_eq!(grouped(1_000_000), "1,000,000");
    }
}

mod chain_tests {
    //! Chains written into a real directory store, then verified as an
    //! auditor would: with and without published heads, with key windows.
    use super::super::*;
    use crate::integrity::{ChainHead, Digest, DigestFile, Previous, Signer, head_of};
    use std::time::Duration;

    const MIN: i64 = 60_000;

    struct Trail {
        _dir: tempfile::TempDir,
        store: Store,
        signer: Signer,
        heads: Vec<ChainHead>,
        digests: Vec<String>,
    }

    fn file_key(writer: &str, ms: i64, n: u32) -> String {
        let t = jiff::Timestamp::from_millisecond(ms)
            .unwrap()
            .strftime("%Y%m%dT%H%M%SZ");
        format!(
            "{}c_t_{t}_{writer}_0a1b-{n:012}-00000.jsonl.gz",
            crate::store::Trail::new(Store::Dir(".".into()), "p", "c", "t").day(Area::Traces, ms)
        )
    }

    fn write(store: &Store, key: &str, body: &[u8]) {
        let Store::Dir(root) = store else { unreachable!() };
        let path = root.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }

    /// `n` one-minute digests of `writer`, the last ending at `end_ms`, each
    /// listing one file.
    fn trail(n: i64, end_ms: i64) -> Trail {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Dir(dir.path().to_path_buf());
        let signer = Signer::from_bytes(&[3u8; 32]).unwrap();
        let mut previous: Option<Previous> = None;
        let mut digests = Vec::new();
        let mut head = None;
        for i in 0..n {
            let start = end_ms - (n - i) * MIN;
            let fk = file_key("w1", start + 1_000, i as u32);
            let body = format!("file {i}").into_bytes();
            write(&store, &fk, &body);
            let d = Digest {
                version: 1,
                cluster: "c".into(),
                tracker: "t".into(),
                writer: "w1".into(),
                period_start: digest::rfc3339(start),
                period_end: digest::rfc3339(start + MIN),
                key_fingerprint: signer.fingerprint().into(),
                previous: previous.clone(),
                files: vec![DigestFile {
                    key: fk,
                    size: body.len() as u64,
                    sha256: digest::sha256_hex(&body),
                    events: 1,
                    earliest: digest::rfc3339(start),
                    latest: digest::rfc3339(start),
                }],
            };
            let key = digest::digest_key("p", "c", "t", "w1", start);
            let (bytes, signed) = signer.sign(&d, &key).unwrap();
            write(&store, &key, &bytes);
            head = Some(head_of(
                "w1",
                &signed,
                signer.fingerprint(),
                start + MIN,
                Duration::from_secs(60),
            ));
            previous = Some(signed);
            digests.push(key);
        }
        Trail {
            _dir: dir,
            store,
            signer,
            heads: head.into_iter().collect(),
            digests,
        }
    }

    fn request(t: &Trail, now_ms: i64, heads: Option<Vec<ChainHead>>) -> Request {
        Request {
            trail: crate::store::Trail::new(t.store.clone(), "p", "c", "t"),
            from_ms: now_ms - 60 * MIN,
            to_ms: now_ms,
            keys: vec![PublicKey::parse(&t.signer.public_key_b64()).unwrap()],
            oldest_kept_ms: None,
            now_ms,
            parallelism: 4,
            known: None,
            skew_ms: 2_000,
            heads,
            known_writers: Vec::new(),
            period_ms: Some(MIN),
        }
    }

    fn now() -> i64 {
        // Mid-day, so a trail of a few minutes stays within one UTC day.
        let t = jiff::Timestamp::now().as_millisecond();
        t - t.rem_euclid(DAY_MS) + DAY_MS / 2
    }

    fn states(r: &Report) -> Vec<(DigestState, String)> {
        r.digests
            .iter()
            .filter(|d| d.state != DigestState::Valid)
            .map(|d| (d.state, d.key.clone()))
            .collect()
    }

    #[tokio::test]
    async fn a_chain_that_reaches_its_head_verifies() {
        let now = now();
        let t = trail(4, now - MIN);
        let r = verify(&request(&t, now, Some(t.heads.clone()))).await.unwrap();
        assert!(r.ok(), "{r:#?}");
        assert_eq!(r.summary().digests_valid, 4);
    }

    #[tokio::test]
    async fn a_deleted_tail_is_truncated_even_when_the_range_ends_before_it() {
        let now = now();
        let t = trail(4, now - MIN);
        let last = t.digests.last().unwrap().clone();
        let Store::Dir(root) = &t.store else {
            unreachable!()
        };
        let listed = digest::decode(&std::fs::read(root.join(&last)).unwrap()).unwrap();
        std::fs::remove_file(root.join(&listed.digest.files[0].key)).unwrap();
        std::fs::remove_file(root.join(&last)).unwrap();
        // Without the head the deletion is invisible: what the head is for.
        let r = verify(&request(&t, now, None)).await.unwrap();
        assert!(r.ok(), "{r:#?}");
        let r = verify(&request(&t, now, Some(t.heads.clone()))).await.unwrap();
        assert_eq!(states(&r), vec![(DigestState::Truncated, last.clone())]);
        assert_eq!(r.first_problem().unwrap().reason, Reason::ChainTruncated);
        let mut early = request(&t, now, Some(t.heads.clone()));
        early.to_ms = now - 3 * MIN;
        let r = verify(&early).await.unwrap();
        assert_eq!(states(&r), vec![(DigestState::Truncated, last)]);
    }

    #[tokio::test]
    async fn a_replaced_head_and_a_broken_link_to_it_are_truncated() {
        let now = now();
        let t = trail(5, now - MIN);
        // The head as published names another signature: a replaced tail.
        let mut heads = t.heads.clone();
        heads[0].signature = "AAAA".into();
        let r = verify(&request(&t, now, Some(heads))).await.unwrap();
        assert!(
            states(&r).contains(&(DigestState::Truncated, t.digests[4].clone())),
            "{r:#?}"
        );
        // The range ends early; a digest between it and the head is deleted.
        let Store::Dir(root) = &t.store else {
            unreachable!()
        };
        std::fs::remove_file(root.join(&t.digests[3])).unwrap();
        let mut early = request(&t, now, Some(t.heads.clone()));
        early.to_ms = now - 4 * MIN - MIN / 2;
        let r = verify(&early).await.unwrap();
        assert!(
            r.digests.iter().any(|d| d.state == DigestState::Truncated
                && d.reason.as_deref().unwrap_or_default().contains(&t.digests[3])),
            "{r:#?}"
        );
    }

    #[tokio::test]
    async fn a_running_writer_whose_chain_stopped_is_truncated() {
        let now = now();
        let t = trail(3, now - 10 * MIN);
        let mut heads = t.heads.clone();
        let r = verify(&request(&t, now, Some(heads.clone()))).await.unwrap();
        assert!(r.ok(), "a stopped writer's old head is fine: {r:#?}");
        heads[0].running = true;
        let r = verify(&request(&t, now, Some(heads.clone()))).await.unwrap();
        assert_eq!(states(&r), vec![(DigestState::Truncated, t.digests[2].clone())]);
        // Two periods old at most is fine.
        let r = verify(&request(&t, now - 8 * MIN - 30_000, Some(heads)))
            .await
            .unwrap();
        assert!(r.ok(), "{r:#?}");
    }

    #[tokio::test]
    async fn a_key_outside_its_window_does_not_verify() {
        let now = now();
        let t = trail(4, now - MIN);
        let mut req = request(&t, now, Some(t.heads.clone()));
        let public = PublicKey::parse(&t.signer.public_key_b64()).unwrap();
        // Rotated away before the last two periods ended (beyond the slack).
        req.keys = vec![
            public
                .clone()
                .with_window(Some(now - 60 * MIN), Some(now - 5 * MIN)),
        ];
        let r = verify(&req).await.unwrap();
        let bad: Vec<&DigestReport> = r
            .digests
            .iter()
            .filter(|d| d.state == DigestState::InvalidSignature)
            .collect();
        assert_eq!(bad.len(), 3, "{r:#?}");
        assert!(
            bad[0].reason.as_deref().unwrap().contains("validity window"),
            "{bad:?}"
        );
        // Published after the chain was signed (beyond the slack).
        req.keys = vec![public.with_window(Some(now + 20 * MIN), None)];
        let r = verify(&req).await.unwrap();
        assert_eq!(r.summary().invalid_signature, 4, "{r:#?}");
    }

    fn set_mtime(t: &Trail, key: &str, ms: i64) {
        let Store::Dir(root) = &t.store else {
            unreachable!()
        };
        let f = std::fs::File::options().write(true).open(root.join(key)).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_millis(ms as u64))
            .unwrap();
    }

    #[tokio::test]
    async fn only_a_known_writers_newest_files_are_pending() {
        let now = now();
        let t = trail(3, now - MIN);
        let head_end = now - MIN;
        let fresh = file_key("w1", head_end + 1_000, 90);
        write(&t.store, &fresh, b"fresh");
        set_mtime(&t, &fresh, head_end + 5_000);
        let stale = file_key("w1", head_end + 1_000, 91);
        write(&t.store, &stale, b"stale");
        // Newer than the head by more than a period (plus slack): its digest
        // was due, so nothing will list it.
        set_mtime(&t, &stale, head_end + MIN + 10_000);
        let bob = file_key("bob", head_end + 1_000, 92);
        write(&t.store, &bob, b"bob deleted secrets shop/db");
        set_mtime(&t, &bob, head_end + 5_000);
        for heads in [Some(t.heads.clone()), None] {
            let r = verify(&request(&t, now, heads)).await.unwrap();
            let state = |k: &str| r.files.iter().find(|f| f.key == k).unwrap().state;
            assert_eq!(state(&fresh), FileState::Pending);
            assert_eq!(state(&stale), FileState::Added);
            assert_eq!(
                state(&bob),
                FileState::Added,
                "an unknown writer has nothing pending"
            );
        }
        // A writer the status knows, before its first digest: pending for a
        // period, then added.
        let newcomer = file_key("w2", now - 1_000, 93);
        write(&t.store, &newcomer, b"new");
        set_mtime(&t, &newcomer, now - 30_000);
        let mut req = request(&t, now, Some(t.heads.clone()));
        let state = |r: &Report| r.files.iter().find(|f| f.key == newcomer).unwrap().state;
        let r = verify(&req).await.unwrap();
        assert_eq!(state(&r), FileState::Added);
        req.known_writers = vec!["w2".into()];
        let r = verify(&req).await.unwrap();
        assert_eq!(state(&r), FileState::Pending);
        set_mtime(&t, &newcomer, now - 2 * MIN);
        let r = verify(&req).await.unwrap();
        assert_eq!(state(&r), FileState::Added);
    }

    #[tokio::test]
    async fn a_planted_digest_is_reported_and_never_followed() {
        let now = now();
        let t = trail(3, now - MIN);
        let head = &t.heads[0];
        // A plant named as the head's successor, unsigned, ending in 2099.
        let end = digest::parse_time(&head.period_end).unwrap();
        let next = digest::digest_key("p", "c", "t", "w1", end);
        let plant = format!(
            "{{\"version\":1,\"cluster\":\"c\",\"tracker\":\"t\",\"writer\":\"w1\",\"periodStart\":\"{}\",\"periodEnd\":\"2099-01-01T00:00:00Z\",\"keyFingerprint\":\"{}\",\"previous\":{},\"files\":[],\"signature\":\"AAAA\"}}\n",
            head.period_end,
            t.signer.fingerprint(),
            serde_json::to_string(&crate::integrity::previous_of(head)).unwrap()
        );
        write(&t.store, &next, plant.as_bytes());
        let keys = vec![PublicKey::parse(&t.signer.public_key_b64()).unwrap()];
        let resume = resume_point(
            &crate::store::Trail::new(t.store.clone(), "p", "c", "t"),
            "w1",
            Some(head),
            &keys,
            now,
        )
        .await
        .unwrap();
        assert_eq!(
            resume.from.as_ref().unwrap().0.key,
            head.key,
            "goes on from the head"
        );
        assert_eq!(resume.untrusted.len(), 1, "{resume:?}");
        // Without a published head, the newest digest is the plant: not followed.
        let resume = resume_point(
            &crate::store::Trail::new(t.store.clone(), "p", "c", "t"),
            "w1",
            None,
            &keys,
            now,
        )
        .await
        .unwrap();
        assert!(resume.from.is_none() && resume.untrusted.len() == 1, "{resume:?}");
        let r = verify(&request(&t, now, Some(t.heads.clone()))).await.unwrap();
        assert_eq!(states(&r), vec![(DigestState::InvalidSignature, next)]);
    }

    #[tokio::test]
    async fn a_writer_follows_its_own_signed_successors_past_a_late_head() {
        let now = now();
        let t = trail(4, now - MIN);
        // The head published lags one digest behind the bucket.
        let Some(d) = t.digests.get(2) else { unreachable!() };
        let signed = digest::decode(
            &std::fs::read(match &t.store {
                Store::Dir(root) => root.join(d),
                _ => unreachable!(),
            })
            .unwrap(),
        )
        .unwrap();
        let late = head_of(
            "w1",
            &Previous {
                key: d.clone(),
                sha256: signed.sha256,
                signature: signed.signature,
            },
            t.signer.fingerprint(),
            now - 2 * MIN,
            Duration::from_secs(60),
        );
        let keys = vec![PublicKey::parse(&t.signer.public_key_b64()).unwrap()];
        let resume = resume_point(
            &crate::store::Trail::new(t.store.clone(), "p", "c", "t"),
            "w1",
            Some(&late),
            &keys,
            now,
        )
        .await
        .unwrap();
        let (prev, end) = resume.from.unwrap();
        assert_eq!(prev.key, t.digests[3]);
        assert_eq!(end, now - MIN);
        assert!(resume.untrusted.is_empty());
    }
}
