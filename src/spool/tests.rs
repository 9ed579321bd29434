//! The spool's tests.

use super::*;

fn config(dir: &Path) -> Config {
    Config {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 200,
        fsync: true,
        tracker_budget: 0,
        dedupe_window_ms: 900_000,
        dedupe_max: 1000,
    }
}

fn at(seq: u64) -> TrackerCursor {
    TrackerCursor::at(Position { seq, idx: 0 })
}

fn read_all(spool: &Spool, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = spool.reader(Position { seq: from, idx: 0 });
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        out.push((rec.seq, rec.payload));
    }
    out
}

#[tokio::test]
async fn appends_are_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(dir.path())).unwrap();
    // A tracker at 0 holds every segment: without one, the writer's periodic
    // garbage collection may delete them on a slow disk before they are read.
    assert_eq!(spool.activate("reader").unwrap(), at(0));
    for i in 0..10u8 {
        let seq = spool.append(vec![i; 50], 1, None, 1000 + i as i64).await.unwrap();
        assert_eq!(seq, i as u64);
    }
    assert_eq!(spool.head(), 10);
    assert!(spool.segments() > 2, "segments rolled: {}", spool.segments());
    let all = read_all(&spool, 0);
    assert_eq!(all.len(), 10);
    assert!(
        all.iter()
            .enumerate()
            .all(|(i, (s, p))| *s == i as u64 && p == &vec![i as u8; 50])
    );
    let tail = read_all(&spool, 7);
    assert_eq!(tail.iter().map(|r| r.0).collect::<Vec<_>>(), [7, 8, 9]);
}

#[tokio::test]
async fn reopen_continues_the_sequence_and_repairs_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = Spool::open(Config {
            segment_bytes: 1 << 20,
            ..config(dir.path())
        })
        .unwrap();
        for i in 0..3u8 {
            spool.append(vec![i; 10], 1, None, 0).await.unwrap();
        }
    }
    // A crash mid-write leaves half a record behind.
    let seg = segment_path(dir.path(), 0);
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&MAGIC.to_le_bytes()).unwrap();
    f.write_all(&[1, 2, 3]).unwrap();
    drop(f);
    let spool = Spool::open(config(dir.path())).unwrap();
    assert_eq!(spool.head(), 3);
    assert_eq!(spool.append(vec![9; 10], 1, None, 0).await.unwrap(), 3);
    let all = read_all(&spool, 0);
    assert_eq!(all.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_damaged_record_is_skipped_and_counted_not_a_stall() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        segment_bytes: 1 << 20,
        ..config(dir.path())
    };
    {
        let spool = Spool::open(cfg.clone()).unwrap();
        for i in 0..5u8 {
            spool.append(vec![i; 40], 1, None, 0).await.unwrap();
        }
    }
    // Flip a payload byte of record 2 (bit rot).
    let seg = segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec = HEADER + 40;
    bytes[2 * rec + HEADER + 5] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let spool = Spool::open(cfg).unwrap();
    assert_eq!(spool.head(), 5, "records after the damage are kept");
    let mut r = spool.reader(Position::default());
    let mut seqs = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        seqs.push(rec.seq);
    }
    assert_eq!(seqs, [0, 1, 3, 4]);
    assert_eq!(r.corrupt, 1);
    // A damaged header too: the reader resynchronises on the next record.
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[3 * rec] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let mut r = spool.reader(Position::default());
    let mut seqs = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        seqs.push(rec.seq);
    }
    assert_eq!(seqs, [0, 1, 4]);
    assert_eq!(
        r.corrupt, 1,
        "one damaged stretch (records 2 and 3) skipped at once"
    );
}

#[tokio::test]
async fn full_spool_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(Config {
        max_bytes: 100,
        ..config(dir.path())
    })
    .unwrap();
    spool.append(vec![0; 60], 1, None, 0).await.unwrap();
    let err = spool.append(vec![0; 60], 1, None, 0).await.unwrap_err();
    assert!(matches!(err, AppendError::Full { .. }), "{err}");
    assert_eq!(spool.head(), 1, "nothing written");
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(dir.path())).unwrap();
    let err = Spool::open(config(dir.path())).err().expect("refused");
    assert!(matches!(err, OpenError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("in use by another process"), "{err}");
    drop(spool);
}

#[tokio::test]
async fn an_unreadable_cursor_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cursors.json"), b"\0\0garbage").unwrap();
    let err = Spool::open(config(dir.path())).err().expect("refused");
    assert!(matches!(err, OpenError::Cursor(_)), "{err}");
}

