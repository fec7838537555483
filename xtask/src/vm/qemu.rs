//! Boots the guest under `qemu-system-x86_64 -accel tcg` (no KVM on these machines) with
//! the serial console on QEMU's stdout, hands every console line to a callback as it
//! arrives, keeps a copy in a log file, and kills QEMU when the overall timeout passes.
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    /// `-cpu` model (`None`: QEMU's default).
    pub cpu: Option<&'a str>,
    pub memory_mib: u64,
    pub timeout: Duration,
    /// Raw serial output is copied here.
    pub serial_log: PathBuf,
}

/// How the QEMU process ended.
#[derive(Debug)]
pub struct Outcome {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Kills QEMU if the harness unwinds or returns early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// quiet: only errors and worse reach the console (panics still do); panic=-1: reboot at
/// once on a panic, which -no-reboot turns into QEMU exiting; nokaslr: a RIP read at a
/// timeout is the System.map's address ([`super::hang`]).
const APPEND: &str = "console=ttyS0 quiet panic=-1 oops=panic nokaslr rdinit=/init";

/// The human monitor's socket, beside the serial log: read at a timeout ([`super::hang`]).
/// A unix socket path holds at most 107 bytes, and QEMU refuses to start on a longer one: a
/// deep `CARGO_TARGET_DIR` gets a short path in the temporary folder instead.
pub fn monitor_socket(b: &Boot) -> PathBuf {
    let beside = b.serial_log.with_extension("monitor.sock");
    if beside.as_os_str().len() < 100 {
        return beside;
    }
    let stem = b
        .serial_log
        .file_stem()
        .map_or("serial".into(), |s| s.to_string_lossy());
    std::env::temp_dir().join(format!("vmtest-{}-{stem}.sock", std::process::id()))
}

/// The QEMU command line (also printed, so a human can rerun it by hand).
/// `extra` is appended to the kernel command line.
pub fn command(b: &Boot, extra: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    match b.cpu {
        // A named CPU (`max` for nested KVM): TCG with one host thread per vCPU, as measured
        // in docs/platform.md.
        Some(cpu) => cmd.args(["-accel", "tcg,thread=multi", "-cpu", cpu]),
        None => cmd.args(["-accel", "tcg"]),
    };
    let monitor = monitor_socket(b);
    let _ = std::fs::remove_file(&monitor);
    cmd.args(["-m", &format!("{}M", b.memory_mib), "-smp", "2"])
        .args(["-name", "vmtest,debug-threads=on", "-monitor"])
        .arg(format!("unix:{},server=on,wait=off", monitor.display()))
        .args([
            "-nographic",
            "-nodefaults",
            "-serial",
            "stdio",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg(format!("{APPEND} {extra}").trim_end());
    cmd
}

/// The QEMU command line as a shell script (kept with `--keep`), to boot the same
/// initramfs by hand: with `vmtest.shell=1` the guest opens a shell after the tests instead
/// of powering off (`exit` or `poweroff -f` leaves, Ctrl-C kills QEMU).
pub fn script(b: &Boot) -> String {
    let cmd = command(b, "vmtest.shell=1");
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut line = quote(cmd.get_program());
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(a));
    }
    format!("#!/bin/sh\n# Boots the vmtest guest by hand: tests run, then a shell (poweroff -f leaves; Ctrl-C kills QEMU).\nexec {line} \"$@\"\n")
}

/// Boots and streams console lines to `on_line(line, time since start)`. The callback
/// returns true once the guest said it is done; QEMU then gets a short grace period to
/// power off before it is killed.
pub fn boot(b: &Boot, on_line: impl FnMut(&str, Duration) -> bool) -> Result<Outcome> {
    let mut cmd = command(b, "");
    println!("vmtest: {cmd:?}");
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not start qemu-system-x86_64 (package qemu-system-x86)")?;
    let mut child = KillOnDrop(child);
    let log = std::fs::File::create(&b.serial_log)
        .with_context(|| format!("creating {}", b.serial_log.display()))?;
    let (tx, rx) = mpsc::channel::<Option<String>>();
    let reader = spawn_console_reader(child.0.stdout.take().expect("piped"), log, tx);
    spawn_stderr_echo(child.0.stderr.take().expect("piped"));

    let (timed_out, done) = read_console(&rx, start, b.timeout, on_line);
    if timed_out {
        super::hang::describe(child.0.id(), &monitor_socket(b), b.vmlinuz);
        eprintln!(
            "vmtest: overall timeout of {} s passed: killing QEMU",
            b.timeout.as_secs()
        );
    }
    let status = reap(&mut child.0, timed_out, done)?;
    let _ = reader.join();
    Ok(Outcome {
        status,
        timed_out,
        elapsed: start.elapsed(),
    })
}

/// Copies QEMU's stdout (the serial console) to `log` and sends each cleaned line to `tx`;
/// `None` at the end.
fn spawn_console_reader(
    stdout: ChildStdout,
    mut log: File,
    tx: mpsc::Sender<Option<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = log.write_all(&buf);
                    let line = clean(&String::from_utf8_lossy(&buf));
                    if tx.send(Some(line)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(None);
    })
}

