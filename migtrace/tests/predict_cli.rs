//! End-to-end tests of `migtrace predict`: runs the real binary and checks exit codes, the
//! one-line error messages, the JSON fields a caller relies on (per link: convergence,
//! passes, time, bytes, downtime, recommendation with settings), and reading a profile file
//! written by the test.
use std::process::{Command, Output};

use migtrace::{
    profile::{DirtyRate, Profile, TargetInfo, ThreadShare, FORMAT, VERSION},
    record::GrowthPoint,
};

fn migtrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_migtrace"))
        .arg("predict")
        .args(args)
        .output()
        .expect("run migtrace")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("valid JSON")
}

/// Exit code 2 and exactly one line on stderr that mentions `want`.
fn assert_usage_error(args: &[&str], want: &str) {
    let o = migtrace(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "args {args:?}: stderr {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "args {args:?}: not one line: {err}"
    );
    assert!(err.contains(want), "args {args:?}: {err:?} lacks {want:?}");
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_units_exit_2_with_one_clear_line() {
    let base = ["--mem", "16GiB", "--dirty-rate", "1GB/s"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert_usage_error(&with(&["--link", "10"]), "no unit");
    assert_usage_error(&with(&["--link", "10x"]), "--link");
    assert_usage_error(&with(&["--link", "10g,,40g"]), "--link");
    assert_usage_error(&with(&["--link", "10g", "--downtime", "300"]), "--downtime");
    assert_usage_error(
        &with(&["--link", "10g", "--policy", "kvm2"]),
        "unknown policy",
    );
    assert_usage_error(
        &with(&["--link", "10g", "--throttle", "fast"]),
        "unknown throttle",
    );
    assert_usage_error(
        &with(&["--link", "10g", "--efficiency", "1.5"]),
        "--efficiency",
    );
    assert_usage_error(&with(&["--link", "10g", "--deadline", "15"]), "--deadline");
    assert_usage_error(&with(&["--link", "10g", "--vcpus", "0"]), "--vcpus");
    assert_usage_error(
        &with(&["--link", "10g", "--vcpus", "4000000000"]),
        "at most 4096",
    );
    assert_usage_error(&with(&["--link", "10g", "--busy", "-0.1"]), "--busy");
    assert_usage_error(
        &with(&[
            "--link",
            "10g",
            "--throttle",
            "sdps",
            "--throttle-pct",
            "100",
        ]),
        "1 to 99",
    );
    assert_usage_error(
        &["--link", "10g", "--mem", "128Gb", "--dirty-rate", "1GB/s"],
        "bits",
    );
    assert_usage_error(
        &["--link", "10g", "--mem", "16GiB", "--dirty-rate", "1.5Gb/s"],
        "--dirty-rate",
    );
    assert_usage_error(
        &[
            "--link",
            "10g",
            "--mem",
            "16GiB",
            "--dirty-rate",
            "1GB/s",
            "--wws",
            "32GiB",
        ],
        "larger than --mem",
    );
}

#[test]
fn missing_or_conflicting_arguments_exit_2() {
    assert_usage_error(
        &["--mem", "16GiB", "--dirty-rate", "1GB/s"],
        "missing --link",
    );
    assert_usage_error(&["--link", "10g"], "missing input");
    assert_usage_error(&["--link", "10g", "--dirty-rate", "1GB/s"], "missing --mem");
    assert_usage_error(
        &[
            "--link",
            "10g",
            "--mem",
            "1GiB",
            "--dirty-rate",
            "1GB/s",
            "--kubevirt",
            "--nova",
        ],
        "only one of",
    );
    assert_usage_error(
        &[
            "--link",
            "10g",
            "--mem",
            "1GiB",
            "--dirty-rate",
            "1GB/s",
            "--policy",
            "xen",
            "--throttle",
            "auto-converge",
        ],
        "QEMU feature",
    );
    assert_usage_error(
        &["--link", "10g", "--profile", "/nonexistent/p.json"],
        "cannot read profile",
    );
    // Clap's own errors (an unknown flag) also exit 2.
    let o = migtrace(&["--link", "10g", "--bogus"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn json_has_the_fields_callers_rely_on() {
    let v = json(&migtrace(&[
        "--link",
        "10g,40g",
        "--mem",
        "16GiB",
        "--dirty-rate",
        "1GB/s",
        "--wws",
        "16GiB",
        "--json",
    ]));
    assert_eq!(v["format"], "migtrace-predict");
    let rs = v["results"].as_array().unwrap();
    assert_eq!(rs.len(), 2);
    for r in rs {
        assert!(r["link_bytes_per_sec"].as_f64().unwrap() > 0.0);
        assert!(r["converges"].is_boolean());
        let passes = r["passes"].as_array().unwrap();
        assert!(!passes.is_empty());
        for p in passes {
            assert!(p["duration_s"].as_f64().unwrap() > 0.0);
            assert!(p["bytes"].as_f64().unwrap() > 0.0);
        }
        assert!(r["total_time_s"].is_number());
        assert!(r["total_bytes"].is_number());
        assert!(r["downtime_s"].is_number());
        let rec = &r["recommendation"];
        assert!(rec["kind"].is_string());
        assert!(rec.get("level").is_some());
        assert!(rec["settings"].is_object());
    }
    // The worked example: 10g takes 48.2 s, 40g 4.5 s, more than 4x faster.
    assert_eq!(rs[0]["link_bytes_per_sec"], 1.25e9);
    let t10 = rs[0]["total_time_s"].as_f64().unwrap();
    let t40 = rs[1]["total_time_s"].as_f64().unwrap();
    assert!(
        (t10 - 48.23).abs() < 0.01 && (t40 - 4.51).abs() < 0.01,
        "{t10} {t40}"
    );
    assert!((rs[1]["speedup_vs_slowest"].as_f64().unwrap() - t10 / t40).abs() < 1e-9);
}

/// `--stop-copy-rate`: the link under a `max-bandwidth` cap. The passes and the switchover
/// stay at the cap; the downtime is the same bytes at the faster rate; the JSON says so only
/// when the option is given (the rest of the document is unchanged).
#[test]
fn stop_copy_rate_shortens_only_the_downtime() {
    let base = [
        "--link",
        "128MiB/s",
        "--efficiency",
        "1",
        "--mem",
        "512MiB",
        "--dirty-rate",
        "40MiB/s",
        "--wws",
        "128MiB",
        "--zero-share",
        "0.65",
        "--json",
    ];
    let capped = json(&migtrace(&base));
    let mut args = base.to_vec();
    args.extend(["--stop-copy-rate", "10g"]);
    let fast = json(&migtrace(&args));
    assert!(capped["input"].get("stop_copy_rate_bits_per_sec").is_none());
    assert!(capped["results"][0]
        .get("stop_copy_goodput_bytes_per_sec")
        .is_none());
    assert_eq!(fast["input"]["stop_copy_rate_bits_per_sec"], 1e10);
    let (a, b) = (&capped["results"][0], &fast["results"][0]);
    assert_eq!(b["stop_copy_goodput_bytes_per_sec"], 1.25e9);
    assert_eq!(a["passes"], b["passes"]);
    assert_eq!(a["reason"], b["reason"]);
    assert_eq!(a["stop_copy_bytes"], b["stop_copy_bytes"]);
    let stop = b["stop_copy_bytes"].as_f64().unwrap();
    let (da, db) = (
        a["downtime_s"].as_f64().unwrap(),
        b["downtime_s"].as_f64().unwrap(),
    );
    assert!((da - stop / 134217728.0).abs() < 1e-12, "{da}");
    assert!((db - stop / 1.25e9).abs() < 1e-12, "{db}");
    let (ta, tb) = (
        a["total_time_s"].as_f64().unwrap(),
        b["total_time_s"].as_f64().unwrap(),
    );
    assert!((ta - da - (tb - db)).abs() < 1e-9, "same live phase");
    // The text report names the rate on the link line.
    let text_args: Vec<&str> = base[..base.len() - 1]
        .iter()
        .copied()
        .chain(["--stop-copy-rate", "10g"])
        .collect();
    let text = String::from_utf8_lossy(&migtrace(&text_args).stdout).into_owned();
    assert!(
        text.contains("stop-and-copy at goodput 1.16 GiB/s"),
        "{text}"
    );
    // Slower than a link it lifts the cap of: refused.
    let mut slow = base.to_vec();
    slow.extend(["--stop-copy-rate", "100MB/s"]);
    assert_usage_error(&slow, "--stop-copy-rate (800 Mbit/s) is below --link");
    let mut bad = base.to_vec();
    bad.extend(["--stop-copy-rate", "10"]);
    assert_usage_error(&bad, "--stop-copy-rate");
}

#[test]
fn non_converging_qemu_gets_a_throttle_recommendation_with_settings() {
    let v = json(&migtrace(&[
        "--link",
        "10g",
        "--mem",
        "64GiB",
        "--dirty-rate",
        "2GB/s",
        "--wws",
        "16GiB",
        "--vcpus",
        "8",
        "--json",
    ]));
    let r = &v["results"][0];
    assert_eq!(r["converges"], false);
    assert_eq!(r["ending"], "never-converges");
    let rec = &r["recommendation"];
    assert_eq!(rec["kind"], "auto-converge");
    assert_eq!(rec["converges"], true);
    let lvl = rec["level"].as_f64().unwrap();
    assert!((1.0..=99.0).contains(&lvl));
    let params = &rec["settings"]["qemu"]["migrate-set-parameters"];
    assert_eq!(params["max-cpu-throttle"].as_f64().unwrap(), lvl);
    assert_eq!(params["downtime-limit"], 300);
    assert_eq!(
        rec["settings"]["qemu"]["migrate-set-capabilities"][0]["capability"],
        "auto-converge"
    );
    assert_eq!(
        rec["settings"]["kubevirt_migration_policy"]["spec"]["allowAutoConverge"],
        true
    );
    let virsh = rec["settings"]["virsh"].to_string();
    assert!(virsh.contains("--auto-converge"), "{virsh}");
}

#[test]
fn grid_of_downtimes_and_text_output() {
    let o = migtrace(&[
        "--link",
        "10g",
        "--link",
        "25g,40g",
        "--downtime",
        "100ms,1s",
        "--mem",
        "16GiB",
        "--dirty-rate",
        "1GB/s",
        "--explain",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.matches("\nLink ").count(), 6, "{out}");
    assert!(out.contains("speedup"));
    assert!(out.contains("verdict: "));
    assert!(out.contains("38x"), "--explain text");
    assert!(out.contains("not modelled"));
}

#[test]
fn kubevirt_deadline_aborts_a_slow_migration() {
    // 4 GiB over 50 Mbit/s: 12 min for the bulk pass alone, against 150 s/GiB x 4 = 600 s.
    let v = json(&migtrace(&[
        "--link",
        "50m",
        "--mem",
        "4GiB",
        "--dirty-rate",
        "5MB/s",
        "--wws",
        "2GiB",
        "--kubevirt",
        "--json",
    ]));
    let r = &v["results"][0];
    assert_eq!(v["input"]["limits"]["deadline_s"], 600.0);
    assert_eq!(r["converges"], false, "{r}");
    assert_eq!(r["ending"], "aborted");
    // Without the deadline it would complete.
    let v = json(&migtrace(&[
        "--link",
        "50m",
        "--mem",
        "4GiB",
        "--dirty-rate",
        "5MB/s",
        "--wws",
        "2GiB",
        "--json",
    ]));
    assert_eq!(v["results"][0]["converges"], true);
}

fn sample_profile(busy: Option<f64>) -> Profile {
    let page = 4096u64;
    // A 4 GiB process whose writes saturate at 1 GiB: measured unique pages per window.
    let growth = [
        (0.1, 0.05),
        (0.5, 0.2),
        (1.0, 0.35),
        (2.0, 0.55),
        (5.0, 0.85),
        (10.0, 1.0),
    ]
    .iter()
    .map(|&(t, gib)| GrowthPoint {
        window_s: t,
        unique_pages: gib * 262_144.0,
        windows: 10,
    })
    .collect();
    Profile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: "test".into(),
        created_unix_s: 0,
        target: TargetInfo {
            pid: 4242,
            comm: "writer".into(),
            rss_bytes: 2 << 30,
            writable_bytes: 4 << 30,
            shared_writable_bytes: 0,
            page_size: page,
        },
        backend: "fault".into(),
        caveats: vec!["written by the test".into()],
        duration_s: 30.0,
        interval_s: 0.1,
        dirty: DirtyRate {
            bytes_per_sec: 0.5 * 1073741824.0,
            pages_per_sec: 0.5 * 262_144.0,
            ci95_bytes_per_sec: None,
            peak_bytes_per_sec: 0.6 * 1073741824.0,
        },
        growth,
        threads: vec![
            ThreadShare {
                tid: 1,
                comm: "w1".into(),
                pages: 600,
                share: 0.6,
                busy_share: busy,
            },
            ThreadShare {
                tid: 2,
                comm: "w2".into(),
                pages: 400,
                share: 0.4,
                busy_share: busy,
            },
        ],
        thread_counts: Default::default(),
        busy_share: busy,
        zero_page_share: Some(0.25),
        guest: None,
        link: None,
    }
}

#[test]
fn reads_a_profile_written_by_the_test() {
    let dir = std::env::temp_dir().join(format!("migtrace-predict-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.json");
    std::fs::write(
        &path,
        serde_json::to_string(&sample_profile(Some(1.0))).unwrap(),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let v = json(&migtrace(&[
        "--link",
        "1g,10g,40g",
        "--profile",
        p,
        "--json",
    ]));
    assert!(v["input"]["source"].as_str().unwrap().contains("profile"));
    assert_eq!(v["input"]["mem_bytes"], 4294967296.0);
    assert_eq!(v["input"]["zero_page_share"], 0.25);
    assert_eq!(v["input"]["writers"].as_array().unwrap().len(), 2);
    assert!(v["caveats"].to_string().contains("written by the test"));
    let rs = v["results"].as_array().unwrap();
    // Bulk pass: 3 GiB of data pages with headers + 1 GiB of zero pages at 9 bytes each.
    let bulk = 786_432.0 * 4104.0 + 262_144.0 * 9.0;
    for r in rs {
        let b = r["passes"][0]["bytes"].as_f64().unwrap();
        assert!((b - bulk).abs() < 1.0, "{b} vs {bulk}");
    }
    // 1 Gbit/s (117.5 MB/s goodput) against ~0.5 GiB/s of dirtying: no convergence, and
    // with fully busy writers auto-converge is the recommendation. 40g converges.
    assert_eq!(rs[0]["converges"], false);
    assert_eq!(rs[0]["recommendation"]["kind"], "auto-converge");
    assert_eq!(rs[2]["converges"], true);
    // The same profile with paced writers (1 % busy): a CPU throttle cannot help, so the
    // recommendation moves to dirty-limit.
    std::fs::write(
        &path,
        serde_json::to_string(&sample_profile(Some(0.01))).unwrap(),
    )
    .unwrap();
    let v = json(&migtrace(&["--link", "1g", "--profile", p, "--json"]));
    assert_eq!(v["results"][0]["recommendation"]["kind"], "dirty-limit");
    // A foreign file is a usage error.
    std::fs::write(&path, r#"{"format":"other","version":1}"#).unwrap();
    let o = migtrace(&["--link", "1g", "--profile", p]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("expected \"migtrace-profile\""),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_bare_zero_is_judged_like_a_zero_with_a_unit() {
    // Zero dirtying needs no unit: the same as 0B/s.
    let bare = migtrace(&[
        "--link",
        "10g",
        "--mem",
        "1GiB",
        "--dirty-rate",
        "0",
        "--json",
    ]);
    let unit = migtrace(&[
        "--link",
        "10g",
        "--mem",
        "1GiB",
        "--dirty-rate",
        "0B/s",
        "--json",
    ]);
    assert_eq!(json(&bare), json(&unit));
    // Zero memory, working set, link or downtime is rejected as zero, not for its missing
    // unit (the hint would suggest 0GiB, 0g or 0s, which are rejected too).
    let base = ["--mem", "1GiB", "--dirty-rate", "1GB/s", "--link", "10g"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    assert_usage_error(
        &["--link", "10g", "--mem", "0", "--dirty-rate", "1GB/s"],
        "--mem: memory size \"0\" must be more than zero",
    );
    assert_usage_error(&with(&["--wws", "0"]), "must be more than zero");
    assert_usage_error(
        &["--link", "0", "--mem", "1GiB", "--dirty-rate", "1GB/s"],
        "must be more than zero",
    );
    assert_usage_error(
        &with(&["--downtime", "0"]),
        "--downtime: must be more than zero",
    );
    // A non-zero bare number still gets the hint, and the hint parses.
    assert_usage_error(&with(&["--wws", "512"]), "write e.g. 512GiB or 512MiB");
    let o = migtrace(&with(&["--wws", "512MiB"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn policy_throttle_and_pattern_spellings() {
    let base = [
        "--link",
        "10g",
        "--mem",
        "1GiB",
        "--dirty-rate",
        "10MB/s",
        "--json",
    ];
    let policy_of = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(extra);
        json(&migtrace(&v))["input"]["policy"].clone()
    };
    for (typed, policy) in [
        ("kvm", "qemu"),
        ("QEMU", "qemu"),
        ("vmware", "vmotion"),
        ("xen-sr", "xen-sr"),
        ("Hyper-V", "hyperv"),
    ] {
        assert_eq!(policy_of(&["--policy", typed]), policy, "{typed}");
    }
    for typed in ["autoconverge", "Auto-Converge", "cpu", "dirtylimit", "none"] {
        let o = migtrace(&[&base[..], &["--throttle", typed]].concat());
        assert!(o.status.success(), "{typed}: {}", stderr(&o));
    }
    let o = migtrace(&[&base[..], &["--pattern", "sequential"]].concat());
    assert_eq!(json(&o)["input"]["wws_bytes"], 1073741824.0);
    assert_usage_error(
        &[&base[..], &["--pattern", "zigzag"]].concat(),
        "unknown pattern \"zigzag\" (expected random or sweep)",
    );
}
