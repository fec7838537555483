//! The model back-tested against real QEMU 7.2 migrations, as a suite. For each scenario:
//! boot a TCG guest with the in-guest writer, `watch` it (12 s at 10 % of a core; `--qmp`,
//! `--profile-out`), `predict` from that profile at the migration's bandwidth
//! (`--efficiency 1`: QEMU's max-bandwidth caps the payload) with the stop-and-copy at the
//! loopback's own rate (`--stop-copy-rate`: QEMU lifts max-bandwidth for it), then migrate
//! for real under `migtrace passes --profile`, which makes the same prediction at the start
//! and compares.
//!
//! Bounds (a noisy, shared 2-core machine): every verdict right; for the unthrottled
//! migrations that complete, the median |total-time error| <= 10 % and the worst <= 20 %,
//! and the predicted dirty-sync-count within 1 of QEMU's. The auto-converge scenario: each
//! throttle level from the same pass as QEMU's, within one; its total time is reported,
//! not bounded (docs/backtest.md: what follows at the 99 % ceiling is a random wait, and
//! the real migration's own time varied 4x from run to run). The table is printed and kept
//! in docs/backtest.md.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use migtrace::qemu::qmp::MigrationRam;
use migtrace_e2e::migration::{migrate_under_passes, Plan};
use migtrace_e2e::{
    qemu_guest::{GuestOptions, QemuGuest},
    require_root, run, Watch,
};
use serde_json::Value;

/// One scenario of the suite.
struct Scenario {
    name: &'static str,
    /// In-guest writer: MiB/s (0 = as fast as the vCPU goes) over a working set of MiB.
    writer: (f64, u64),
    /// `watch --interval`: the shortest window of the profile's growth curve. It must
    /// resolve the passes' time scale: the CPU-bound writer fills its 64 MiB in about 0.1 s,
    /// so a 1 s interval only shows the plateau (its "rate" is the working set per second).
    watch_interval: &'static str,
    /// `watch --duration`: the profile a user preparing this migration would take
    /// (docs/backtest.md, "The input"). Its growth curve must reach the longest pass
    /// (4.2 s at 64 MiB/s): past its last window the model reads it flat.
    watch_duration: &'static str,
    /// `watch --sample-cpu`: large enough for the dirty rate and the zero share to be
    /// precise; `None` keeps the default budget (and the zero share is then not held to
    /// QEMU's count, being a 1,000-page estimate).
    sample_cpu: Option<&'static str>,
    bandwidth_mib: u64,
    auto_converge: bool,
    cancel_after: Option<Duration>,
    converges: bool,
    sync_bound: i64,
}

/// One row of the table.
struct Row {
    name: &'static str,
    predicted: String,
    actual: String,
    time_error: Option<f64>,
    live_error: Option<f64>,
    syncs_diff: i64,
    /// The stream got under 90 % of max-bandwidth: the machine starved QEMU of CPU.
    starved: bool,
    throttled: bool,
    /// When the throttle first reached its peak: (model, QEMU) seconds into the migration.
    ramp: Option<(f64, f64)>,
    /// Each throttle level and the pass it first ran in: (level %, model pass, QEMU pass).
    steps: Vec<(u64, u64, u64)>,
}

fn watch_profile(g: &QemuGuest, profile: &Path, sc: &Scenario) {
    let pid = g.pid().to_string();
    let mut args = vec![
        "--pid",
        &pid,
        "--qmp",
        g.qmp_socket.to_str().unwrap(),
        "--interval",
        sc.watch_interval,
        "--duration",
        sc.watch_duration,
        "--profile-out",
        profile.to_str().unwrap(),
    ];
    if let Some(cpu) = sc.sample_cpu {
        args.extend(["--sample-cpu", cpu]);
    }
    let w = Watch::start(&args);
    let (_, s, st) = w.finish();
    assert!(st.success(), "{st}: {s}");
}

