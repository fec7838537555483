//! `migtrace passes` against a real migration: a QEMU 7.2 TCG guest (512 MiB, the writer
//! rewriting 128 MiB at random at 40 MiB/s) migrates over 127.0.0.1 to a fresh destination
//! at max-bandwidth 128 MiB/s. Truth is QEMU's own final `query-migrate`, read over the
//! second QMP socket: passes == dirty-sync-count exactly (a pass per sync, setup and
//! completion syncs included, docs/passes.md); total time within 5 % of `total-time`;
//! bytes within 2 % of `ram.transferred`, and the eBPF send bytes of the migration threads
//! within 3 % of it.
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
        stop_copy_rate: None,
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
    // The migration threads' sends, counted by the eBPF send path per pass, add up to what
    // QEMU says it transferred (within 3 %: TCP payload against QEMU's stream bytes).
    let wire: u64 = r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["wire_bytes_ebpf"]
                .as_u64()
                .expect("eBPF send bytes per pass")
        })
        .sum();
    eprintln!("eBPF send bytes of the migration threads: {wire}, QEMU transferred {t}");
    assert!((wire as f64 - t).abs() <= 0.03 * t, "{wire} vs {t}");
    let last = r["passes"].as_array().unwrap().last().unwrap();
    assert_eq!(last["stop_copy"], true);
    assert!(s["downtime_s"].as_f64().unwrap() > 0.0);
    assert!(
        s["pass_events"].as_u64().unwrap() >= 2,
        "events were enabled: {s}"
    );
}

/// `passes` with `args`, stdout and stderr piped.
fn spawn_passes(g: &QemuGuest, args: &[&str]) -> std::process::Child {
    std::process::Command::new(migtrace_e2e::bin())
        .arg("passes")
        .arg("--qmp")
        .arg(&g.qmp_socket)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start migtrace passes")
}

/// A migration that does not end (16 MiB/s): SIGINT still gives the whole report, marked
/// partial; a second `passes` attached mid-migration reports what it saw when QEMU is
/// killed under it.
#[tokio::test]
async fn a_signal_or_a_dead_qemu_still_gives_a_partial_report() {
    use migtrace::qemu::qmp::{MigrateParameters, Qmp};
    use std::time::Duration;
    require_root();
    let Some(mut src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let mut ctl = Qmp::connect(&src.control_socket, Duration::from_secs(10))
        .await
        .unwrap();
    let slow = MigrateParameters {
        max_bandwidth: Some(16 * support::MIB),
        downtime_limit: Some(300),
        ..MigrateParameters::default()
    };
    ctl.migrate_set_parameters(&slow).await.unwrap();
    let (_dst, uri) = src.boot_destination();
    let a = spawn_passes(&src, &[]);
    loop {
        let caps = ctl.query_migrate_capabilities().await.unwrap();
        if caps.iter().any(|c| c.capability == "events" && c.state) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctl.migrate(&uri).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    migtrace_e2e::signal(a.id(), libc::SIGINT);
    let out = a.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("PARTIAL") && text.contains("ended by: SIGINT"),
        "{text}"
    );
    assert!(
        text.contains("not measured"),
        "the eBPF wire bytes are not faked"
    );

    let b = spawn_passes(&src, &["--json"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    src.kill();
    let out = b.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["summary"];
    eprintln!("{s}");
    assert_eq!(s["partial"], true);
    assert_eq!(s["status"], "active");
    assert!(s["ended_by"]["qemu-gone"].is_string(), "{s}");
    assert!(s["passes"].as_u64().unwrap() >= 1 && s["bytes"].as_u64().unwrap() > 0);
}
