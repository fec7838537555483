//! Shared by `tests/passes.rs` and `tests/backtest.rs`: a real migration of a fixture guest
//! to a fresh destination, with `migtrace passes --json` attached to the source's QMP
//! socket while the test drives QEMU through the second one (`control_socket`).
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use migtrace::qemu::qmp::{MigrateParameters, MigrationInfo, Qmp};
use migtrace_e2e::{bin, qemu_guest::QemuGuest};
use serde_json::Value;

pub const MIB: u64 = 1 << 20;

/// What a migration under `passes` gave.
pub struct Run {
    /// `migtrace passes --json`.
    pub report: Value,
    /// QEMU's own `query-migrate` at the end.
    pub qemu: MigrationInfo,
}

/// How to migrate.
pub struct Plan<'a> {
    pub bandwidth_mib: u64,
    pub auto_converge: bool,
    pub profile: Option<&'a Path>,
    /// Cancel after this long (a migration that does not converge).
    pub cancel_after: Option<Duration>,
    /// `passes --stop-copy-rate`: the link QEMU sends the stop-and-copy at, uncapped.
    pub stop_copy_rate: Option<&'a str>,
}

/// Migrates `src` under `migtrace passes`; returns its report and QEMU's final numbers.
pub async fn migrate_under_passes(src: &QemuGuest, plan: &Plan<'_>) -> Run {
    let mut ctl = Qmp::connect(&src.control_socket, Duration::from_secs(10))
        .await
        .expect("control QMP");
    let params = MigrateParameters {
        max_bandwidth: Some(plan.bandwidth_mib * MIB),
        downtime_limit: Some(300),
        ..MigrateParameters::default()
    };
    ctl.migrate_set_parameters(&params).await.unwrap();
    ctl.migrate_set_capabilities(&[("auto-converge", plan.auto_converge)])
        .await
        .unwrap();
    let (_dst, uri) = src.boot_destination();
    let mut cmd = Command::new(bin());
    cmd.args(["passes", "--json", "--timeout", "150s", "--qmp"])
        .arg(&src.qmp_socket)
        .args(["--pid", &src.pid().to_string()]);
    if let Some(p) = plan.profile {
        cmd.arg("--profile").arg(p);
    }
    if let Some(r) = plan.stop_copy_rate {
        cmd.args(["--stop-copy-rate", r]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start migtrace passes");
    // Attached once it has turned the events capability on.
    let t0 = Instant::now();
    loop {
        let caps = ctl.query_migrate_capabilities().await.unwrap();
        if caps.iter().any(|c| c.capability == "events" && c.state) {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "passes exited early");
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "passes did not attach"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctl.migrate(&uri).await.unwrap();
    if let Some(after) = plan.cancel_after {
        tokio::time::sleep(after).await;
        ctl.migrate_cancel().await.unwrap();
    }
    let out = tokio::task::spawn_blocking(move || {
        let mut s = String::new();
        child.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        let mut e = String::new();
        child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
        (s, e, child.wait().unwrap())
    })
    .await
    .unwrap();
    assert!(out.2.success(), "passes: {}: {}", out.2, out.1);
    let report: Value = serde_json::from_str(&out.0)
        .unwrap_or_else(|e| panic!("passes JSON {e}: {}\nstderr {}", out.0, out.1));
    // `passes` gave up (its --timeout) on a migration that goes on: end it, so QEMU's final
    // word is "cancelled" and the report stands as what happened within the bound.
    let st = ctl
        .query_migrate()
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    if !matches!(st.as_str(), "completed" | "cancelled" | "failed" | "none") {
        eprintln!("the migration was still {st} when passes gave up: cancelling it");
        ctl.migrate_cancel().await.unwrap();
    }
    let qemu = final_info(&mut ctl).await;
    Run { report, qemu }
}

/// `query-migrate` once the migration has ended (read again while `total-time` is 0).
async fn final_info(ctl: &mut Qmp) -> MigrationInfo {
    for _ in 0..50 {
        let i = ctl.query_migrate().await.unwrap();
        let st = i.status.as_deref().unwrap_or("none");
        let ended = matches!(st, "completed" | "cancelled" | "failed");
        if ended && (st != "completed" || i.total_time.unwrap_or(0) > 0) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the migration did not end");
}