/// The profile's zero-page share against QEMU's own count of the zero pages it sent
/// (`ram.duplicate`, every pass; a page zero again when resent counts twice, which this
/// writer's random data never is). With the precise input it must agree within 2 points
/// (runs 3-4: within 0.7; the sample's 95 % interval is about ±1 point).
fn zero_share_against_qemu(sc: &Scenario, ram: &MigrationRam, prof: &Value) {
    let qemu = ram.duplicate as f64 / (ram.total as f64 / ram.page_size.max(1) as f64);
    let ours = prof["zero_page_share"].as_f64();
    eprintln!(
        "{}: QEMU sent {} normal and {} zero pages ({qemu:.3} of guest RAM zero); the profile said {ours:?}",
        sc.name, ram.normal, ram.duplicate
    );
    if sc.sample_cpu.is_some() {
        let ours = ours.expect("the profile has a zero-page share");
        assert!(
            (ours - qemu).abs() <= 0.02,
            "{}: zero share {ours:.3} against QEMU's {qemu:.3}",
            sc.name
        );
    }
}

/// What one TCP stream carries over 127.0.0.1, bytes per second: the "link" under the
/// migrations, which the stop-and-copy gets once QEMU lifts max-bandwidth. The best of
/// three 256 MiB transfers (the machine is shared; a slow one is other load, not the link).
fn loopback_rate() -> f64 {
    let once = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let rx = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1 << 20];
            while s.read(&mut buf).unwrap() > 0 {}
        });
        let mut c = TcpStream::connect(addr).unwrap();
        let buf = vec![0x5au8; 1 << 20];
        let t = Instant::now();
        for _ in 0..256 {
            c.write_all(&buf).unwrap();
        }
        drop(c);
        rx.join().unwrap();
        (256u64 << 20) as f64 / t.elapsed().as_secs_f64()
    };
    (0..3).map(|_| once()).fold(0.0, f64::max)
}

/// `migtrace predict` from the profile at the scenario's bandwidth: (verdict, passes, time).
fn predict(sc: &Scenario, profile: &Path, throttle: bool, stop_rate: &str) -> Value {
    let link = format!("{}MiB/s", sc.bandwidth_mib);
    let mut args = vec![
        "predict",
        "--json",
        "--efficiency",
        "1",
        "--downtime",
        "300ms",
    ];
    args.extend(["--link", &link, "--profile", profile.to_str().unwrap()]);
    args.extend(["--stop-copy-rate", stop_rate]);
    if throttle {
        args.extend(["--throttle", "auto-converge"]);
    }
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["results"][0].clone()
}