/// Prints QEMU's own messages, prefixed `qemu! `, once it exits.
fn spawn_stderr_echo(stderr: ChildStderr) {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        for l in s.lines() {
            eprintln!("qemu! {l}");
        }
    });
}

/// Hands console lines to `on_line` until the console closes, the overall deadline passes,
/// or 20 s after the guest said it is done. Returns (timed out, done).
fn read_console(
    rx: &mpsc::Receiver<Option<String>>,
    start: Instant,
    timeout: Duration,
    mut on_line: impl FnMut(&str, Duration) -> bool,
) -> (bool, bool) {
    let deadline = start + timeout;
    let mut done_at: Option<Instant> = None;
    loop {
        let limit = match done_at {
            Some(t) => (t + Duration::from_secs(20)).min(deadline),
            None => deadline,
        };
        let now = Instant::now();
        if now >= limit {
            return (done_at.is_none(), done_at.is_some());
        }
        match rx.recv_timeout(limit - now) {
            Ok(Some(line)) => {
                if on_line(&line, start.elapsed()) && done_at.is_none() {
                    done_at = Some(Instant::now());
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return (false, done_at.is_some())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Waits for QEMU to exit: at once when it already has; after a 5 s grace period (a
/// powering-off guest) or none (timed out) before killing it; plainly otherwise.
fn reap(child: &mut Child, timed_out: bool, done: bool) -> Result<Option<ExitStatus>> {
    if let Some(s) = child.try_wait()? {
        return Ok(Some(s));
    }
    if !timed_out && !done {
        return Ok(Some(child.wait()?));
    }
    let grace = Instant::now() + Duration::from_secs(if timed_out { 0 } else { 5 });
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= grace {
            let _ = child.kill();
            return Ok(child.wait().ok());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drops terminal escape sequences (SeaBIOS and the kernel reset the "screen" with
/// `ESC c ESC [ ? 7 l ESC [ 2 J`, which would clear the host terminal and hide a marker at
/// the start of a line) and other control characters except tabs.
pub fn clean(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // CSI: parameters and intermediates up to a final byte in @..~; any other
            // escape is ESC plus one character, consumed by the `next()`.
            '\u{1b}' => {
                if let Some('[') = chars.next() {
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                }
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn strips_console_resets() {
        assert_eq!(
            clean("\u{1b}c\u{1b}[?7l\u{1b}[2JMIGTRACE-VM-BOOTED kernel=x\r\n"),
            "MIGTRACE-VM-BOOTED kernel=x"
        );
        assert_eq!(clean("a\tb"), "a\tb");
    }
}
