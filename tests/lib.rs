//! Helpers for the end-to-end tests: find the migtrace binary, start the built-in writer,
//! run `watch` and parse its JSON lines. The tests run the real binary against real
//! processes with real eBPF; they need root, and say so when they do not have it.
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::PathBuf,
    process::{Child, ChildStdout, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod migration;
pub mod prom;
pub mod qemu_guest;

/// The migtrace binary under test: `MIGTRACE_BIN`, else the release, else the debug build.
pub fn bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MIGTRACE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for p in ["target/release/migtrace", "target/debug/migtrace"] {
        let b = root.join(p);
        if b.is_file() {
            return b;
        }
    }
    panic!(
        "no migtrace binary: run `cargo xtask test` (or `cargo build --release -p migtrace`) first"
    );
}

/// Fails the test (never skips it) when not root: these tests load eBPF programs.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this end-to-end test loads eBPF and reads another process's memory: run it as root (cargo xtask test)");
    }
}

/// A running built-in writer.
pub struct Writer {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    pub ready: Value,
}

impl Writer {
    /// Starts `migtrace writer ARGS` and waits for its ready line.
    pub fn start(args: &[&str]) -> Writer {
        let mut cmd = Command::new(bin());
        cmd.arg("writer").args(args);
        Writer::spawn(cmd)
    }

    /// Starts a writer from a prepared command (e.g. through `setpriv`, which execs it, so
    /// the pid is the writer's) and waits for its ready line.
    pub fn spawn(mut cmd: Command) -> Writer {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start writer");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("writer ready line {line:?}: {e}"));
        assert_eq!(ready["type"], "ready");
        Writer { child, out, ready }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The writer's mapping: its `addr` and `len` from the ready line.
    pub fn mapping(&self) -> (u64, u64) {
        let get = |k: &str| {
            self.ready[k]
                .as_u64()
                .unwrap_or_else(|| panic!("ready line has no {k}"))
        };
        (get("addr"), get("len"))
    }

    /// Its mapping as `watch --range`: START-END in hex.
    pub fn range_arg(&self) -> String {
        let (addr, len) = self.mapping();
        format!("{addr:x}-{:x}", addr + len)
    }

    /// Starts `watch --json --pid <this writer> --backend BACKEND EXTRA...` (see
    /// [`Watch::start`]): the one way the tests watch a writer.
    pub fn watch(&self, backend: &str, extra: &[&str]) -> Watch {
        let pid = self.pid().to_string();
        let mut args = vec!["--pid", &pid, "--backend", backend];
        args.extend_from_slice(extra);
        Watch::start(&args)
    }

    /// Lets a `--wait-go` writer start writing.
    pub fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Starts a writer with `--pattern PATTERN --rate-mib RATE --wss-mib WSS` and `extra`.
    pub fn steady(pattern: &str, rate_mib: f64, wss_mib: u64, extra: &[&str]) -> Writer {
        let (rate, wss) = (rate_mib.to_string(), wss_mib.to_string());
        let mut args = vec!["--pattern", pattern, "--rate-mib", &rate, "--wss-mib", &wss];
        args.extend_from_slice(extra);
        Writer::start(&args)
    }

    /// Stops the writer (SIGTERM) and returns its `done` line.
    pub fn stop(self) -> Value {
        signal(self.pid(), libc::SIGTERM);
        self.wait_done()
    }

    /// Waits for the writer to exit by itself and returns its `done` line.
    pub fn wait_done(mut self) -> Value {
        let mut done = Value::Null;
        for line in self.out.by_ref().lines() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if v["type"] == "done" {
                done = v;
            }
        }
        self.child.wait().unwrap();
        done
    }
}

/// A test that fails half way must not leave its writer running (it would keep the test
/// runner's output pipe open and the machine busy).
impl Drop for Writer {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// A child process killed and reaped when dropped, so that a failed assertion leaves no
/// process behind (an exporter left running held the test's output open).
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        kill_if_running(&mut self.0);
    }
}

