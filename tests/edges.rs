//! End-to-end tests of `watch` at the edges, each on a real target: a watch that ends
//! mid-interval, a target that execs, shared memory, many threads, `--range`, hostile
//! names, SIGHUP, an unwritable profile path and kernel threads. Every number a watch
//! records must be a measured one, and no ending may lose the record.
use std::{thread::sleep, time::Duration};

use migtrace_e2e::*;
use serde_json::Value;

/// Truth for a uniformly random writer of `w` page writes per second over `n` pages:
/// unique pages per 1 s window.
fn random_truth(w: f64, n: f64) -> f64 {
    n * (1.0 - (-w / n).exp())
}

fn within(measured: f64, truth: f64, tol: f64, what: &str) {
    let err = (measured - truth) / truth;
    eprintln!(
        "{what}: truth {truth:.0}, measured {measured:.0} pages/s ({:+.1} %)",
        err * 100.0
    );
    assert!(
        err.abs() <= tol,
        "{what}: measured {measured:.0} vs truth {truth:.0} pages/s"
    );
}

/// The mean can never exceed the peak; both come from the same intervals.
fn mean_within_peak(s: &Value) {
    let mean = s["dirty_bytes_per_sec"].as_f64().unwrap();
    let peak = s["peak_bytes_per_sec"].as_f64().unwrap();
    assert!(
        mean <= peak * (1.0 + 1e-9),
        "mean {mean} above peak {peak}: {s}"
    );
}

/// `--duration 2500ms`: the last half interval is shown as partial and left out of the
/// summary, whose mean stays within the intervals' range.
#[test]
fn partial_last_interval_stays_out_of_the_summary() {
    require_root();
    let w = Writer::steady("random", 32.0, 64, &[]);
    let pid = w.pid().to_string();
    let watch = Watch::start(&["--pid", &pid, "--backend", "sample", "--duration", "2500ms"]);
    let (iv, s, st) = watch.finish();
    assert!(st.success());
    assert_eq!(iv.last().unwrap()["partial"], true, "{:?}", iv.last());
    assert_eq!(s["intervals"].as_u64(), Some(iv.len() as u64 - 1), "{s}");
    mean_within_peak(&s);
    assert!(s["caveats"].to_string().contains("partial interval"), "{s}");
}

/// SIGTERM at 0.3 s: only a partial interval exists; it is kept, said to be partial, and
/// the peak is not 0 beside a non-zero mean.
#[test]
fn sigterm_before_one_interval_keeps_the_partial_one() {
    require_root();
    let w = Writer::steady("random", 32.0, 64, &[]);
    let pid = w.pid().to_string();
    let watch = Watch::start(&["--pid", &pid, "--backend", "sample"]);
    sleep(Duration::from_millis(300));
    signal(watch.child.id(), libc::SIGTERM);
    let (_, s, st) = watch.finish();
    assert!(st.success());
    assert_eq!(s["end_reason"], "terminated");
    mean_within_peak(&s);
    assert!(s["peak_bytes_per_sec"].as_f64().unwrap() > 0.0, "{s}");
    assert!(s["caveats"].to_string().contains("only partial"), "{s}");
}

/// A target that execs another program: the watch follows it, renames it, measures the new
/// program's memory, and leaves the old program, the interval holding the exec and the new
/// program's start-up (its first fill of 64 MiB) out of the summary: the rule in
/// docs/reliability.md ("A target that execs"), checked for an exec early, in the middle and
/// late in an interval (and at its very end).
#[test]
fn exec_redraws_the_sample_and_renames_the_target() {
    require_root();
    // 99 %: the new program's first fill spans the interval's end, the case that read
    // 26-28 % high before the start-up rule.
    for share in [0.1, 0.5, 0.9, 0.99] {
        exec_at(share);
    }
}

