//! End-to-end tests of `migtrace watch` behaviour: exact fault counts, ending paths (target
//! exit, SIGINT, duration), JSON output, the profile, and bad input (exit 2).
use std::{thread::sleep, time::Duration};

use migtrace_e2e::*;

/// The fault backend counts exactly N first-touch write faults when the writer touches a
/// fresh mapping of N pages (restricted with --range to that mapping, so the writer's own
/// stack and heap faults do not count).
#[test]
fn fault_backend_counts_first_touches_exactly() {
    require_root();
    const MIB: u64 = 64;
    let mut w = Writer::start(&[
        "--pattern",
        "once",
        "--wss-mib",
        &MIB.to_string(),
        "--wait-go",
        "--duration",
        "1500ms",
    ]);
    let n = w.ready["pages"].as_u64().unwrap();
    assert_eq!(n, MIB * 256);
    let addr = w.ready["addr"].as_u64().unwrap();
    let len = w.ready["len"].as_u64().unwrap();
    let range = format!("{:x}-{:x}", addr, addr + len);
    let watch = w.watch("fault", &["--range", &range, "--interval", "500ms"]);
    w.go();
    let done = w.wait_done();
    assert_eq!(done["page_writes"].as_u64(), Some(n));
    let (intervals, s, st) = watch.finish();
    assert!(st.success(), "watch exit {st}");
    assert_complete_summary(&s);
    assert_eq!(s["end_reason"], "target-exited");
    assert_eq!(s["faults"]["write_not_present"].as_u64(), Some(n), "{s}");
    assert_eq!(s["faults"]["write_protect"].as_u64(), Some(0), "{s}");
    assert_eq!(s["dropped_events"].as_u64(), Some(0));
    // Unique pages are a HyperLogLog estimate: within 4 standard errors (4 x 1.6 %).
    let u = s["unique_pages_total"].as_f64().unwrap();
    assert!(
        (u - n as f64).abs() / (n as f64) < 0.064,
        "unique {u} vs {n}"
    );
    // Per-thread attribution: the writer's one thread did all of it.
    assert_eq!(s["threads"][0]["tid"].as_u64(), Some(w_pid(&s)));
    assert_eq!(s["threads"][0]["write_faults"].as_u64(), Some(n));
    let per_interval: u64 = intervals
        .iter()
        .map(|i| i["faults"]["write_not_present"].as_u64().unwrap())
        .sum();
    assert_eq!(per_interval, n, "interval deltas add up to the total");
}

fn w_pid(s: &serde_json::Value) -> u64 {
    s["pid"].as_u64().unwrap()
}

/// A target that dies mid-watch leaves a complete summary.
#[test]
fn target_exit_mid_watch_gives_summary() {
    require_root();
    let w = Writer::steady("seq", 8.0, 16, &["--duration", "1800ms"]);
    let watch = w.watch("sample", &["--interval", "500ms", "--duration", "30s"]);
    let _ = w.wait_done();
    let (intervals, s, st) = watch.finish();
    assert!(st.success());
    assert_complete_summary(&s);
    assert_eq!(s["end_reason"], "target-exited");
    assert!(!intervals.is_empty());
    assert!(s["duration_s"].as_f64().unwrap() < 10.0);
}

/// SIGINT ends a watch cleanly, with the summary written.
#[test]
fn sigint_gives_summary() {
    require_root();
    let w = Writer::steady("seq", 8.0, 16, &[]);
    let watch = Watch::start(&["--pid", &w.pid().to_string(), "--interval", "300ms"]);
    sleep(Duration::from_millis(1500));
    signal(watch.child.id(), libc::SIGINT);
    let (_, s, st) = watch.finish();
    w.stop();
    assert!(st.success(), "{st}");
    assert_complete_summary(&s);
    assert_eq!(s["end_reason"], "interrupted");
    assert!(s["intervals"].as_u64().unwrap() >= 3, "{s}");
}

/// SIGTERM too.
#[test]
fn sigterm_gives_summary() {
    require_root();
    let w = Writer::steady("seq", 8.0, 16, &[]);
    let watch = w.watch("fault", &["--interval", "300ms"]);
    sleep(Duration::from_millis(700));
    signal(watch.child.id(), libc::SIGTERM);
    let (_, s, st) = watch.finish();
    w.stop();
    assert!(st.success());
    assert_complete_summary(&s);
    assert_eq!(s["end_reason"], "terminated");
}

