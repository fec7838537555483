//! Exports, end to end: `watch --listen` scraped by a real Prometheus server (Debian's
//! `prometheus`, run directly with a temporary config and storage) and checked through its
//! HTTP API and `promtool check metrics`; the exporter's targets coming and going; the
//! HdrHistogram log read back with the crate's reader; every plot kind parsed as SVG; the
//! Grafana dashboard's metric names against what is served.
//!
//! The Prometheus tests fail (never skip) under CI=true when `prometheus` or `promtool` is
//! missing; `cargo xtask test` installs them.
use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use migtrace_e2e::*;
use serde_json::Value;

/// A free loopback port (bound, read and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("migtrace-export-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A plain HTTP/1.0 GET: (status line, headers and body as one string, body).
fn http_get(port: u16, path: &str, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

/// Waits until `port` serves `path` with 200.
fn wait_http(port: u16, path: &str, within: Duration) {
    let t = Instant::now();
    while t.elapsed() < within {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http_get(port, path, None).0.contains(" 200")
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("nothing served http://127.0.0.1:{port}{path} within {within:?}");
}

/// `prometheus`/`promtool` on PATH; a failure under CI, a skip (None) otherwise.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    });
    if found.is_none() {
        let msg =
            format!("{name} is missing: apt-get install -y prometheus (cargo xtask test does)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A Prometheus server scraping 127.0.0.1:`target` every second; killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(bin: &Path, dir: &Path, target: u16) -> Prometheus {
        let cfg = dir.join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: migtrace\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        wait_http(port, "/-/ready", Duration::from_secs(30));
        Prometheus { child, port }
    }

    /// An instant query: the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        let (head, body) = http_get(
            self.port,
            &format!("/api/v1/query?query={}", encode(q)),
            None,
        );
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{q}: {e}: {head} {body}"));
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a single-sample query result.
fn value(r: &Value) -> f64 {
    r["value"][1].as_str().unwrap().parse().unwrap()
}

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

/// promtool lints a scrape in the classic text format; OpenMetrics comes when asked for.
/// Returns the classic scrape.
fn check_scrape_formats(port: u16, promtool: &Path) -> String {
    let (_, text) = http_get(port, "/metrics", None);
    let lint = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .output_with_stdin(text.as_bytes());
    assert!(lint.0.success(), "promtool check metrics: {}", lint.1);
    let (head, om) = http_get(
        port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    );
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.trim_end().ends_with("# EOF"));
    text
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

/// Feeding a child's stdin and collecting its status and output.
trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String);
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> (std::process::ExitStatus, String) {
        let mut c = self
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input).unwrap();
        let o = c.wait_with_output().unwrap();
        let msg =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        (o.status, msg)
    }
}

/// Every metric name the Grafana dashboard queries is one that migtrace serves: in this
/// scrape, or registered and without samples in this watch (pass durations, QEMU's rate),
/// which the registry leaves out of a scrape; and the scrape serves nothing else.
fn check_dashboard(scrape: &str) {
    use migtrace::sink::prometheus::{family_names, Metrics};
    let all = Metrics::served_names();
    let scraped = family_names(scrape);
    assert!(scraped.is_subset(&all), "{scraped:?} vs {all:?}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/migtrace.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 4, "too few queries: {exprs:?}");
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                all.contains(&name),
                "the dashboard queries {name} ({e}), not served: {all:?}"
            );
        }
    }
}

/// The dashboard against the registry alone: runs without root or Prometheus.
#[test]
fn dashboard_queries_only_metrics_migtrace_serves() {
    check_dashboard("");
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

/// The `migtrace_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(p) = expr[i..].find("migtrace_") {
        let s = i + p;
        let mut e = s;
        while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
            e += 1;
        }
        out.push(expr[s..e].to_string());
        i = e;
    }
    out
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
}

#[test]
fn exporter_follows_targets_and_drops_exited_ones() {
    require_root();
    let a = Writer::steady("random", 8.0, 16, &[]);
    let b = Writer::steady("random", 8.0, 16, &[]);
    let port = free_port();
    let mut exp = Command::new(bin())
        .args([
            "exporter",
            "--backend",
            "sample",
            "--rescan",
            "500ms",
            "--listen",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--pid", &a.pid().to_string(), "--pid", &b.pid().to_string()])
        .spawn()
        .unwrap();
    wait_http(port, "/metrics", Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(4));
    let (_, m) = http_get(port, "/metrics", None);
    for p in [a.pid(), b.pid()] {
        let l = format!("migtrace_intervals_total{{pid=\"{p}\",comm=\"migtrace\",guest=\"\"}}");
        assert!(m.contains(&l), "{p} missing: {m}");
    }
    assert!(m.contains("migtrace_targets 2"), "{m}");
    let gone = a.pid();
    a.stop();
    std::thread::sleep(Duration::from_secs(3));
    let (_, m) = http_get(port, "/metrics", None);
    assert!(
        !m.contains(&format!("pid=\"{gone}\"")),
        "series of exited {gone} kept: {m}"
    );
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

/// Standard base64 (the interval log's encoding), decoded without another dependency.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 {c}"),
    } as u32;
    let clean: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c) << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
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
    let cases: [(&Path, &[&str], &[&str]); 6] = [
        (&log, &["--link", "1g"], &["time, s", "bytes/s", "link"]),
        (&log, &["--kind", "growth"], &["window, s", "unique pages"]),
        (&profile, &[], &["window, s", "unique pages"]),
        (&pred, &[], &["link, Gbit/s", "total time, s", "downtime"]),
        (&pred, &["--kind", "passes"], &["time, s", "bytes sent"]),
        (&passes, &[], &["time, s", "bytes sent"]),
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
    let port = free_port();
    let mut exp = Command::new(bin())
        .args([
            "exporter",
            "--qemu",
            "--backend",
            "sample",
            "--rescan",
            "1s",
        ])
        .arg(format!("--listen=127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    wait_http(port, "/metrics", Duration::from_secs(5));
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
    std::thread::sleep(Duration::from_secs(4));
    let (_, m) = http_get(port, "/metrics", None);
    assert!(
        !m.contains(&format!("pid=\"{pid}\"")),
        "series of exited QEMU kept: {m}"
    );
    signal(exp.id(), libc::SIGTERM);
    assert!(exp.wait().unwrap().success());
}
