//! Golden master of `migtrace predict`: the exact output (JSON for most, the text report for
//! some) of a fixed grid of scenarios, recorded from the binary into
//! `tests/fixtures/predict_golden.jsonl`, one `{"args": [...], "stdout": "..."}` per line.
//! The test replays every line and demands byte-identical output, so a refactor of the model
//! or the sinks cannot change a number, a word or the order of JSON keys unnoticed.
//!
//! After an intended change of output, record again (and review the diff of the fixture):
//!
//! ```text
//! MIGTRACE_GOLDEN_RECORD=1 cargo test -p migtrace --test predict_golden
//! ```
//!
//! The binary runs with the package directory as its working directory, so that the profile
//! paths in the arguments (and in the `source` field of the output) stay relative and stable.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Case {
    args: Vec<String>,
    stdout: String,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture() -> PathBuf {
    manifest_dir().join("tests/fixtures/predict_golden.jsonl")
}

fn run(args: &[String]) -> Result<String, String> {
    let o = Command::new(env!("CARGO_BIN_EXE_migtrace"))
        .current_dir(manifest_dir())
        .arg("predict")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run migtrace: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).trim_end()
        ));
    }
    String::from_utf8(o.stdout).map_err(|e| format!("stdout is not UTF-8: {e}"))
}

/// Runs `f` on every item on a few threads (each run is its own process), results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(&items[i]);
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

fn argv(parts: &[&[&str]]) -> Vec<String> {
    parts
        .iter()
        .flat_map(|p| p.iter())
        .map(|s| s.to_string())
        .collect()
}