/// A shell that execs the writer `share` of an interval after the watch's first interval
/// line (1 s intervals).
fn exec_at(share: f64) {
    use std::io::Write;
    let what = format!("exec at {:.0} % of an interval", share * 100.0);
    let script = format!(
        "read -r _; exec {} writer --pattern random --rate-mib 32 --wss-mib 64",
        bin().display()
    );
    let mut child = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let mut watch = Watch::start(&["--pid", &pid, "--backend", "sample", "--duration", "7s"]);
    let first = watch.next_interval();
    sleep(Duration::from_secs_f64(share));
    let stdin = child.stdin.as_mut().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    let (mut iv, s, st) = watch.finish();
    kill_if_running(&mut child);
    iv.insert(0, first);
    assert!(st.success(), "{what}");
    assert_eq!(
        watch_comm(&s),
        "migtrace",
        "{what}: renamed after the exec: {s}"
    );
    let noted: Vec<usize> = (0..iv.len())
        .filter(|&i| iv[i]["note"].is_string())
        .collect();
    assert!(
        noted
            .first()
            .is_some_and(|&i| iv[i]["note"].as_str().unwrap().contains("exec'd")),
        "{what}: the exec is noted: {iv:?}"
    );
    // The rule: the summary counts the full intervals after the exec's and the start-up's
    // (the noted ones) and after any sample warm-up.
    let warm = (0..iv.len()).filter(|&i| iv[i]["warmup"] == true).max();
    let skip = noted.last().copied().max(warm).unwrap() + 1;
    let counted = iv[skip..].iter().filter(|i| i["partial"] != true).count();
    let notes: Vec<(usize, &str)> = noted
        .iter()
        .map(|&i| (i, iv[i]["note"].as_str().unwrap()))
        .collect();
    eprintln!("{what}: noted {notes:?}; the summary counts {counted} from interval {skip}");
    assert!(
        counted >= 3,
        "{what}: {counted} intervals after the start-up: {iv:?}"
    );
    assert_eq!(s["intervals"].as_u64(), Some(counted as u64), "{what}: {s}");
    let truth = random_truth(32.0 * 256.0, 64.0 * 256.0);
    for r in iv.iter().rev().take(2) {
        let r = r["dirty_pages_per_sec"].as_f64().unwrap();
        within(r, truth, 0.15, &format!("{what}: interval after the exec"));
    }
    within(
        s["dirty_pages_per_sec"].as_f64().unwrap(),
        truth,
        0.10,
        &format!("{what}: summary after the exec"),
    );
    assert!(s["caveats"].to_string().contains("exec"), "{what}: {s}");
}

fn watch_comm(s: &Value) -> String {
    s["comm"].as_str().unwrap().to_string()
}

/// Shared memory (a MAP_SHARED anonymous mapping, and a memfd as QEMU's share=on RAM) is
/// measured like private memory, and the start record says how much of it is shared.
#[test]
fn shared_memory_is_measured() {
    require_root();
    for memory in ["shared-anon", "memfd", "malloc"] {
        let w = Writer::steady("random", 32.0, 64, &["--memory", memory]);
        let pid = w.pid().to_string();
        let watch = Watch::start(&["--pid", &pid, "--backend", "sample", "--duration", "3s"]);
        let shared = watch.start["shared_writable_bytes"].as_u64().unwrap();
        let (_, s, st) = watch.finish();
        assert!(st.success());
        if memory == "malloc" {
            assert_eq!(shared, 0);
        } else {
            assert!(shared >= 64 << 20, "{memory}: shared {shared}");
        }
        let truth = random_truth(32.0 * 256.0, 64.0 * 256.0);
        within(
            s["dirty_pages_per_sec"].as_f64().unwrap(),
            truth,
            0.10,
            memory,
        );
    }
}

