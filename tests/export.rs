//! Exports, end to end: `watch --listen` scraped by a real Prometheus server (Debian's
//! `prometheus`, run directly with a temporary config and storage) and checked through its
//! HTTP API and `promtool check metrics`; the exporter's targets coming and going; the
//! HdrHistogram log read back with the crate's reader; every plot kind parsed as SVG; the
//! Grafana dashboard's metric names against what is served.
//!
//! The Prometheus tests fail (never skip) under CI=true when `prometheus` or `promtool` is
//! missing; `cargo xtask test` installs them.

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use migtrace_e2e::prom::*;
use migtrace_e2e::*;
use serde_json::Value;

/// Truth for the random writer: N (1 - e^(-w/N)) unique pages per second, in bytes.
fn random_truth_bytes(pages: f64, writes_per_sec: f64) -> f64 {
    pages * (1.0 - (-writes_per_sec / pages).exp()) * 4096.0
}

#[test]
fn prometheus_scrapes_watch_histograms_and_rate() {
    require_root();
    let (Some(prom), Some(promtool)) = (tool("prometheus"), tool("promtool")) else {
        return;
    };
    let dir = temp_dir("prom");
    let w = Writer::steady("random", 32.0, 64, &[]);
    let pid = w.pid().to_string();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let watch = Watch::start(&[
        "--pid",
        &pid,
        "--duration",
        "16s",
        "--listen",
        &listen,
        "--predict-link",
        "1g",
    ]);
    wait_http(port, "/metrics", Duration::from_secs(5));
    let server = Prometheus::start(&prom, &dir, port);
    std::thread::sleep(Duration::from_secs(9));

    let sel = format!("{{pid=\"{pid}\"}}");
    let count = check_rate_histogram(&server, &sel);
    let rate = server.query(&format!(
        "avg_over_time(migtrace_dirty_rate_bytes_per_second{sel}[6s])"
    ));
    let measured = value(&rate[0]);
    // The model on the live rate: at least one bulk pass of the measured memory.
    let total = value(&server.query(&format!("migtrace_predicted_total_time_seconds{sel}"))[0]);
    let writable = value(&server.query(&format!("migtrace_target_writable_bytes{sel}"))[0]);
    assert!(
        total >= writable / (1e9 / 8.0 * 0.94) * 0.99,
        "{total} s for {writable} bytes"
    );
    let verdict = value(&server.query(&format!("migtrace_predicted_converges{sel}"))[0]);
    assert!(verdict == 0.0 || verdict == 1.0);

    let text = check_scrape_formats(port, &promtool);
    check_dashboard(&text);
    // The dashboard's watch panels, queried as Grafana would, get data.
    check_panels_have_data(
        &server,
        &[
            "Dirty rate (last interval)",
            "Dirty rate p50",
            "Dirty-rate distribution",
            "Unique pages per interval",
            "Dropped events",
            "Writable memory",
            "Targets watched",
            "Predicted migration time",
            "Predicted to converge",
        ],
    );

    let done = w.stop();
    let (_, s, st) = watch.finish();
    assert!(st.success());
    let truth = random_truth_bytes(64.0 * 256.0, done["pages_per_sec"].as_f64().unwrap());
    let err = (measured - truth) / truth;
    eprintln!(
        "prometheus: backend {}, rate gauge {:.1} MiB/s vs truth {:.1} MiB/s ({:+.1} %), histogram count {}",
        s["backend"],
        measured / 1048576.0,
        truth / 1048576.0,
        err * 100.0,
        count
    );
    assert!(err.abs() <= 0.20, "rate {measured} vs truth {truth}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The scrape is up and the dirty-rate and pages histograms arrived whole: returns the
/// dirty-rate histogram's count.
fn check_rate_histogram(server: &Prometheus, sel: &str) -> f64 {
    let up = server.query("up{job=\"migtrace\"}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(value(&up[0]), 1.0, "{up:?}");
    let count = server.query(&format!(
        "migtrace_interval_dirty_rate_bytes_per_second_count{sel}"
    ));
    assert!(value(&count[0]) >= 2.0, "{count:?}");
    let buckets = server.query(&format!(
        "migtrace_interval_dirty_rate_bytes_per_second_bucket{sel}"
    ));
    assert_eq!(buckets.len(), 17, "16 buckets and +Inf: {buckets:?}");
    let mut by_le: Vec<(f64, f64)> = buckets
        .iter()
        .map(|b| {
            (
                b["metric"]["le"].as_str().unwrap().parse().unwrap(),
                value(b),
            )
        })
        .collect();
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(
        by_le.windows(2).all(|p| p[0].1 <= p[1].1),
        "buckets not cumulative: {by_le:?}"
    );
    assert_eq!(by_le.last().unwrap().1, value(&count[0]));
    let pages = server.query(&format!("migtrace_interval_dirty_pages_count{sel}"));
    assert!(value(&pages[0]) >= 2.0, "{pages:?}");
    value(&count[0])
}

/// The dashboard against the registry alone: runs without root or Prometheus.
#[test]
fn dashboard_queries_only_metrics_migtrace_serves() {
    check_dashboard("");
}

#[test]
fn bad_listen_or_hdr_log_is_a_usage_error_before_watching() {
    let me = std::process::id().to_string();
    for (listen, any, want) in [
        ("0.0.0.0:9464", false, "--listen-any"),
        ("localhost", false, "ADDR:PORT"),
        ("127.0.0.1:99999", false, "ADDR:PORT"),
    ] {
        let mut args = vec!["watch", "--pid", &me, "--listen", listen];
        if any {
            args.push("--listen-any");
        }
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{listen}: {err}");
        assert!(err.contains(want), "{listen}: {err}");
    }
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = busy.local_addr().unwrap().to_string();
    let o = run(&["watch", "--pid", &me, "--listen", &taken]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot bind"));
    let o = run(&[
        "watch",
        "--pid",
        &me,
        "--hdr-log",
        "/nonexistent/dir/x.hlog",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--hdr-log"));
    // `passes` checks the same before it connects (any existing path passes as --qmp here).
    for (flag, value, want) in [
        ("--listen", "0.0.0.0:9465", "--listen-any"),
        ("--listen", taken.as_str(), "cannot bind"),
        ("--hdr-log", "/nonexistent/dir/p.hlog", "--hdr-log"),
        ("--linger", "soon", "--linger"),
    ] {
        let o = run(&["passes", "--qmp", "/dev/null", flag, value]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(want), "{flag} {value}: {err}");
    }
}

/// `exporter --backend sample --rescan RESCAN` with `targets` on a free loopback port, once
/// it serves /metrics. The `sample` backend only reads memory, so other processes on a
/// shared machine are not disturbed (softdirty would clear their bits).
fn spawn_exporter(rescan: &str, targets: &[&str]) -> (std::process::Child, u16) {
    let port = free_port();
    let exp = Command::new(bin())
        .args(["exporter", "--backend", "sample", "--rescan", rescan])
        .arg(format!("--listen=127.0.0.1:{port}"))
        .args(targets)
        .spawn()
        .unwrap();
    wait_http(port, "/metrics", Duration::from_secs(5));
    (exp, port)
}

/// After `after`, the exporter serves no series of the exited `pid`; returns the scrape.
fn assert_forgotten(port: u16, pid: u32, after: Duration) -> String {
    std::thread::sleep(after);
    let (_, m) = http_get(port, "/metrics", None);
    assert!(
        !m.contains(&format!("pid=\"{pid}\"")),
        "series of exited {pid} kept: {m}"
    );
    m
}

#[test]
fn exporter_follows_targets_and_drops_exited_ones() {
    require_root();
    let a = Writer::steady("random", 8.0, 16, &[]);
    let b = Writer::steady("random", 8.0, 16, &[]);
    let (a_pid, b_pid) = (a.pid().to_string(), b.pid().to_string());
    let (mut exp, port) = spawn_exporter("500ms", &["--pid", &a_pid, "--pid", &b_pid]);
    std::thread::sleep(Duration::from_secs(4));
    let (_, m) = http_get(port, "/metrics", None);
    for p in [a.pid(), b.pid()] {
        let l = format!("migtrace_intervals_total{{pid=\"{p}\",comm=\"migtrace\",guest=\"\"}}");
        assert!(m.contains(&l), "{p} missing: {m}");
    }
    assert!(m.contains("migtrace_targets 2"), "{m}");
    let gone = a.pid();
    a.stop();
    let m = assert_forgotten(port, gone, Duration::from_secs(3));
    assert!(m.contains(&format!("pid=\"{}\"", b.pid())));
    assert!(m.contains("migtrace_targets 1"), "{m}");
    signal(exp.id(), libc::SIGTERM);
    let t = Instant::now();
    let st = loop {
        if let Some(st) = exp.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "exporter did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(st.success(), "{st}");
}

/// A `watch --json --backend sample` of a random writer, with `extra` flags: its lines.
fn short_watch(extra: &[&str]) -> Vec<Value> {
    let w = Writer::steady("random", 32.0, 64, &[]);
    let pid = w.pid().to_string();
    let mut args = vec!["--pid", &pid, "--backend", "sample", "--duration", "4s"];
    args.extend_from_slice(extra);
    let watch = Watch::start(&args);
    let (mut lines, s, st) = watch.finish();
    assert!(st.success());
    lines.push(s);
    lines
}

/// A log the user asked for that cannot be written fails the watch (issue 17: `--hdr-log
/// /dev/full` printed a warning and exited 0 with nothing written). The summary still comes
/// first, then one error line and exit 1.
#[test]
fn an_hdr_log_that_cannot_be_written_fails_the_watch() {
    require_root();
    let w = Writer::steady("random", 32.0, 64, &[]);
    let watch = w.watch(
        "sample",
        &[
            "--duration",
            "2s",
            "--interval",
            "500ms",
            "--hdr-log",
            "/dev/full",
        ],
    );
    let (_, s, st) = watch.finish();
    assert_eq!(st.code(), Some(1), "{st}: {s}");
    assert_eq!(s["type"], "summary", "the summary is still written: {s}");
    assert!(
        st.stderr.contains("--hdr-log") && st.stderr.lines().count() == 1,
        "{}",
        st.stderr
    );
}

#[test]
fn hdr_log_reads_back_with_the_interval_rates() {
    use hdrhistogram::serialization::{interval_log::IntervalLogIterator, Deserializer};
    require_root();
    let dir = temp_dir("hdr");
    let log = dir.join("rate.hlog");
    let lines = short_watch(&["--hdr-log", log.to_str().unwrap()]);
    let rates: Vec<f64> = lines
        .iter()
        .filter(|l| l["type"] == "interval" && l["partial"] != true)
        .map(|l| l["dirty_bytes_per_sec"].as_f64().unwrap())
        .collect();
    let text = std::fs::read(&log).unwrap();
    let mut got = Vec::new();
    for e in IntervalLogIterator::new(&text) {
        let e = e.unwrap_or_else(|e| panic!("bad log entry: {e:?}"));
        if let hdrhistogram::serialization::interval_log::LogEntry::Interval(h) = e {
            assert_eq!(h.tag().map(|t| t.as_str()), Some("dirty_rate"));
            let raw = base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                Deserializer::new().deserialize(&mut &raw[..]).unwrap();
            assert_eq!(hist.len(), 1);
            got.push(hist.max() as f64);
        }
    }
    assert_eq!(got.len(), rates.len(), "{got:?} vs {rates:?}");
    for (g, r) in got.iter().zip(&rates) {
        assert!((g - r).abs() <= r * 0.002 + 1.0, "{g} vs {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks one SVG: it parses, has the axis names and a series, and no NaN.
fn check_svg(path: &Path, words: &[&str]) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(!text.contains("NaN"), "{}: NaN", path.display());
    let doc =
        roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let texts: String = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("|");
    for w in words {
        assert!(texts.contains(w), "{}: no {w:?} in {texts}", path.display());
    }
    let marks = doc
        .descendants()
        .filter(|n| {
            n.has_tag_name("polyline") || n.has_tag_name("rect") || n.has_tag_name("circle")
        })
        .count();
    assert!(marks > 2, "{}: no series drawn", path.display());
}

#[test]
fn plots_render_each_kind_as_svg() {
    require_root();
    let dir = temp_dir("plot");
    let profile = dir.join("w.profile.json");
    let lines = short_watch(&["--profile-out", profile.to_str().unwrap()]);
    let log = dir.join("watch.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let o = run(&[
        "predict",
        "--profile",
        profile.to_str().unwrap(),
        "--link",
        "1g,10g,25g",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pred = dir.join("predict.json");
    std::fs::write(&pred, &o.stdout).unwrap();
    let passes = dir.join("passes.json");
    std::fs::write(&passes, r#"{"passes":[{"index":1,"start_s":0,"duration_s":2.5,"bytes":3e9},{"index":2,"start_s":2.5,"duration_s":0.5,"bytes":4e8}]}"#).unwrap();
    // A passes report with its back-test (`passes --profile`): the model's passes beside.
    let compared = dir.join("passes-backtest.json");
    std::fs::write(&compared, r#"{"passes":[{"index":1,"start_s":0.01,"duration_s":2.5,"bytes":3e9},{"index":2,"start_s":2.51,"duration_s":0.5,"bytes":4e8},{"index":3,"start_s":3.01,"duration_s":0.03,"bytes":2e7,"stop_copy":true}],
        "backtest":{"pairs":[{"index":1,"predicted_duration_s":2.4,"predicted_bytes":2.9e9,"actual_duration_s":2.5,"actual_bytes":3000000000},{"index":2,"predicted_duration_s":0.6,"predicted_bytes":5e8,"actual_duration_s":0.5,"actual_bytes":400000000},{"index":3,"predicted_duration_s":null,"predicted_bytes":null,"actual_duration_s":0.03,"actual_bytes":20000000}]}}"#).unwrap();
    let cases: [(&Path, &[&str], &[&str]); 7] = [
        (&log, &["--link", "1g"], &["time, s", "bytes/s", "link"]),
        (&log, &["--kind", "growth"], &["window, s", "unique pages"]),
        (&profile, &[], &["window, s", "unique pages"]),
        (&pred, &[], &["link, Gbit/s", "total time, s", "downtime"]),
        (&pred, &["--kind", "passes"], &["time, s", "bytes sent"]),
        (&passes, &[], &["time, s", "bytes sent"]),
        (
            &compared,
            &[],
            &[
                "time, s",
                "predicted pass",
                "Bytes sent per pass",
                "Duration per pass",
                "duration, s",
                "pass",
                "actual",
                "predicted",
            ],
        ),
    ];
    for (i, (input, extra, words)) in cases.iter().enumerate() {
        let out = dir.join(format!("{i}.svg"));
        let mut args = vec!["plot", input.to_str().unwrap(), "-o", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        check_svg(&out, words);
    }
    // The back-tested report: two lines (actual, predicted) in each per-pass chart, and the
    // model's passes as outlines on the timeline.
    let text = std::fs::read_to_string(dir.join("6.svg")).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    let lines = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .count();
    assert!(lines >= 4, "{lines} lines: {text}");
    let outlines = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("none"))
        .count();
    assert!(outlines >= 2, "{outlines} outlined passes");
    let o = run(&[
        "plot",
        profile.to_str().unwrap(),
        "--kind",
        "passes",
        "-o",
        "/dev/null",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not available"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `exporter --qemu` finds a real QEMU guest by name, labels it with its `-name`, and
/// drops its series when QEMU exits. The `sample` backend only reads memory, so other QEMU
/// processes on a shared machine are not disturbed (softdirty would clear their bits).
#[test]
fn exporter_finds_qemu_guests_and_labels_them_by_name() {
    use migtrace_e2e::qemu_guest::{GuestOptions, QemuGuest};
    require_root();
    let Some(mut g) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let (mut exp, port) = spawn_exporter("1s", &["--qemu"]);
    let series = format!("migtrace_dirty_rate_bytes_per_second{{pid=\"{}\",", g.pid());
    let t = Instant::now();
    let line = loop {
        let (_, m) = http_get(port, "/metrics", None);
        if let Some(l) = m.lines().find(|l| l.starts_with(&series)) {
            break l.to_string();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no series for QEMU {}: {m}",
            g.pid()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(line.contains("guest=\"migtrace-e2e\""), "{line}");
    let rate: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(rate > 0.0, "{line}");
    let pid = g.pid();
    g.kill();
    assert_forgotten(port, pid, Duration::from_secs(4));
    signal(exp.id(), libc::SIGTERM);
    assert!(exp.wait().unwrap().success());
}

/// A program any user can start under a QEMU name (issue 17: a user's `qemu-system-x86_64`
/// with a `-name` of their choosing got its own series, and fifty of them took the exporter
/// to 577 MB). `--qemu` watches only trusted owners' processes from root-only executables,
/// at most `--max-targets` targets in all (here two writers given by `--pid` and a cap of
/// one), and counts the rest in `migtrace_exporter_skipped_targets`.
#[test]
fn exporter_qemu_watches_only_trusted_qemu_processes_and_caps_them() {
    require_root();
    let base = temp_dir("fakeqemu");
    // Root-only: root's folder, mode 755; and a folder every user may write to.
    let (ok, open) = (base.join("root-only"), base.join("open"));
    for (d, mode) in [(&ok, 0o755), (&open, 0o1777)] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let exe = |d: &std::path::Path| {
        let p = d.join("qemu-system-x86_64");
        std::fs::copy("/bin/sleep", &p).unwrap();
        p
    };
    let (good, planted) = (exe(&ok), exe(&open));
    let chown = Command::new("chown")
        .args(["nobody", planted.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let start = |cmd: &mut Command| Reaped(cmd.arg("60").spawn().unwrap());
    let user_owned = start(
        Command::new("setpriv")
            .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
            .arg(&good),
    );
    let from_planted = start(&mut Command::new(&planted));
    let untrusted = [user_owned.0.id(), from_planted.0.id()];
    let writers = [
        Writer::steady("random", 4.0, 16, &[]),
        Writer::steady("random", 4.0, 16, &[]),
    ];
    let (w0, w1) = (writers[0].pid().to_string(), writers[1].pid().to_string());
    let args = ["--qemu", "--max-targets", "1", "--pid", &w0, "--pid", &w1];
    let (exp, port) = spawn_exporter("300ms", &args);
    let mut exp = Reaped(exp);
    let gauge = |m: &str, name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let t = Instant::now();
    let m = loop {
        std::thread::sleep(Duration::from_millis(500));
        let (_, m) = http_get(port, "/metrics", None);
        // Two untrusted QEMUs and at least one writer past the cap.
        if gauge(&m, "migtrace_targets") == 1.0
            && gauge(&m, "migtrace_exporter_skipped_targets") >= 3.0
        {
            break m;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{m}");
    };
    for pid in untrusted {
        assert!(
            !m.contains(&format!("pid=\"{pid}\"")),
            "untrusted {pid} watched: {m}"
        );
    }
    signal(exp.0.id(), libc::SIGTERM);
    assert!(exp.0.wait().unwrap().success());
    drop((user_owned, from_planted));
    for w in writers {
        w.stop();
    }
}