/// The recorded grid. Only used when recording: the test replays the fixture's own args.
fn scenarios() -> Vec<Vec<String>> {
    let plain: &[&[&str]] = &[
        // Converges on every link.
        &["--mem", "16GiB", "--dirty-rate", "1GB/s", "--wws", "16GiB"],
        // Does not converge on 10g without a throttle.
        &[
            "--mem",
            "64GiB",
            "--dirty-rate",
            "2GB/s",
            "--wws",
            "16GiB",
            "--vcpus",
            "8",
        ],
        // A slow link to a small guest.
        &["--mem", "4GiB", "--dirty-rate", "5MB/s", "--wws", "2GiB"],
        // A big guest, no --wws.
        &["--mem", "128GiB", "--dirty-rate", "1.5GB/s"],
        // Nothing dirtied (zero with a unit).
        &["--mem", "8GiB", "--dirty-rate", "0B/s"],
        // Dirtying faster than most links, half-busy vCPUs.
        &[
            "--mem",
            "32GiB",
            "--dirty-rate",
            "3GB/s",
            "--wws",
            "32GiB",
            "--vcpus",
            "4",
            "--busy",
            "0.5",
        ],
    ];
    let policies: &[&[&str]] = &[
        &["--policy", "qemu"],
        &["--policy", "qemu", "--throttle", "auto-converge"],
        &[
            "--policy",
            "qemu",
            "--throttle",
            "auto-converge",
            "--throttle-pct",
            "70",
        ],
        &[
            "--policy",
            "qemu",
            "--throttle",
            "auto-converge",
            "--tailslow",
        ],
        &["--policy", "qemu", "--throttle", "dirty-limit"],
        &[
            "--policy",
            "qemu",
            "--throttle",
            "dirty-limit",
            "--dirty-limit",
            "50MiB/s",
        ],
        &["--policy", "qemu", "--throttle", "sdps"],
        &[
            "--policy",
            "qemu",
            "--throttle",
            "sdps",
            "--throttle-pct",
            "30",
        ],
        &["--policy", "vmotion"],
        &["--policy", "vmotion", "--throttle", "sdps"],
        &[
            "--policy",
            "vmotion",
            "--throttle",
            "sdps",
            "--throttle-pct",
            "80",
        ],
        &["--policy", "xen"],
        &["--policy", "xen", "--throttle", "sdps"],
        &["--policy", "xen-sr"],
        &[
            "--policy",
            "xen-sr",
            "--throttle",
            "sdps",
            "--throttle-pct",
            "40",
        ],
        &["--policy", "hyperv"],
        &["--policy", "hyperv", "--throttle", "sdps"],
    ];
    let links: &[&str] = &["--link", "1g,10g,40g"];
    let json: &[&str] = &["--json"];
    let mut v = Vec::new();
    for w in plain {
        for p in policies {
            v.push(argv(&[links, w, p, json]));
        }
    }
    // Orchestrator limits and deadlines, per policy family.
    let limits: &[&[&str]] = &[
        &["--kubevirt"],
        &["--nova"],
        &["--deadline", "15m"],
        &["--deadline", "30s"],
    ];
    for w in &plain[..3] {
        for l in limits {
            for p in [&policies[0], &policies[8], &policies[11], &policies[1]] {
                v.push(argv(&[&["--link", "100m,1g,10g"], w, p, l, json]));
            }
        }
    }
    // The sweeping writer.
    for w in plain {
        for p in [&policies[0], &policies[1]] {
            v.push(argv(&[links, w, &["--pattern", "sweep"], p, json]));
        }
    }
    // Single modifiers on the non-converging guest.
    let mods: &[&[&str]] = &[
        &["--busy", "0.2"],
        &["--zero-share", "0.3"],
        &["--efficiency", "0.99"],
        &["--max-passes", "5"],
        &["--max-passes", "5", "--policy", "vmotion"],
        &["--max-passes", "3", "--policy", "hyperv"],
        &["--downtime", "100ms,1s"],
        &["--downtime", "50ms", "--policy", "vmotion"],
        &["--explain"],
        &["--pattern", "sequential"],
        &["--policy", "kvm"],
        &["--policy", "Hyper-V"],
        &["--throttle", "cpu"],
        &["--throttle", "autoconverge"],
        &["--throttle", "dirtylimit"],
        &["--busy", "1", "--zero-share", "0"],
    ];
    for m in mods {
        v.push(argv(&[links, plain[1], m, json]));
    }
    // Link and size spellings.
    v.push(argv(&[
        &["--link", "25GbE", "--link", "1.25GB/s,100Gb/s,400gbps"],
        &[
            "--mem",
            "128GB",
            "--dirty-rate",
            "800MiB/s",
            "--wws",
            "512MiB",
        ],
        json,
    ]));
    v.push(argv(&[
        &["--link", "1000m,10gbit"],
        &["--mem", "512MiB", "--dirty-rate", "1GiBps"],
        json,
    ]));
    // The simulation horizon (a day) runs out before the bulk pass ends.
    for p in [&policies[0], &policies[8], &policies[3]] {
        v.push(argv(&[
            &["--link", "1m,100m"],
            &["--mem", "128GiB", "--dirty-rate", "1MB/s"],
            p,
            json,
        ]));
    }
    // --max-passes forcing the stop on QEMU and vMotion, and a migration that would complete
    // just past its deadline (48.2 s against 48.1 s).
    let slow: &[&str] = &[
        "--link",
        "10g",
        "--mem",
        "16GiB",
        "--dirty-rate",
        "1GB/s",
        "--wws",
        "16GiB",
    ];
    let ends: &[&[&str]] = &[
        &["--max-passes", "3"],
        &["--max-passes", "2", "--policy", "vmotion"],
        &["--max-passes", "4", "--policy", "xen"],
        &["--deadline", "48100ms"],
        &["--deadline", "48100ms", "--throttle", "auto-converge"],
    ];
    for e in ends {
        v.push(argv(&[slow, e, json]));
        v.push(argv(&[slow, e]));
    }
    // Measured profiles.
    let profiles = [
        "tests/fixtures/profiles/busy-vm.json",
        "tests/fixtures/profiles/paced.json",
        "tests/fixtures/profiles/flat.json",
        "tests/fixtures/profiles/short-curve.json",
    ];
    let pmods: &[&[&str]] = &[
        &[],
        &["--throttle", "auto-converge"],
        &["--throttle", "dirty-limit"],
        &["--policy", "vmotion"],
        &["--policy", "xen"],
        &["--policy", "hyperv", "--throttle", "sdps"],
        &["--mem", "2GiB"],
        &["--busy", "0.5"],
        &["--vcpus", "4"],
        &["--zero-share", "0.1"],
        &["--kubevirt"],
        &["--downtime", "100ms,1s", "--nova"],
    ];
    for p in profiles {
        for m in pmods {
            v.push(argv(&[&["--link", "1g,10g,40g", "--profile", p], m, json]));
        }
    }
    // The text report: every policy and throttle, the profiles, --explain.
    for p in policies {
        v.push(argv(&[links, plain[1], p]));
    }
    for w in [plain[0], plain[2], plain[4], plain[5]] {
        v.push(argv(&[&["--link", "10g"], w, &["--kubevirt"]]));
    }
    v.push(argv(&[
        links,
        plain[0],
        &["--downtime", "100ms,1s", "--explain"],
    ]));
    v.push(argv(&[links, plain[3], &["--deadline", "10m"]]));
    v.push(argv(&[&["--link", "10g"], plain[1], &["--nova"]]));
    for p in profiles {
        v.push(argv(&[&["--link", "1g,10g,40g", "--profile", p]]));
        v.push(argv(&[
            &["--link", "10g", "--profile", p],
            &["--throttle", "dirty-limit", "--explain"],
        ]));
    }
    // --stop-copy-rate: the link as QEMU's max-bandwidth cap and the stop-and-copy at the
    // loopback's rate, on profiles the back-test measured (docs/backtest.md): the random
    // writer, and the CPU-bound one watched at 1 s (its curve flat from the first window,
    // which the report notes) and at 100 ms.
    let capped: &[&str] = &[
        "--efficiency",
        "1",
        "--downtime",
        "300ms",
        "--stop-copy-rate",
        "2226MB/s",
    ];
    let random = "tests/fixtures/profiles/tcg-random-40mib.json";
    for out in [&[][..], json] {
        v.push(argv(&[
            &["--link", "128MiB/s,64MiB/s,32MiB/s", "--profile", random],
            capped,
            out,
        ]));
        for p in [
            "tests/fixtures/profiles/tcg-cpu-bound-1s.json",
            "tests/fixtures/profiles/tcg-cpu-bound-100ms.json",
        ] {
            v.push(argv(&[
                &["--link", "48MiB/s", "--profile", p],
                capped,
                &["--throttle", "auto-converge"],
                out,
            ]));
        }
    }
    // A grid of links with one stop-and-copy rate; a vMotion switchover too long for its
    // 100 s at 1 Gbit/s that fits at 100 Gbit/s.
    v.push(argv(&[
        links,
        plain[1],
        &["--stop-copy-rate", "100g"],
        json,
    ]));
    v.push(argv(&[
        &[
            "--link",
            "1g",
            "--stop-copy-rate",
            "100g",
            "--policy",
            "vmotion",
        ],
        &[
            "--mem",
            "256GiB",
            "--dirty-rate",
            "2GB/s",
            "--wws",
            "200GiB",
        ],
        json,
    ]));
    v
}

