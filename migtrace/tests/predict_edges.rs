//! `migtrace predict` at the edges: files that are not profiles (devices, FIFOs, huge
//! files), impossible profiles, flags outside their plausible range, a grid too large to
//! compute, and profile strings that try to reach the terminal. Every refusal is exit 2 and
//! one line on stderr, and comes quickly.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use migtrace::{
    profile::{DirtyRate, Profile, TargetInfo, ThreadCounts, ThreadShare, FORMAT, VERSION},
    record::GrowthPoint,
};

/// Runs `migtrace predict ARGS`, killed (and the test failed) after 20 s.
fn migtrace(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_migtrace"))
        .arg("predict")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run migtrace");
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("migtrace predict {args:?} did not answer within 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

/// Exit code 2, exactly one line on stderr mentioning every `want`, nothing on stdout.
fn refused(args: &[&str], want: &[&str]) -> String {
    let o = migtrace(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "args {args:?}: stderr {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err:?}"
    );
    assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "{err:?}");
    for w in want {
        assert!(err.contains(w), "args {args:?}: {err:?} lacks {w:?}");
    }
    assert!(o.stdout.is_empty());
    err
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("migtrace-edges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn sample_profile() -> Profile {
    Profile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: "test".into(),
        created_unix_s: 0,
        target: TargetInfo {
            pid: 42,
            comm: "writer".into(),
            rss_bytes: 1 << 30,
            writable_bytes: 1 << 30,
            shared_writable_bytes: 0,
            page_size: 4096,
        },
        backend: "fault".into(),
        caveats: vec!["sees first writes only".into()],
        duration_s: 10.0,
        interval_s: 1.0,
        dirty: DirtyRate {
            bytes_per_sec: 1e8,
            pages_per_sec: 1e8 / 4096.0,
            ci95_bytes_per_sec: None,
            peak_bytes_per_sec: 2e8,
        },
        growth: vec![
            GrowthPoint {
                window_s: 0.5,
                unique_pages: 10000.0,
                windows: 20,
            },
            GrowthPoint {
                window_s: 1.0,
                unique_pages: 18000.0,
                windows: 10,
            },
        ],
        threads: vec![ThreadShare {
            tid: 43,
            comm: "worker".into(),
            pages: 100,
            share: 1.0,
            busy_share: Some(0.9),
        }],
        thread_counts: ThreadCounts::DirtiedPages,
        busy_share: Some(0.9),
        zero_page_share: Some(0.1),
        guest: None,
        link: None,
    }
}

fn write_profile(name: &str, text: &str) -> PathBuf {
    let path = tmp(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn predict_profile(path: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["--link", "10g", "--profile", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    migtrace(&args)
}

// ---- 1. files that are not profiles ----

#[test]
fn devices_fifos_directories_and_huge_files_are_refused_quickly() {
    for dev in ["/dev/zero", "/dev/urandom", "/dev/null"] {
        refused(
            &["--link", "10g", "--profile", dev],
            &["character device", "not a regular file"],
        );
    }
    let dir = tmp("a-dir");
    std::fs::create_dir_all(&dir).unwrap();
    refused(
        &["--link", "10g", "--profile", dir.to_str().unwrap()],
        &["directory"],
    );

    let fifo = tmp("fifo");
    let _ = std::fs::remove_file(&fifo);
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refused(
        &["--link", "10g", "--profile", fifo.to_str().unwrap()],
        &["FIFO"],
    );

    // A sparse regular file past the cap: refused without reading it all.
    let huge = tmp("huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(migtrace::profile::MAX_PROFILE_BYTES + 1)
        .unwrap();
    refused(
        &["--link", "10g", "--profile", huge.to_str().unwrap()],
        &["larger than 64 MiB"],
    );
}

#[test]
fn a_path_with_a_newline_stays_on_one_line() {
    refused(
        &["--link", "10g", "--profile", "no\nsuch\x1b[2J"],
        &["cannot read profile"],
    );
}

// ---- 2. impossible profiles ----

/// Profile errors are input errors: exit 2, one line naming the field.
#[test]
fn impossible_profiles_are_refused_naming_the_field() {
    type Edit = fn(&mut Profile);
    let cases: &[(&str, Edit)] = &[
        ("target.page_size", |p| p.target.page_size = 1 << 40),
        ("target.page_size", |p| p.target.page_size = 1),
        ("target.page_size", |p| p.target.page_size = 3000),
        ("target.page_size", |p| p.target.page_size = 0),
        ("target.writable_bytes", |p| p.target.writable_bytes = 0),
        ("target.writable_bytes", |p| p.target.writable_bytes = 100),
        ("growth decreases", |p| p.growth[1].unique_pages = 5000.0),
        ("growth[1].unique_pages", |p| p.growth[1].unique_pages = 1e9),
        ("dirty.bytes_per_sec", |p| p.dirty.bytes_per_sec = 1e308),
        ("dirty.pages_per_sec", |p| p.dirty.pages_per_sec = 1e308),
        ("dirty.peak_bytes_per_sec", |p| {
            p.dirty.peak_bytes_per_sec = 1e308
        }),
        ("dirty.ci95_bytes_per_sec", |p| {
            p.dirty.ci95_bytes_per_sec = Some([0.0, 1e300])
        }),
        ("duration_s", |p| p.duration_s = 1e308),
        ("interval_s", |p| p.interval_s = -1.0),
        ("growth[0].window_s", |p| p.growth[0].window_s = 1e308),
        ("threads[0].share", |p| p.threads[0].share = 1e308),
        ("busy_share", |p| p.busy_share = Some(1.5)),
        ("target.comm", |p| p.target.comm = "x".repeat(100_000)),
    ];
    for (field, edit) in cases {
        let mut p = sample_profile();
        edit(&mut p);
        let text = serde_json::to_string(&p).unwrap();
        let e = Profile::parse(&text, "p.json").unwrap_err().to_string();
        assert!(e.contains(field), "{field}: {e}");
        assert!(e.len() < 400 && !e.contains('\n'), "{e}");
        // No 300-digit numbers.
        assert!(!e.contains("0000000000000000000000"), "{e}");
    }
    let mut p = sample_profile();
    p.target.writable_bytes = 0;
    let path = write_profile("zero.json", &serde_json::to_string(&p).unwrap());
    let o = predict_profile(&path, &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("target.writable_bytes") && err.trim_end().lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let p = sample_profile();
    let text = format!("\u{feff}{}", p.to_text());
    assert_eq!(Profile::parse(&text, "bom.json").unwrap(), p);
    let path = write_profile("bom.json", &text);
    let o = predict_profile(&path, &["--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn hostile_json_gets_one_line() {
    let deep = "[".repeat(100_000);
    let variant = sample_profile()
        .to_text()
        .replace("\"dirtied-pages\"", "\"\\u001b[2J\\nFAKE LINE\"");
    let huge_format = format!("{{\"format\": \"{}\"}}", "\u{1b}x".repeat(100_000));
    for (name, text) in [
        ("deep.json", deep.as_str()),
        ("variant.json", variant.as_str()),
        ("format.json", huge_format.as_str()),
        ("binary.json", "\u{0}\u{1}\u{2}"),
    ] {
        let path = write_profile(name, text);
        let o = predict_profile(&path, &[]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{name}: {err:?}");
        assert!(
            !err.contains('\u{1b}') && err.len() < 600,
            "{name}: {err:?}"
        );
    }
    let path = tmp("not-utf8.json");
    std::fs::write(&path, b"{\"format\": \"\xff\xfe\"}").unwrap();
    let o = predict_profile(&path, &[]);
    assert_eq!(o.status.code(), Some(2));
}

// ---- 3. bounds of the flags ----

const BASE: [&str; 6] = ["--mem", "16GiB", "--dirty-rate", "1GB/s", "--link", "10g"];

fn with(extra: &[&str]) -> Vec<String> {
    BASE.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn refused_with(extra: &[&str], want: &[&str]) -> String {
    let v = with(extra);
    let args: Vec<&str> = v.iter().map(String::as_str).collect();
    refused(&args, want)
}

#[test]
fn flags_are_bounded_with_one_clear_line() {
    refused_with(
        &["--downtime", "1ns"],
        &["--downtime", "out of range", "1 ms"],
    );
    refused_with(&["--downtime", "999us"], &["out of range"]);
    refused_with(&["--downtime", "2001s"], &["out of range", "2000 s"]);
    refused_with(&["--downtime", "1e400s"], &["out of range"]);
    refused_with(&["--deadline", "0s"], &["--deadline", "more than zero"]);
    refused_with(&["--deadline", "0"], &["--deadline", "more than zero"]);
    refused_with(
        &["--max-passes", "4294967296"],
        &["--max-passes", "from 1 to 2000"],
    );
    refused_with(&["--max-passes", "0"], &["from 1 to 2000"]);
    refused_with(&["--vcpus", "4294967296"], &["at most 4096"]);
    refused_with(&["--efficiency", "1e-300"], &["--efficiency", "0.01"]);
    refused_with(&["--efficiency", "NaN"], &["--efficiency"]);
    refused_with(&["--busy", "inf"], &["--busy"]);
    refused_with(&["--zero-share", "infinity"], &["--zero-share"]);
    refused_with(
        &["--throttle", "dirty-limit", "--dirty-limit", "1B/s"],
        &["--dirty-limit", "out of range", "1 MiB/s"],
    );
    let e = refused(
        &[
            "--mem",
            "16GiB",
            "--dirty-rate",
            "1GB/s",
            "--link",
            "1e400g",
        ],
        &["--link", "out of range"],
    );
    assert!(!e.contains("unknown"), "{e}");
    refused(
        &["--mem", "16GiB", "--dirty-rate", "1GB/s", "--link", "1e27g"],
        &["out of range", "10 Tbit/s"],
    );
    refused(
        &[
            "--mem",
            "16GiB",
            "--dirty-rate",
            "1GB/s",
            "--link",
            "999bit",
        ],
        &["out of range"],
    );
    refused(
        &["--mem", "0.1B", "--dirty-rate", "1GB/s", "--link", "10g"],
        &["--mem", "one page"],
    );
    refused(
        &["--mem", "65PiB", "--dirty-rate", "1GB/s", "--link", "10g"],
        &["--mem", "64 PiB"],
    );
    refused(
        &[
            "--mem",
            "16GiB",
            "--dirty-rate",
            "1e308GB/s",
            "--link",
            "10g",
        ],
        &["--dirty-rate", "out of range"],
    );
    refused_with(&["--wws", "1B"], &["--wws", "one page"]);
}

/// The smallest and largest accepted values give sane settings: 1 ms is `downtime-limit: 1`,
/// never 0; a 16 PiB guest (printed in PiB) is accepted, and so is what it prints.
#[test]
fn the_ends_of_each_range_are_accepted_and_give_sane_settings() {
    let o = migtrace(
        &with(&["--downtime", "1ms", "--json"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["results"][0]["recommendation"]["settings"]["qemu"]["migrate-set-parameters"];
    assert_eq!(p["downtime-limit"], 1, "{p}");
    let o = migtrace(&[
        "--mem",
        "16PiB",
        "--dirty-rate",
        "1GB/s",
        "--link",
        "10000g",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("16.00 PiB guest"), "{text}");
    let o = migtrace(&[
        "--mem",
        "16.00 PiB",
        "--dirty-rate",
        "1GB/s",
        "--link",
        "1kbit",
        "--downtime",
        "2000s",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The slowest link still gets a bandwidth of at least 1 MiB/s (0 means "unlimited").
    let o = migtrace(&[
        "--mem",
        "4KiB",
        "--dirty-rate",
        "0",
        "--link",
        "1kbit",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &v["results"][0]["recommendation"]["settings"];
    assert_eq!(
        s["kubevirt_migration_policy"]["spec"]["bandwidthPerMigration"], "1Mi",
        "{s}"
    );
}

#[test]
fn a_huge_grid_is_refused_quickly() {
    let links: Vec<String> = (1..=1000).map(|i| format!("{i}g")).collect();
    let downs: Vec<String> = (1..=100).map(|i| format!("{i}ms")).collect();
    let (l, d) = (links.join(","), downs.join(","));
    let start = Instant::now();
    refused(
        &[
            "--mem",
            "16GiB",
            "--dirty-rate",
            "1GB/s",
            "--link",
            &l,
            "--downtime",
            &d,
            "--json",
        ],
        &["100000 cells", "at most 1000"],
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

// ---- 4. profile strings on the terminal ----

#[test]
fn profile_strings_cannot_reach_the_terminal() {
    let mut p = sample_profile();
    let evil = "x\u{1b}[2J\u{1b}]0;title\u{7}\r\nFAKE: converges\u{202e}gnp.exe\u{200b}";
    p.target.comm = evil.into();
    p.backend = evil.into();
    p.caveats = vec![evil.into()];
    p.threads[0].comm = evil.into();
    let path = write_profile(&format!("evil{}.json", "\u{1b}[31m"), &p.to_text());
    for extra in [
        &[][..],
        &["--explain"],
        &["--link", "40g", "--downtime", "1s,2s"],
    ] {
        let o = predict_profile(&path, extra);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        for c in ['\u{1b}', '\r', '\u{7}', '\u{202e}', '\u{200b}'] {
            assert!(!out.contains(c), "{c:?} reached the text output:\n{out}");
        }
        assert!(!out.lines().any(|l| l.starts_with("FAKE")), "{out}");
    }
    let o = predict_profile(&path, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["input"]["source"].as_str().unwrap().contains(evil));
    std::io::stdout().flush().unwrap();
}
