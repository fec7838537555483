//! Migrations, for `tests/passes.rs` and `tests/backtest.rs`: a real migration of a fixture guest
//! to a fresh destination, with `migtrace passes --json` attached to the source's QMP
//! socket while the test drives QEMU through the second one (`control_socket`).
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, qemu_guest::QemuGuest};
use migtrace::qemu::qmp::{MigrateParameters, MigrationInfo, MigrationRam, Qmp};
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

impl Plan<'_> {
    /// A plain migration at `bandwidth_mib` MiB/s: no auto-converge (so QEMU never throttles
    /// the guest), no profile, no cancelling, no stop-and-copy rate (tests/passes.rs; not
    /// tests/backtest.rs, whose scenarios set each field).
    pub fn unthrottled(bandwidth_mib: u64) -> Self {
        Plan {
            bandwidth_mib,
            auto_converge: false,
            profile: None,
            cancel_after: None,
            stop_copy_rate: None,
        }
    }
}

/// Migrates `src` under `migtrace passes`; returns its report and QEMU's final numbers.
pub async fn migrate_under_passes(src: &QemuGuest, plan: &Plan<'_>) -> Run {
    attach_passes(src, plan, &[])
        .await
        .migrate()
        .await
        .finish()
        .await
}

/// `migtrace passes` attached to a source whose migration has not started yet.
pub struct Attached {
    child: Child,
    ctl: Qmp,
    dst: QemuGuest,
    uri: String,
    cancel_after: Option<Duration>,
}

/// A migration started under `migtrace passes`, not yet ended.
pub struct Started {
    child: Child,
    ctl: Qmp,
    /// The destination lives as long as the migration needs it.
    _dst: QemuGuest,
}

/// Starts `passes --json` (with `extra` arguments) on `src` and waits until it has
/// attached; the migration is not started.
pub async fn attach_passes(src: &QemuGuest, plan: &Plan<'_>, extra: &[&str]) -> Attached {
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
    let (dst, uri) = src.boot_destination();
    let pid = src.pid().to_string();
    let mut cmd = passes_command(src, &["--json", "--timeout", "150s", "--pid", &pid]);
    cmd.args(extra);
    if let Some(p) = plan.profile {
        cmd.arg("--profile").arg(p);
    }
    if let Some(r) = plan.stop_copy_rate {
        cmd.args(["--stop-copy-rate", r]);
    }
    let mut child = cmd.spawn().expect("start migtrace passes");
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
    Attached {
        child,
        ctl,
        dst,
        uri,
        cancel_after: plan.cancel_after,
    }
}

impl Attached {
    /// Starts the migration (cancelled after `plan.cancel_after`).
    pub async fn migrate(self) -> Started {
        let Attached {
            child,
            mut ctl,
            dst,
            uri,
            cancel_after,
        } = self;
        ctl.migrate(&uri).await.unwrap();
        if let Some(after) = cancel_after {
            tokio::time::sleep(after).await;
            ctl.migrate_cancel().await.unwrap();
        }
        Started {
            child,
            ctl,
            _dst: dst,
        }
    }
}

impl Started {
    /// The pid of `migtrace passes` (tests/passes.rs signals it; tests/backtest.rs does not).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `passes` to exit; returns its report and QEMU's final numbers.
    pub async fn finish(self) -> Run {
        let Started {
            mut child,
            mut ctl,
            _dst,
        } = self;
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
        // `passes` gave up (its --timeout) on a migration that goes on: end it, so QEMU's
        // final word is "cancelled" and the report stands as what happened within the bound.
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
}

/// `migtrace passes --qmp` on `src`'s socket with `args`, stdout and stderr piped.
pub fn passes_command(src: &QemuGuest, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.arg("passes")
        .arg("--qmp")
        .arg(&src.qmp_socket)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts a migration of `src` to a fresh destination with `params` (multifd on both sides
/// when `params.multifd_channels` is set), over a new connection to its QMP socket; returns
/// the destination (keep it alive) and the connection. With [`wait_completed`] this is the
/// tests' one "QEMU guest plus migration until it ends".
pub async fn start_migration(src: &QemuGuest, params: &MigrateParameters) -> (QemuGuest, Qmp) {
    let connect = |p: std::path::PathBuf| async move {
        Qmp::connect(&p, Duration::from_secs(10)).await.unwrap()
    };
    let mut qmp = connect(src.qmp_socket.clone()).await;
    let (dst, uri) = src.boot_destination();
    if params.multifd_channels.is_some() {
        let mut dq = connect(dst.qmp_socket.clone()).await;
        for q in [&mut qmp, &mut dq] {
            q.migrate_set_capabilities(&[("multifd", true)])
                .await
                .unwrap();
            q.migrate_set_parameters(params).await.unwrap();
        }
    }
    qmp.migrate_set_parameters(params).await.unwrap();
    qmp.migrate(&uri).await.unwrap();
    (dst, qmp)
}

/// `query-migrate` once the migration has ended (read again while `total-time` is 0).
async fn final_info(ctl: &mut Qmp) -> MigrationInfo {
    wait_migration_end(ctl, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `query-migrate` until the migration has ended (`completed`, `failed` or
/// `cancelled`) and returns that reply; a `completed` reply whose `total-time` is still 0 is
/// read again (docs/qemu.md). An error, with the last reply, when it has not ended within
/// `within` or QMP fails. The one "wait for the end of a migration" of the tests.
pub async fn wait_migration_end(q: &mut Qmp, within: Duration) -> Result<MigrationInfo, String> {
    let deadline = Instant::now() + within;
    loop {
        let i = q
            .query_migrate()
            .await
            .map_err(|e| format!("query-migrate: {e:#}"))?;
        let st = i.status.as_deref().unwrap_or("none");
        let ended = matches!(st, "completed" | "cancelled" | "failed");
        if ended && (st != "completed" || i.total_time.unwrap_or(0) > 0) {
            return Ok(i);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the migration did not end within {within:?}: {i:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`wait_migration_end`] for a migration that must complete: its `ram` at the end.
pub async fn wait_completed(q: &mut Qmp, within: Duration) -> MigrationRam {
    let info = wait_migration_end(q, within)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(info.status.as_deref(), Some("completed"), "{info:?}");
    info.ram.expect("a completed migration reports ram")
}