fn record(path: &Path) {
    let cases = scenarios();
    let outs = par_map(&cases, |a| run(a));
    let mut text = String::new();
    for (args, out) in cases.into_iter().zip(outs) {
        let stdout = out.unwrap_or_else(|e| panic!("recording {args:?}: {e}"));
        text.push_str(&serde_json::to_string(&Case { args, stdout }).unwrap());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// The first line where `want` and `got` differ, with a little context, for the message.
fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let i = (0..w.len().max(g.len()))
        .find(|&i| w.get(i) != g.get(i))
        .unwrap_or(0);
    let from = i.saturating_sub(2);
    let show = |v: &[&str]| {
        v.iter()
            .enumerate()
            .skip(from)
            .take(i + 3 - from)
            .map(|(n, l)| format!("      {:>5}: {l}", n + 1))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        "first difference at line {} ({} lines expected, {} got)\n    expected:\n{}\n    got:\n{}",
        i + 1,
        w.len(),
        g.len(),
        show(&w),
        show(&g)
    )
}

#[test]
fn predict_output_matches_the_golden_master() {
    let path = fixture();
    if std::env::var_os("MIGTRACE_GOLDEN_RECORD").is_some() {
        record(&path);
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let cases: Vec<Case> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("fixture line {}: {e}", i + 1))
        })
        .collect();
    assert!(cases.len() >= 200, "only {} scenarios", cases.len());
    let outs = par_map(&cases, |c| run(&c.args));
    let mut failures = Vec::new();
    for (n, (c, got)) in cases.iter().zip(outs).enumerate() {
        let why = match got {
            Ok(got) if got == c.stdout => continue,
            Ok(got) => first_difference(&c.stdout, &got),
            Err(e) => e,
        };
        failures.push(format!(
            "scenario {} (fixture line {}): migtrace predict {}\n  {why}",
            n + 1,
            n + 1,
            c.args.join(" ")
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ from the golden master:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