/// The profile is written, versioned, and loads with the reader `predict` uses.
#[test]
fn profile_out_round_trips() {
    require_root();
    let dir = std::env::temp_dir().join(format!("migtrace-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("profile.json");
    let w = Writer::steady("seq", 16.0, 64, &[]);
    let watch = Watch::start(&[
        "--pid",
        &w.pid().to_string(),
        "--interval",
        "250ms",
        "--duration",
        "2100ms",
        "--profile-out",
        path.to_str().unwrap(),
    ]);
    let backend = watch.start["backend"].as_str().unwrap().to_string();
    let (_, s, st) = watch.finish();
    w.stop();
    assert!(st.success());
    assert_eq!(s["end_reason"], "duration");
    let p = migtrace::profile::Profile::load(&path).expect("profile loads");
    assert_eq!(p.version, migtrace::profile::VERSION);
    // auto: sample+fault here, softdirty on kernels with soft-dirty.
    assert_eq!(p.backend, backend);
    assert!(p.target.writable_bytes >= 64 << 20);
    assert!(p.dirty.bytes_per_sec > 0.0);
    // Windows of 1, 2 and 4 intervals: the growth curve is increasing.
    assert!(p.growth.len() >= 3, "{:?}", p.growth);
    assert!(
        p.growth
            .windows(2)
            .all(|w| w[1].unique_pages > w[0].unique_pages),
        "{:?}",
        p.growth
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn assert_usage_error(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: stderr {err}");
    assert!(
        err.contains(needle),
        "args {args:?}: stderr {err:?} lacks {needle:?}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err:?}");
}

#[test]
fn bad_input_exits_2_with_one_line() {
    assert_usage_error(
        &["watch", "--pid", "999999999"],
        "no process with pid 999999999",
    );
    assert_usage_error(&["watch", "--pid", "1", "--duration", "5"], "has no unit");
    assert_usage_error(
        &["watch", "--pid", "1", "--duration", "fast"],
        "bad duration",
    );
    assert_usage_error(&["watch", "--pid", "1", "--interval", "1ms"], "too short");
    assert_usage_error(&["watch", "--pid", "notapid"], "invalid value");
    assert_usage_error(
        &["watch", "--pid", "1", "--range", "10-5"],
        "end must be above start",
    );
    // A thread id is not a process: the kernel programs filter by process.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let pid = std::process::id();
    assert_ne!(tid as u32, pid);
    assert_usage_error(
        &["watch", "--pid", &tid.to_string()],
        &format!("is a thread of process {pid}"),
    );
    done_tx.send(()).unwrap();
    t.join().unwrap();
}

/// Without privileges: a clear line and exit 2. Runs the binary as `nobody` through setpriv:
/// - on nobody's own process the memory is readable, so the eBPF backend is refused for
///   missing CAP_BPF/CAP_PERFMON;
/// - on root's process even the memory map is refused (ptrace rights).
#[test]
fn missing_privileges_exit_2() {
    require_root();
    let nobody = || {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin());
        c
    };
    let run_as_nobody = |args: &[&str]| {
        nobody()
            .args(args)
            .output()
            .expect("setpriv (util-linux) runs")
    };
    let check = |args: &[&str], needle: &str| {
        let out = run_as_nobody(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
        assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    };
    let mut cmd = nobody();
    cmd.args([
        "writer",
        "--pattern",
        "seq",
        "--rate-mib",
        "1",
        "--wss-mib",
        "4",
    ]);
    let own = Writer::spawn(cmd);
    check(
        &[
            "watch",
            "--pid",
            &own.pid().to_string(),
            "--backend",
            "fault",
        ],
        "CAP_BPF",
    );
    check(
        &[
            "watch",
            "--pid",
            &own.pid().to_string(),
            "--backend",
            "softdirty",
        ],
        "CAP_BPF",
    );
    let roots = Writer::steady("seq", 1.0, 4, &[]);
    for backend in ["fault", "sample", "auto"] {
        check(
            &[
                "watch",
                "--pid",
                &roots.pid().to_string(),
                "--backend",
                backend,
            ],
            "permission denied",
        );
    }
    own.stop();
    roots.stop();
}
