//! `migtrace passes` against a QMP peer that is not a well-behaved QEMU (issue 17): a
//! socket anyone could bind, or a broken QEMU. The peer greets, answers
//! `qmp_capabilities`, and then sends one event every 100 ms and never answers again.
//! Before, each event restarted the call's timeout: `passes --timeout 2s` still ran at
//! 60 s, deaf to SIGTERM, and gave no report.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixListener,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Binds a peer that answers its first `answers` commands as an idle QEMU would (no
/// migration yet), then never answers again and sends an event every 100 ms.
fn chattering_peer(tag: &str, answers: usize) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("migtrace-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut answered = 0;
        let greet = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;
        let _ = writeln!(s, "{greet}");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let ev = r#"{"event": "MIGRATION_PASS", "data": {"pass": 1}, "timestamp": {"seconds": 1, "microseconds": 0}}"#;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if answered < answers => {
                    answered += 1;
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let ret = match v["execute"].as_str() {
                        Some("query-migrate") => r#"{"status": "none"}"#,
                        Some("query-migrate-capabilities") => "[]",
                        _ => "{}",
                    };
                    if writeln!(s, r#"{{"return": {ret}, "id": {}}}"#, v["id"]).is_err() {
                        return;
                    }
                }
                _ if answered >= answers && writeln!(s, "{ev}").is_err() => return,
                _ => {}
            }
        }
    });
    path
}

fn passes(sock: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_migtrace"))
        .args(["passes", "--qmp", sock.to_str().unwrap(), "--json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it and fails if it is still running.
fn wait_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > limit {
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// It never attaches (no reply to the first query-migrate): an error naming the wait,
/// within the connect timeout (5 s), not a hang.
#[test]
fn a_peer_that_never_answers_cannot_hold_passes() {
    // Only qmp_capabilities is answered.
    let sock = chattering_peer("attach", 1);
    let o = wait_within(passes(&sock, &["--timeout", "2s"]), Duration::from_secs(15));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did not answer"), "{err}");
    assert!(!o.status.success());
}

/// Attached, following, then the peer goes silent mid-poll: `--timeout` ends the follow
/// with its report, and so does SIGTERM.
#[test]
fn a_peer_that_goes_silent_mid_follow_still_ends_with_a_report() {
    for (tag, extra, term) in [
        ("timeout", &["--timeout", "3s"][..], false),
        ("sigterm", &[][..], true),
    ] {
        // Attached (capabilities, query-migrate, migrate-set-capabilities, the parameters
        // and capabilities), two polls answered, then silence.
        let sock = chattering_peer(tag, 7);
        let child = passes(&sock, extra);
        if term {
            std::thread::sleep(Duration::from_millis(3000));
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
        let o = wait_within(child, Duration::from_secs(12));
        let err = String::from_utf8_lossy(&o.stderr);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{tag}: no JSON report ({e}); stderr: {err}"));
        let ended = report.to_string();
        let want = if term { "SIGTERM" } else { "imeout" };
        assert!(ended.contains(want), "{tag}: {ended}; stderr: {err}");
    }
}