async fn scenario(sc: &Scenario, stop_rate: &str) -> Option<Row> {
    let opts = GuestOptions {
        writer: Some(sc.writer),
        ..GuestOptions::default()
    };
    let src = QemuGuest::boot(&opts)?;
    let dir = std::env::temp_dir().join(format!("migtrace-bt-{}-{}", std::process::id(), sc.name));
    std::fs::create_dir_all(&dir).unwrap();
    let profile = dir.join("p.json");
    watch_profile(&src, &profile, sc);
    let pred = predict(sc, &profile, sc.auto_converge, stop_rate);
    if sc.auto_converge {
        // Converges only with auto-converge: the model must say so too.
        let bare = predict(sc, &profile, false, stop_rate);
        assert_eq!(
            bare["converges"], false,
            "{}: without a throttle {bare}",
            sc.name
        );
    }
    let prof: Value = serde_json::from_slice(&std::fs::read(&profile).unwrap()).unwrap();
    eprintln!(
        "{}: profile dirty {} busy {}; predict: {} passes {:?}",
        sc.name,
        prof["dirty"],
        prof["busy_share"],
        pred["ending"],
        pred["passes"].as_array().map(|a| a
            .iter()
            .map(|p| (
                p["duration_s"].clone(),
                p["dirtied_bytes"].clone(),
                p["throttle_pct"].clone()
            ))
            .collect::<Vec<_>>())
    );
    let plan = Plan {
        bandwidth_mib: sc.bandwidth_mib,
        auto_converge: sc.auto_converge,
        profile: Some(&profile),
        cancel_after: sc.cancel_after,
        stop_copy_rate: Some(stop_rate),
    };
    let r = migrate_under_passes(&src, &plan).await;
    if let Ok(d) = std::env::var("MIGTRACE_BACKTEST_DUMP") {
        // The whole `passes` report and the profile, for the tables in docs/backtest.md.
        let stem = sc.name.replace(['/', '@', '+'], "_");
        let d = Path::new(&d);
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(&profile, d.join(format!("{stem}.profile.json"))).unwrap();
        let report = serde_json::to_string_pretty(&r.report).unwrap();
        std::fs::write(d.join(format!("{stem}.passes.json")), report).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
    let bt = &r.report["backtest"];
    eprintln!("{}: {}", sc.name, serde_json::to_string(bt).unwrap());
    if let Some(ram) = &r.qemu.ram {
        zero_share_against_qemu(sc, ram, &prof);
    }
    // `predict` and `passes` ran the same model on the same profile and settings.
    let (t_predict, t_passes) = (
        pred["total_time_s"].as_f64().unwrap(),
        bt["predicted_total_time_s"].as_f64().unwrap(),
    );
    assert!(
        (t_predict - t_passes).abs() < 1e-9,
        "{t_predict} vs {t_passes}"
    );
    assert_eq!(
        pred["converges"].as_bool(),
        Some(sc.converges),
        "{}: {pred}",
        sc.name
    );
    let still_running = matches!(bt["actual_verdict"].as_str(), Some("active" | "cancelled"));
    if sc.auto_converge && bt["verdict_agrees"] != true && still_running {
        // Reported rather than asserted (docs/backtest.md): at its 99 % ceiling QEMU's
        // throttle on this TCG guest completes after a random number of ~1 s rounds (a
        // throttle tick that finds the last 990 ms sleep still running queues none, and
        // each dirty sync waits for the sleep), and once in seven runs it had not within
        // the 150 s bound. Still iterating is not "never": the verdict is not decided.
        eprintln!(
            "UNDECIDED {}: predicted {}, the migration was {} at the bound: {bt}",
            sc.name, bt["predicted_verdict"], bt["actual_verdict"]
        );
    } else {
        assert_eq!(bt["verdict_agrees"], true, "{}: {bt}", sc.name);
    }
    // QEMU 7.2 drops `ram` from query-migrate once a migration is cancelled.
    if let Some(ram) = &r.qemu.ram {
        assert_eq!(
            bt["actual_syncs"].as_u64(),
            Some(ram.dirty_sync_count),
            "{}",
            sc.name
        );
    }
    Some(Row {
        name: sc.name,
        predicted: if bt["predicted_verdict"] == "converges" {
            format!(
                "converges, {} syncs ({} passes + stop), {:.2} s",
                bt["predicted_syncs"], bt["model_passes"], t_passes
            )
        } else {
            bt["predicted_verdict"].as_str().unwrap().to_string()
        },
        actual: format!(
            "{}, {} syncs, {:.2} s",
            bt["actual_verdict"].as_str().unwrap(),
            bt["actual_syncs"],
            bt["actual_total_time_s"].as_f64().unwrap()
        ),
        time_error: bt["total_time_error"].as_f64(),
        live_error: bt["live_time_error"].as_f64(),
        syncs_diff: bt["syncs_diff"].as_i64().unwrap(),
        starved: achieved(&r.report) < 0.9 * (sc.bandwidth_mib << 20) as f64,
        throttled: sc.auto_converge,
        ramp: sc.auto_converge.then(|| ramp(&pred, &r.report)).flatten(),
        steps: steps(&pred, &r.report),
    })
}

/// Each throttle level reached by either, with the pass that first ran at it in the model and
/// in QEMU (the model's pass k and QEMU's pass k both end at sync k + 1); `NEVER` where one
/// of them never reached it, which fails the schedule check (a skipped or extra level).
fn steps(pred: &Value, report: &Value) -> Vec<(u64, u64, u64)> {
    let first = |passes: &Value| {
        let mut m = std::collections::BTreeMap::new();
        for p in passes.as_array().into_iter().flatten() {
            let pct = p["throttle_pct"].as_f64().unwrap_or(0.0).round() as u64;
            m.entry(pct).or_insert(p["index"].as_u64().unwrap_or(0));
        }
        m
    };
    let (model, qemu) = (first(&pred["passes"]), first(&report["passes"]));
    let levels: std::collections::BTreeSet<u64> = model
        .keys()
        .chain(qemu.keys())
        .copied()
        .filter(|&pct| pct > 0)
        .collect();
    let at = |m: &std::collections::BTreeMap<u64, u64>, pct| m.get(&pct).copied().unwrap_or(NEVER);
    levels
        .into_iter()
        .map(|pct| (pct, at(&model, pct), at(&qemu, pct)))
        .collect()
}

/// The pass of a throttle level that one side never reached.
const NEVER: u64 = u64::MAX;

/// When the throttle first reached its peak: in the model's passes and in QEMU's.
fn ramp(pred: &Value, report: &Value) -> Option<(f64, f64)> {
    let first_at_peak = |passes: &[Value], start: &dyn Fn(&Value, f64) -> f64| {
        let peak = passes
            .iter()
            .filter_map(|p| p["throttle_pct"].as_f64())
            .fold(0.0, f64::max);
        let mut t = 0.0;
        for p in passes {
            if peak > 0.0 && p["throttle_pct"].as_f64() == Some(peak) {
                return Some(start(p, t));
            }
            t += p["duration_s"].as_f64().unwrap_or(0.0);
        }
        None
    };
    let model = first_at_peak(pred["passes"].as_array()?, &|_, t| t)?;
    let qemu = first_at_peak(report["passes"].as_array()?, &|p, _| {
        p["start_s"].as_f64().unwrap_or(0.0)
    })?;
    Some((model, qemu))
}

/// Bytes per second the stream achieved while sending (setup and downtime left out).
fn achieved(r: &Value) -> f64 {
    let s = &r["summary"];
    let t = s["total_time_s"].as_f64().unwrap()
        - s["setup_time_s"].as_f64().unwrap_or(0.0)
        - s["downtime_s"].as_f64().unwrap_or(0.0);
    s["bytes"].as_f64().unwrap() / t.max(1e-3)
}

fn scenarios() -> Vec<Scenario> {
    let plain = |name, bw| Scenario {
        name,
        writer: (40.0, 128),
        watch_interval: "1s",
        watch_duration: "12s",
        sample_cpu: Some("10"),
        bandwidth_mib: bw,
        auto_converge: false,
        cancel_after: None,
        converges: true,
        sync_bound: 1,
    };
    vec![
        plain("random-40MiB/s@128MiB/s", 128),
        plain("random-40MiB/s@64MiB/s", 64),
        // A third converging bandwidth: with two, the "median" is their mean, and one noisy
        // run decides it (CI once saw +6.0 % and +14.0 %: median 10.02 %).
        plain("random-40MiB/s@96MiB/s", 96),
        Scenario {
            name: "cpu-bound@48MiB/s+auto-converge",
            writer: (0.0, 64),
            watch_interval: "100ms",
            // As in runs A-G: its time is reported, its throttle schedule held.
            watch_duration: "6s",
            sample_cpu: None,
            auto_converge: true,
            sync_bound: i64::MAX,
            ..plain("", 48)
        },
        Scenario {
            name: "random-40MiB/s@32MiB/s-never",
            cancel_after: Some(Duration::from_secs(12)),
            converges: false,
            ..plain("", 32)
        },
    ]
}

#[tokio::test]
async fn model_against_real_migrations() {
    require_root();
    let mut rows = Vec::new();
    let only = std::env::var("MIGTRACE_BACKTEST_ONLY").unwrap_or_default();
    let stop_rate = format!("{:.0}MB/s", loopback_rate() / 1e6);
    eprintln!("loopback: one TCP stream carries {stop_rate}: the stop-and-copy's link");
    for sc in scenarios().into_iter().filter(|s| s.name.contains(&only)) {
        let Some(row) = scenario(&sc, &stop_rate).await else {
            return; // no QEMU: skipped (printed)
        };
        assert!(
            row.syncs_diff.abs() <= sc.sync_bound || !sc.converges,
            "{}: syncs {:+}",
            sc.name,
            row.syncs_diff
        );
        rows.push(row);
    }
    let table = table(&rows);
    print!("{table}");
    // Kept for `cargo xtask test`, which prints it after the run: cargo hides a passing
    // test's output, and the table is the number users ask for.
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/backtest-latest.md");
    if let Err(e) = std::fs::write(&kept, &table) {
        eprintln!("cannot keep the table in {}: {e}", kept.display());
    }
    // Auto-converge: when it throttles and by how much per sync is the model's to get right,
    // and QEMU's schedule is regular (20 % at pass 4, +10 every second pass, 99 % at pass
    // 20); the time spent at the ceiling after it is not (docs/backtest.md), so the schedule
    // is held pass for pass, and the ramp's time and the total are reported.
    for r in rows.iter().filter(|r| r.throttled) {
        assert!(!r.steps.is_empty(), "{}: no throttle step in both", r.name);
        for &(pct, m, q) in &r.steps {
            assert!(
                m.abs_diff(q) <= 1,
                "{}: {pct} % from pass {m} in the model, {q} in QEMU ({:?})",
                r.name,
                r.steps
            );
        }
    }
    if !only.is_empty() {
        return;
    }
    // The time bounds hold the unthrottled runs that got their bandwidth (docs/backtest.md).
    let held: Vec<&Row> = rows.iter().filter(|r| !r.starved && !r.throttled).collect();
    if held.is_empty() {
        let warning =
            "WARNING: every completed run was CPU-starved or throttled: no time bound checked\n";
        eprint!("{warning}");
        // Into the kept table too, which `cargo xtask test` prints: a pass without a
        // checked bound must be seen.
        let _ = std::fs::write(&kept, format!("{table}{warning}"));
        return;
    }
    let total = median_and_worst(held.iter().filter_map(|r| r.time_error));
    let live = median_and_worst(held.iter().filter_map(|r| r.live_error));
    eprintln!("|total-time error| median {:.1} %, worst {:.1} % (goal 10 / 20); live phase {:.1} %, {:.1} %",
        total.0 * 100.0, total.1 * 100.0, live.0 * 100.0, live.1 * 100.0);
    // The goal on the total; the stop-and-copy runs at the loopback's rate in the model as
    // in QEMU, so the live phase is held to the same bounds.
    assert!(
        total.0 <= 0.10 && total.1 <= 0.20,
        "total-time error {total:?}"
    );
    assert!(
        live.0 <= 0.10 && live.1 <= 0.20,
        "live-phase error {live:?}"
    );
}

/// The table of predicted against actual, then the throttle steps and ramps, as text.
fn table(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    writeln!(t, "| scenario | predicted | actual | total-time error | live-phase error | syncs (pred - real) |").unwrap();
    writeln!(t, "|---|---|---|---|---|---|").unwrap();
    for r in rows {
        let e = r
            .time_error
            .map_or("-".into(), |e| format!("{:+.1} %", e * 100.0));
        let note = if r.starved && !r.throttled {
            " (stream under 90 % of max-bandwidth: CPU-starved)"
        } else {
            ""
        };
        let syncs = if r.time_error.is_some() {
            format!("{:+}", r.syncs_diff)
        } else {
            "-".into()
        };
        let live = r
            .live_error
            .map_or("-".into(), |e| format!("{:+.1} %", e * 100.0));
        writeln!(
            t,
            "| {} | {} | {} | {e}{note} | {live} | {syncs} |",
            r.name, r.predicted, r.actual
        )
        .unwrap();
    }
    for r in rows.iter().filter(|r| !r.steps.is_empty()) {
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|(pct, m, q)| format!("{pct} %: pass {m}/{q}"))
            .collect();
        writeln!(
            t,
            "{}: throttle steps (model/QEMU) {}",
            r.name,
            steps.join(", ")
        )
        .unwrap();
    }
    for r in rows {
        if let Some((m, q)) = r.ramp {
            writeln!(
                t,
                "{}: throttle at its peak from {m:.2} s in the model, {q:.2} s in QEMU ({:+.1} %)",
                r.name,
                (m - q) / q * 100.0
            )
            .unwrap();
        }
    }
    t
}

/// Median and largest absolute value.
fn median_and_worst(errors: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut e: Vec<f64> = errors.map(f64::abs).collect();
    e.sort_by(f64::total_cmp);
    let n = e.len();
    assert!(n > 0, "no time errors to bound");
    ((e[(n - 1) / 2] + e[n / 2]) / 2.0, e[n - 1])
}
