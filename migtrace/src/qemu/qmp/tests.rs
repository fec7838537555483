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