/// 200 threads: the profile carries the same threads and busy share as the summary.
#[test]
fn profile_carries_the_summary_threads() {
    require_root();
    let w = Writer::steady(
        "random",
        16.0,
        32,
        &["--threads", "4", "--idle-threads", "196"],
    );
    let pid = w.pid().to_string();
    let dir = tempdir();
    let path = dir.join("p.json");
    let watch = Watch::start(&[
        "--pid",
        &pid,
        "--duration",
        "2s",
        "--profile-out",
        path.to_str().unwrap(),
    ]);
    let (_, s, st) = watch.finish();
    assert!(st.success());
    let p: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        p["threads"].as_array().unwrap().len(),
        s["threads"].as_array().unwrap().len()
    );
    assert_eq!(p["busy_share"], s["busy_share"]);
    assert!(p["busy_share"].is_f64(), "{p}");
    std::fs::remove_dir_all(&dir).ok();
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "migtrace-edges-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `--range` applies to the rate of every backend: half the working set reads half the
/// rate; a range with nothing mapped is warned about and measures nothing (not 0).
#[test]
fn range_restricts_the_rate() {
    require_root();
    let w = Writer::steady("random", 32.0, 64, &[]);
    let pid = w.pid().to_string();
    let addr = w.ready["addr"].as_u64().unwrap();
    let len = w.ready["len"].as_u64().unwrap();
    let half = format!("{:x}-{:x}", addr, addr + len / 2);
    let watch = Watch::start(&[
        "--pid",
        &pid,
        "--backend",
        "sample",
        "--range",
        &half,
        "--duration",
        "3s",
    ]);
    let (_, s, st) = watch.finish();
    assert!(st.success());
    let truth = random_truth(32.0 * 256.0, 64.0 * 256.0) / 2.0;
    within(
        s["dirty_pages_per_sec"].as_f64().unwrap(),
        truth,
        0.10,
        "half range",
    );

    let dir = tempdir();
    let path = dir.join("p.json");
    let watch = Watch::start(&[
        "--pid",
        &pid,
        "--backend",
        "sample",
        "--range",
        "1000-2000",
        "--duration",
        "2s",
        "--profile-out",
        path.to_str().unwrap(),
    ]);
    assert!(watch.start["warnings"]
        .to_string()
        .contains("nothing writable is mapped"));
    let (_, s, st) = watch.finish();
    assert_eq!(
        st.code(),
        Some(1),
        "asked for a profile, none could be written"
    );
    assert_eq!(s["intervals"].as_u64(), Some(0), "{s}");
    assert!(s["caveats"].to_string().contains("rate is unknown"), "{s}");
    assert!(!path.exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// A name with escape sequences cannot clear the screen or forge lines in text output.
#[test]
fn hostile_names_are_escaped() {
    require_root();
    let w = Writer::steady("seq", 4.0, 8, &["--name", "\x1b[2J\x1b[31mX\nsumm"]);
    let pid = w.pid().to_string();
    let out = run(&[
        "watch",
        "--pid",
        &pid,
        "--backend",
        "sample",
        "--duration",
        "1s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(!text.contains('\x1b'), "raw ESC in output: {text:?}");
    let forged = |l: &&str| l.starts_with("summ") && !l.starts_with("summary: ");
    assert!(!text.lines().any(|l| forged(&l)), "forged line: {text}");
    assert!(text.contains("\\u{1b}[2J"), "{text}");
}

/// SIGHUP (a dropped SSH session) ends the watch like SIGTERM: summary and profile.
#[test]
fn sighup_writes_summary_and_profile() {
    require_root();
    let w = Writer::steady("seq", 8.0, 16, &[]);
    let pid = w.pid().to_string();
    let dir = tempdir();
    let path = dir.join("p.json");
    let watch = Watch::start(&[
        "--pid",
        &pid,
        "--backend",
        "sample",
        "--profile-out",
        path.to_str().unwrap(),
    ]);
    sleep(Duration::from_millis(1300));
    signal(watch.child.id(), libc::SIGHUP);
    let (_, s, st) = watch.finish();
    assert!(st.success(), "{st}");
    assert_eq!(s["end_reason"], "hangup");
    assert!(path.exists());
    std::fs::remove_dir_all(&dir).ok();
}

fn usage_error(args: &[&str], needle: &str) {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    assert_eq!(err.trim().lines().count(), 1, "{err:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing measured before the check: {:?}",
        out.stdout
    );
}

/// Bad ends are found before attaching: an unwritable profile path, an interval longer than
/// the watch, a kernel thread.
#[test]
fn bad_ends_are_refused_before_attaching() {
    require_root();
    let me = std::process::id().to_string();
    for bad in ["/proc/x", "/tmp", "/nonexistent-folder/p.json"] {
        usage_error(
            &["watch", "--pid", &me, "--profile-out", bad],
            "--profile-out",
        );
    }
    usage_error(
        &[
            "watch",
            "--pid",
            &me,
            "--interval",
            "2s",
            "--duration",
            "1s",
        ],
        "longer than --duration",
    );
    usage_error(
        &[
            "watch",
            "--pid",
            &me,
            "--interval",
            "9y",
            "--duration",
            "1s",
        ],
        "longer than --duration",
    );
    // Past ten years a duration is refused as it is parsed (it overflowed deadlines).
    usage_error(
        &[
            "watch",
            "--pid",
            &me,
            "--interval",
            "100y",
            "--duration",
            "1s",
        ],
        "longer than ten years",
    );
    usage_error(&["watch", "--pid", "2"], "kernel thread");
}

/// A symlink another user planted at the profile path is replaced, never written through.
#[test]
fn profile_is_written_atomically_not_through_a_symlink() {
    require_root();
    let w = Writer::steady("seq", 4.0, 8, &[]);
    let pid = w.pid().to_string();
    let dir = tempdir();
    let victim = dir.join("victim");
    std::fs::write(&victim, "keep me").unwrap();
    let link = dir.join("p.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // Planted by another user (nobody): a link of root's own is followed, as `>` would
    // (docs/reliability.md, "Hostile peers and planted files").
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let out = run(&[
        "watch",
        "--pid",
        &pid,
        "--backend",
        "sample",
        "--duration",
        "1s",
        "--profile-out",
        link.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(!std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_dir_all(&dir).ok();
}