/// Kills `child` and reaps it, if it is still running (writers, watches, QEMU guests).
pub fn kill_if_running(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Why a wait on a QEMU `child` started at `start` gives up: `None` while it runs and
/// `timeout` has not passed, else "timed out" or "QEMU exited (its status)".
pub fn qemu_gave_up(child: &mut Child, start: Instant, timeout: Duration) -> Option<String> {
    let exited = child.try_wait().ok().flatten();
    if exited.is_none() && start.elapsed() <= timeout {
        return None;
    }
    Some(exited.map_or("timed out".to_string(), |s| format!("QEMU exited ({s})")))
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a child of this test.
    unsafe { libc::kill(pid as i32, sig) };
}

/// A `migtrace watch --json` run in the background.
pub struct Watch {
    pub child: Child,
    pub out: BufReader<ChildStdout>,
    pub start: Value,
    /// Its standard error, read as it comes by a thread of its own (a pipe left unread
    /// would stall a chatty watch), so a failed watch can say why.
    err: Option<std::thread::JoinHandle<String>>,
}

/// How a watch ended: its status and what it wrote to standard error. Displayed as the
/// status followed by the last lines of standard error, so `watch exited with {st}` says why.
pub struct Ended {
    pub status: std::process::ExitStatus,
    pub stderr: String,
}

impl Ended {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if !self.status.success() {
            let lines: Vec<&str> = self.stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
            write!(f, "; its stderr ends:\n  {tail}")?;
        }
        Ok(())
    }
}

/// Drains `child`'s standard error on a thread of its own.
fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let mut pipe = child.stderr.take().expect("stderr piped");
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

impl Watch {
    /// Starts `migtrace watch --json ARGS` and waits for its start line (the probe is attached
    /// by then).
    pub fn start(args: &[&str]) -> Watch {
        let mut child = Command::new(bin())
            .args(["watch", "--json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start watch");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let err = drain_stderr(&mut child);
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let start: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                kill_if_running(&mut child);
                let err = err.join().unwrap_or_default();
                panic!("watch start line {line:?}: {e}; stderr: {err}")
            }
        };
        assert_eq!(start["type"], "start");
        Watch {
            child,
            out,
            start,
            err: Some(err),
        }
    }

    /// Reads lines up to the next interval line and returns it (QEMU and link lines are
    /// passed over); fails the test if the watch ends first.
    pub fn next_interval(&mut self) -> Value {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "the watch ended before its next interval line");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            if v["type"] == "interval" {
                return v;
            }
        }
    }

    /// Reads every remaining line (each must parse) and returns (intervals, summary, how it
    /// ended).
    pub fn finish(mut self) -> (Vec<Value>, Value, Ended) {
        let mut intervals = Vec::new();
        let mut summary = Value::Null;
        for line in self.out.by_ref().lines() {
            let line = line.unwrap();
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
            match v["type"].as_str() {
                Some("interval") => intervals.push(v),
                Some("summary") => summary = v,
                // QEMU's own measurements (`--qmp`) and link lines (`--iface`) come
                // between the intervals.
                Some("qemu_dirty_rate") | Some("link") => {}
                other => panic!("unexpected line type {other:?}"),
            }
        }
        let status = self.child.wait().unwrap();
        let stderr = self
            .err
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        (intervals, summary, Ended { status, stderr })
    }
}

/// A failed test must not leave a watch attached.
impl Drop for Watch {
    fn drop(&mut self) {
        kill_if_running(&mut self.child);
    }
}

/// Runs migtrace with `args` to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run migtrace")
}

/// The summary fields every watch writes, all present and of the right type.
pub fn assert_complete_summary(s: &Value) {
    assert_eq!(s["type"], "summary", "{s}");
    for f in ["dirty_bytes_per_sec", "dirty_pages", "duration_s"] {
        assert!(
            s[f].is_f64(),
            "summary field {f} missing or not a number: {s}"
        );
    }
    for f in ["target_rss_bytes", "dropped_events"] {
        assert!(
            s[f].is_u64(),
            "summary field {f} missing or not an integer: {s}"
        );
    }
    assert!(s["backend"].is_string(), "{s}");
}
