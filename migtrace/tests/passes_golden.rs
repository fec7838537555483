//! Golden master of `migtrace passes`: a real migration's QMP conversation, replayed. The
//! fixture `tests/fixtures/passes/tcg-128mib.qmp.json` holds what QEMU 7.2 said during a plain
//! migration of the TCG test guest at 128 MiB/s (its parameters, its capabilities and every
//! `query-migrate` reply, polled every 20 ms; recorded by `tests/passes.rs`
//! `record_query_migrate_replies`). A peer on a unix socket answers `passes` with them, one
//! reply per poll, so the report depends on the replies only, not on timing. The text and
//! JSON reports (with the back-test against `profiles/tcg-random-40mib.json`) and the metrics
//! `passes --listen` serves at the end must match the recorded files byte for byte.
//!
//! After an intended change of output, record again and review the diff:
//! `MIGTRACE_GOLDEN_RECORD=1 cargo test -p migtrace --test passes_golden`.
use std::{
    io::{BufRead, BufReader, Read, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Binds a peer that replays `rec` to one client: the greeting with its QEMU version, the
/// recorded parameters and capabilities, and the next recorded `query-migrate` reply at each
/// poll (the last one again once they run out).
fn replaying_peer(tag: &str, rec: Value) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("migtrace-golden-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let greet = serde_json::json!({"QMP": {"version": {"qemu": rec["qemu"], "package": ""}, "capabilities": ["oob"]}});
        let _ = writeln!(s, "{greet}");
        let replies = rec["replies"].as_array().unwrap().clone();
        let mut next = 0;
        let r = BufReader::new(s.try_clone().unwrap());
        for line in r.lines() {
            let Ok(line) = line else { return };
            let v: Value = serde_json::from_str(&line).unwrap();
            let ret = match v["execute"].as_str() {
                Some("query-migrate") => {
                    let i = next.min(replies.len() - 1);
                    next += 1;
                    replies[i].clone()
                }
                Some("query-migrate-parameters") => rec["parameters"].clone(),
                Some("query-migrate-capabilities") => rec["capabilities"].clone(),
                _ => serde_json::json!({}),
            };
            let answer = serde_json::json!({"return": ret, "id": v["id"]});
            if writeln!(s, "{answer}").is_err() {
                return;
            }
        }
    });
    path
}

fn recording() -> Value {
    let text = std::fs::read_to_string(fixtures().join("passes/tcg-128mib.qmp.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The binary under test: this build's, or `MIGTRACE_GOLDEN_BIN` (an older build, to show a
/// refactor changed nothing: run the test with the old binary against the new files).
fn bin() -> PathBuf {
    std::env::var_os("MIGTRACE_GOLDEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_migtrace").into())
}

fn passes(sock: &Path, extra: &[&str]) -> std::process::Child {
    Command::new(bin())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["passes", "--qmp", sock.to_str().unwrap()])
        .args(["--profile", "tests/fixtures/profiles/tcg-random-40mib.json"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Compares `got` with the golden file `name` (or writes it when recording).
fn golden(name: &str, got: &str) {
    let path = fixtures().join("passes").join(name);
    if std::env::var_os("MIGTRACE_GOLDEN_RECORD").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (record with MIGTRACE_GOLDEN_RECORD=1)",
            path.display()
        )
    });
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n got: {:?}\nwant: {:?}",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

fn report(tag: &str, extra: &[&str]) -> String {
    let sock = replaying_peer(tag, recording());
    let o = passes(&sock, extra).wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "{tag}: {}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_text_report_is_unchanged() {
    golden("tcg-128mib.txt", &report("text", &[]));
}

#[test]
fn the_json_report_is_unchanged() {
    golden("tcg-128mib.json", &report("json", &["--json"]));
}

/// The metrics `passes --listen` serves once the report is out (during `--linger`).
#[test]
fn the_metrics_at_the_end_are_unchanged() {
    let sock = replaying_peer("metrics", recording());
    let mut child = passes(
        &sock,
        &["--json", "--listen", "127.0.0.1:0", "--linger", "60s"],
    );
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let port: u16 = loop {
        line.clear();
        assert!(err.read_line(&mut line).unwrap() > 0, "no metrics address");
        if let Some(rest) = line
            .trim()
            .strip_prefix("migtrace: serving metrics on http://")
        {
            let addr = rest.trim_end_matches("/metrics");
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    // The report is on stdout when the migration has been followed to its end.
    let mut out = String::new();
    let stdout = child.stdout.as_mut().unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 65536];
    while serde_json::from_str::<Value>(&out).is_err() {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0 && t.elapsed() < Duration::from_secs(30), "no report");
        out.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    // The registry writes a family's label sets in hash order: compare the lines sorted.
    let mut lines: Vec<&str> = body.lines().collect();
    lines.sort_unstable();
    golden("tcg-128mib.metrics", &(lines.join("\n") + "\n"));
}

/// The same migration with one reply broken as a hostile or broken peer would (issue 17):
/// `dirty-sync-count` = u64::MAX made `passes` abort allocating 2.28 GB, a count going back
/// ended as "completed". Now the report stops at the last plausible reply, partial, and
/// says why; `passes` exits 0 with it.
#[test]
fn a_broken_reply_ends_the_report_partial_with_the_reason() {
    for (tag, field, value) in [
        ("syncmax", "dirty-sync-count", u64::MAX),
        ("syncback", "dirty-sync-count", 0),
        ("bytesmax", "transferred", u64::MAX),
    ] {
        let mut rec = recording();
        rec["replies"][60]["ram"][field] = value.into();
        let sock = replaying_peer(tag, rec);
        let o = passes(&sock, &["--json"]).wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let s = &r["summary"];
        assert_eq!(s["partial"], true, "{tag}: {s}");
        let why = s["ended_by"]["implausible"]
            .as_str()
            .unwrap_or_else(|| panic!("{tag}: {s}"));
        eprintln!("{tag}: {why}; {} passes", s["passes"]);
        assert!(s["passes"].as_u64().unwrap() <= 3, "{tag}: {s}");
    }
}
