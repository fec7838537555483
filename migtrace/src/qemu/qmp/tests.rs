//! The reply types against replies captured from QEMU 7.2.22 (Debian 12). The client
//! itself is tested against a live QEMU in `tests/qemu.rs`.
use super::*;

fn ret<T: DeserializeOwned>(reply: &str) -> T {
    let v: Value = serde_json::from_str(reply).unwrap();
    serde_json::from_value(v["return"].clone()).unwrap()
}

#[test]
fn status_memdev_and_summary() {
    let s: StatusInfo =
        ret(r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#);
    assert_eq!((s.status.as_str(), s.running), ("running", true));
    let m: Vec<Memdev> = ret(
        r#"{"return": [{"share": false, "reserve": true, "prealloc": false, "host-nodes": [], "size": 536870912, "merge": true, "dump": true, "policy": "default", "id": "pc.ram"}]}"#,
    );
    assert_eq!(m[0].id.as_deref(), Some("pc.ram"));
    assert_eq!((m[0].size, m[0].share), (512 << 20, false));
    let sum: MemorySizeSummary =
        ret(r#"{"return": {"base-memory": 536870912, "plugged-memory": 0}}"#);
    assert_eq!(sum.base_memory, 512 << 20);
}

#[test]
fn cpus_fast_has_thread_ids() {
    let c: Vec<CpuInfoFast> = ret(
        r#"{"return": [{"thread-id": 30791, "props": {"core-id": 0, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[0]", "cpu-index": 0, "target": "x86_64"}, {"thread-id": 30792, "props": {"core-id": 1, "thread-id": 0, "socket-id": 0}, "qom-path": "/machine/unattached/device[2]", "cpu-index": 1, "target": "x86_64"}]}"#,
    );
    assert_eq!(
        c.iter()
            .map(|c| (c.cpu_index, c.thread_id))
            .collect::<Vec<_>>(),
        vec![(0, 30791), (1, 30792)]
    );
}

#[test]
fn dirty_rate_before_and_after() {
    let before: DirtyRateInfo = ret(
        r#"{"return": {"status": "unstarted", "sample-pages": 0, "mode": "page-sampling", "start-time": 0, "calc-time": 0}}"#,
    );
    assert_eq!(
        (before.status.as_str(), before.dirty_rate),
        ("unstarted", None)
    );
    let after: DirtyRateInfo = ret(
        r#"{"return": {"status": "measured", "sample-pages": 512, "dirty-rate": 38, "mode": "page-sampling", "start-time": 1434, "calc-time": 1}}"#,
    );
    assert_eq!(after.dirty_rate, Some(38));
    assert_eq!(after.calc_time, 1);
}

#[test]
fn migrate_info_empty_and_completed() {
    let none: MigrationInfo = ret(r#"{"return": {}}"#);
    assert_eq!(none.status, None);
    let done: MigrationInfo = ret(
        r#"{"return": {"expected-downtime": 300, "status": "completed", "setup-time": 3, "total-time": 8412, "downtime": 9,
            "ram": {"total": 554123264, "postcopy-requests": 0, "dirty-sync-count": 11, "multifd-bytes": 0,
            "pages-per-second": 15000, "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 0,
            "mbps": 67.2, "transferred": 581959680, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 581959680,
            "duplicate": 80000, "dirty-pages-rate": 9000, "skipped": 0, "normal-bytes": 570000000, "normal": 139160}}}"#,
    );
    let ram = done.ram.unwrap();
    assert_eq!(done.status.as_deref(), Some("completed"));
    assert_eq!((ram.dirty_sync_count, ram.remaining), (11, 0));
    assert_eq!(done.downtime, Some(9));
}

#[test]
fn parameters_send_only_what_is_set() {
    let p = MigrateParameters {
        max_bandwidth: Some(64 << 20),
        downtime_limit: Some(300),
        ..MigrateParameters::default()
    };
    assert_eq!(
        serde_json::to_value(&p).unwrap(),
        json!({"max-bandwidth": 67108864, "downtime-limit": 300})
    );
}

#[test]
fn events_parse() {
    let e: QmpEvent = serde_json::from_str(
        r#"{"timestamp": {"seconds": 1764093000, "microseconds": 1}, "event": "MIGRATION", "data": {"status": "active"}}"#,
    )
    .unwrap();
    assert_eq!(e.event, "MIGRATION");
    assert_eq!(e.data["status"], "active");
}

#[test]
fn error_replies_read_well() {
    let e = QmpError {
        command: "calc-dirty-rate".into(),
        class: "GenericError".into(),
        desc: "the dirty rate is already being measured.".into(),
    };
    assert_eq!(
        e.to_string(),
        "QEMU refused calc-dirty-rate: the dirty rate is already being measured. (GenericError)"
    );
}

/// A peer that greets as QEMU 7.2 does, answers `qmp_capabilities`, then misbehaves in
/// `hostile` on the next command it reads (its request line is passed in).
async fn hostile_peer<F, Fut>(tag: &str, hostile: F) -> std::path::PathBuf
where
    F: FnOnce(tokio::net::UnixStream, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = std::env::temp_dir().join(format!("migtrace-qmp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("qmp.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(br#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#).await.unwrap();
        s.write_all(b"\n").await.unwrap();
        let mut r = BufReader::new(&mut s);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        s.write_all(b"{\"return\": {}, \"id\": 1}\n").await.unwrap();
        let mut r = BufReader::new(&mut s);
        line.clear();
        r.read_line(&mut line).await.unwrap();
        hostile(s, line).await;
    });
    path
}

/// Issue 17: a peer that sends an event every 100 ms and never answers. Each line used to
/// restart the timeout, so the call never ended; now the call's timeout is one deadline.
#[tokio::test]
async fn events_without_a_reply_do_not_extend_the_timeout() {
    use tokio::io::AsyncWriteExt;
    let path = hostile_peer("events", |mut s, _| async move {
        loop {
            let ev = b"{\"event\": \"MIGRATION_PASS\", \"data\": {\"pass\": 1}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n";
            if s.write_all(ev).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut q = Qmp::connect(&path, Duration::from_secs(1)).await.unwrap();
    let t = std::time::Instant::now();
    let e = q.query_migrate().await.unwrap_err();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}: {e:#}");
    assert!(format!("{e:#}").contains("did not answer"), "{e:#}");
    assert!(!q.take_events().is_empty());
}

/// Issue 17: a peer that streams bytes with no newline (it took `passes` to 2 GB), and one
/// that sends a reply line of 200 MB: reading stops at [`MAX_LINE`] and says so.
#[tokio::test]
async fn a_line_longer_than_the_limit_ends_the_call() {
    use tokio::io::AsyncWriteExt;
    let path = hostile_peer("long", |mut s, _| async move {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..64 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;
    let mut q = Qmp::connect(&path, Duration::from_secs(10)).await.unwrap();
    let e = format!("{:#}", q.query_migrate().await.unwrap_err());
    assert!(e.contains("longer than 1 MiB"), "{e}");
    assert!(
        e.len() < 1000,
        "the error echoes the line: {} bytes",
        e.len()
    );
}

/// A reply that is not JSON is echoed cut short, not whole.
#[tokio::test]
async fn a_bad_reply_is_echoed_cut_short() {
    use tokio::io::AsyncWriteExt;
    let path = hostile_peer("bad", |mut s, _| async move {
        let mut line = vec![b'y'; 100_000];
        line.push(b'\n');
        let _ = s.write_all(&line).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut q = Qmp::connect(&path, Duration::from_secs(10)).await.unwrap();
    let e = format!("{:#}", q.query_migrate().await.unwrap_err());
    assert!(e.contains("not JSON"), "{e}");
    assert!(e.len() < 1000, "{} bytes", e.len());
}

/// A peer that floods events, some of them long, before it answers: the queue keeps at most
/// [`MAX_EVENTS`] lines of at most [`MAX_EVENT_LINE`] bytes, and counts what it dropped.
#[tokio::test]
async fn a_flood_of_events_is_bounded_and_counted() {
    use tokio::io::AsyncWriteExt;
    let path = hostile_peer("flood", |mut s, req| async move {
        let id: Value = serde_json::from_str(&req).unwrap();
        let small = b"{\"event\": \"MIGRATION_PASS\", \"data\": {\"pass\": 1}}\n".to_vec();
        let mut long = b"{\"event\": \"X\", \"data\": {\"pad\": \"".to_vec();
        long.extend(vec![b'p'; MAX_EVENT_LINE]);
        long.extend(b"\"}}\n");
        for i in 0..1000 {
            let line = if i % 10 == 0 { &long } else { &small };
            if s.write_all(line).await.is_err() {
                return;
            }
        }
        let reply = format!(
            "{{\"return\": {{\"status\": \"none\"}}, \"id\": {}}}\n",
            id["id"]
        );
        let _ = s.write_all(reply.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    })
    .await;
    let mut q = Qmp::connect(&path, Duration::from_secs(10)).await.unwrap();
    q.query_migrate().await.unwrap();
    // 100 long ones dropped at once, then 900 small ones of which the oldest 644 go.
    assert_eq!(q.events_dropped(), 100 + (900 - MAX_EVENTS as u64));
    assert_eq!(q.take_events().len(), MAX_EVENTS);
}

/// Issue 17: a `calc-dirty-rate` result below 0 or beyond any host's memory bandwidth was
/// shown as QEMU's figure; now the measurement fails with the value named, and the watch
/// summary says "no measurement" (not "-0 B/s, mean of 0 measurements") when none was taken.
#[tokio::test]
async fn an_impossible_dirty_rate_is_refused() {
    for (tag, rate) in [("negative", -5i64), ("huge", i64::MAX)] {
        let path = hostile_peer(tag, move |mut s, first| async move {
            use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
            let id = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].clone();
            let ok = format!("{{\"return\": {{}}, \"id\": {}}}\n", id(&first));
            s.write_all(ok.as_bytes()).await.unwrap();
            let mut r = BufReader::new(&mut s);
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            let reply = serde_json::json!({"return": {"status": "measured", "dirty-rate": rate, "calc-time": 1, "sample-pages": 512, "start-time": 1}, "id": id(&line)});
            s.write_all(format!("{reply}\n").as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        })
        .await;
        let mut q = Qmp::connect(&path, Duration::from_secs(5)).await.unwrap();
        let e = q
            .measure_dirty_rate(Duration::from_secs(1), None)
            .await
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains(&rate.to_string()) && e.contains("not taken"),
            "{e}"
        );
    }
}
