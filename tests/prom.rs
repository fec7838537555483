//! Monitoring, for `tests/export.rs` and `tests/passes.rs`: a real Prometheus server (Debian's
//! `prometheus`, run directly with a temporary config and storage) and its HTTP API,
//! `promtool check metrics`, plain HTTP to a `/metrics` endpoint, the Grafana dashboard's
//! queries, and base64 for HdrHistogram logs.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A free loopback port (bound, read and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("migtrace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A plain HTTP/1.0 GET: (status line, headers and body as one string, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> (String, String) {
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
pub fn wait_http(port: u16, path: &str, within: Duration) {
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
pub fn tool(name: &str) -> Option<PathBuf> {
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
pub struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    pub fn start(bin: &Path, dir: &Path, target: u16) -> Prometheus {
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
    pub fn query(&self, q: &str) -> Vec<Value> {
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
pub fn encode(s: &str) -> String {
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
pub fn value(r: &Value) -> f64 {
    r["value"][1].as_str().unwrap().parse().unwrap()
}

/// promtool lints a scrape in the classic text format; OpenMetrics comes when asked for.
/// Returns the classic scrape.
pub fn check_scrape_formats(port: u16, promtool: &Path) -> String {
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

/// Feeding a child's stdin and collecting its status and output.
pub trait OutputWithStdin {
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
pub fn check_dashboard(scrape: &str) {
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

pub fn collect_exprs(v: &Value, out: &mut Vec<String>) {
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
pub fn metric_names(expr: &str) -> Vec<String> {
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

/// Standard base64 (the interval log's encoding), decoded without another dependency.
pub fn base64_decode(s: &str) -> Vec<u8> {
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

/// The dashboard's panels as Grafana would query them: (title, the queries with `$pid` and
/// `$guest` set to All and `$__rate_interval` to 1m).
pub fn dashboard_panels() -> Vec<(String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/migtrace.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut exprs = Vec::new();
            collect_exprs(&p["targets"], &mut exprs);
            let exprs = exprs
                .iter()
                .map(|e| {
                    e.replace("$pid", ".*")
                        .replace("$guest", ".*")
                        .replace("$__rate_interval", "1m")
                })
                .collect();
            (p["title"].as_str().unwrap_or("").to_string(), exprs)
        })
        .collect()
}

/// Runs every query of the dashboard panels whose title contains one of `want` against the
/// real Prometheus, as Grafana would: each such panel must get at least one series with a
/// finite value. Returns how many panels were checked.
pub fn check_panels_have_data(server: &Prometheus, want: &[&str]) -> usize {
    let panels = dashboard_panels();
    let mut checked = 0;
    for w in want {
        let matching: Vec<_> = panels.iter().filter(|(t, _)| t.contains(w)).collect();
        assert!(!matching.is_empty(), "no dashboard panel titled like {w:?}");
        for (title, exprs) in matching {
            panel_has_data(server, title, exprs);
            checked += 1;
        }
    }
    checked
}

fn panel_has_data(server: &Prometheus, title: &str, exprs: &[String]) {
    let finite = exprs
        .iter()
        .flat_map(|e| server.query(e))
        .filter(|r| value_or_nan(r).is_finite())
        .count();
    assert!(finite > 0, "panel {title:?}: no data from {exprs:?}");
}

/// The value of a query result; NaN when it is not a number.
fn value_or_nan(r: &Value) -> f64 {
    r["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