#[tokio::test]
async fn segments_are_deleted_only_after_every_tracker_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(config(dir.path())).unwrap();
    assert_eq!(spool.activate("a").unwrap(), at(0));
    assert_eq!(spool.activate("b").unwrap(), at(0));
    for _ in 0..10 {
        spool.append(vec![0; 50], 1, None, 0).await.unwrap();
    }
    let before = spool.segments();
    spool.commit("a", &at(10)).unwrap();
    assert_eq!(spool.segments(), before, "b still needs them");
    spool.commit("b", &at(6)).unwrap();
    assert!(spool.segments() < before);
    assert_eq!(read_all(&spool, 6).len(), 4, "what b needs is still there");
    spool.deactivate("b").unwrap();
    assert_eq!(spool.segments(), 1, "only the newest segment stays");
    // A file that was in flight when b was disabled does not bring its cursor back.
    spool.commit("b", &at(8)).unwrap();
    assert_eq!(spool.cursor("b"), None);
    // Cursors survive a restart.
    drop(spool);
    let spool = Spool::open(config(dir.path())).unwrap();
    assert_eq!(spool.cursor("a"), Some(at(10)));
    assert_eq!(spool.cursor("b"), None);
    assert_eq!(spool.head(), 10);
}

#[tokio::test]
async fn hashes_of_spooled_and_deleted_segments_are_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now().as_millisecond();
    let payload = |h: u128| {
        let mut p = Vec::new();
        let meta = format!(r#"{{"verb":"get","key":{}}}"#, (h & 0xff) as u64);
        entries::push(&mut p, meta.as_bytes(), b"{}");
        p
    };
    {
        let spool = Spool::open(config(dir.path())).unwrap();
        spool.activate("a").unwrap();
        for n in 1..=6u128 {
            let h = (n << 64) | n;
            spool.append(payload(h), 1, Some(n as u64), now).await.unwrap();
        }
        // Delivered: segments go, their hashes stay in the seen log.
        spool.commit("a", &at(6)).unwrap();
        assert_eq!(spool.segments(), 1);
    }
    let spool = Spool::open(config(dir.path())).unwrap();
    let mut got: Vec<u64> = spool
        .take_recovered_hashes()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    got.sort();
    // Keys of the live segment come from it and from the seen log.
    got.dedup();
    assert_eq!(got, [1, 2, 3, 4, 5, 6]);
    assert!(spool.take_recovered_hashes().is_empty(), "taken once");
}

#[tokio::test]
async fn a_tracker_over_its_budget_drops_its_oldest_and_holds_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of ~2 records (78 bytes each), budget of ~3 segments.
    let spool = Spool::open(Config {
        segment_bytes: 150,
        tracker_budget: 500,
        ..config(dir.path())
    })
    .unwrap();
    spool.activate("healthy").unwrap();
    spool.activate("stuck").unwrap();
    for i in 0..20u64 {
        spool.append(vec![0; 50], 3, None, 0).await.unwrap();
        spool.commit("healthy", &at(i + 1)).unwrap();
    }
    spool.collect_garbage().unwrap();
    let b = spool.backlog("stuck");
    assert!(b.overflowing, "{b:?}");
    let floor = spool.floor("stuck").unwrap();
    assert!(floor.seq > 0, "stuck tracker's cursor moved on: {floor:?}");
    assert_eq!(b.dropped, floor.seq * 3, "every skipped entry counted");
    assert!(
        spool.bytes() <= 500 + 150,
        "the spool is not held: {}",
        spool.bytes()
    );
    assert_eq!(spool.backlog("healthy"), Backlog::default());
    // The stuck tracker cannot move its cursor back behind what was dropped.
    let stored = spool.commit("stuck", &at(0)).unwrap();
    assert_eq!(stored.pos, floor);
    // Caught up: no longer overflowing.
    spool.commit("stuck", &at(20)).unwrap();
    assert!(!spool.backlog("stuck").overflowing);
}

#[test]
fn entries_round_trip() {
    let mut p = Vec::new();
    entries::push(&mut p, b"{\"m\":1}", b"{\"l\":1}");
    entries::push(&mut p, b"", b"x");
    let got: Vec<_> = entries::iter(&p).collect();
    assert_eq!(
        got,
        vec![(&b"{\"m\":1}"[..], &b"{\"l\":1}"[..]), (&b""[..], &b"x"[..])]
    );
    assert_eq!(
        entries::iter(&p[..5]).count(),
        0,
        "a cut payload yields nothing partial"
    );
}
