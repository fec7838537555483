//! `migtrace passes` against a real migration: a QEMU 7.2 TCG guest (512 MiB, the writer
//! rewriting 128 MiB at random at 40 MiB/s) migrates over 127.0.0.1 to a fresh destination
//! at max-bandwidth 128 MiB/s. Truth is QEMU's own final `query-migrate`, read over the
//! second QMP socket: passes == dirty-sync-count exactly (a pass per sync, setup and
//! completion syncs included, docs/passes.md); total time within 5 % of `total-time`;
//! bytes within 2 % of `ram.transferred`.
#[path = "passes_support.rs"]
mod support;

use migtrace_e2e::{
    qemu_guest::{GuestOptions, QemuGuest},
    require_root,
};
use support::{migrate_under_passes, Plan};

#[tokio::test]
async fn passes_match_qemus_own_counters() {
    require_root();
    let Some(src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let plan = Plan {
        bandwidth_mib: 128,
        auto_converge: false,
        profile: None,
        cancel_after: None,
    };
    let run = migrate_under_passes(&src, &plan).await;
    let (r, q) = (&run.report, &run.qemu);
    eprintln!("{}", serde_json::to_string_pretty(r).unwrap());
    let s = &r["summary"];
    let ram = q.ram.clone().unwrap();
    assert_eq!(q.status.as_deref(), Some("completed"), "{q:?}");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["partial"], false);
    assert_eq!(s["passes"].as_u64(), Some(ram.dirty_sync_count), "{s}");
    assert_eq!(
        r["passes"].as_array().unwrap().len() as u64,
        ram.dirty_sync_count
    );
    let total = s["total_time_s"].as_f64().unwrap();
    let qemu_total = q.total_time.unwrap() as f64 / 1000.0;
    assert!(
        (total - qemu_total).abs() <= 0.05 * qemu_total,
        "{total} vs {qemu_total}"
    );
    let bytes: u64 = r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes"].as_u64().unwrap())
        .sum();
    let t = ram.transferred as f64;
    assert!((bytes as f64 - t).abs() <= 0.02 * t, "{bytes} vs {t}");
    let pass_time: f64 = r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["duration_s"].as_f64().unwrap())
        .sum();
    let setup = s["setup_time_s"].as_f64().unwrap_or(0.0);
    assert!(
        (pass_time + setup - qemu_total).abs() <= 0.05 * qemu_total,
        "{pass_time} + {setup}"
    );
    assert!(r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["wire_bytes_ebpf"].is_null()));
    let last = r["passes"].as_array().unwrap().last().unwrap();
    assert_eq!(last["stop_copy"], true);
    assert!(s["downtime_s"].as_f64().unwrap() > 0.0);
    assert!(
        s["pass_events"].as_u64().unwrap() >= 2,
        "events were enabled: {s}"
    );
}
