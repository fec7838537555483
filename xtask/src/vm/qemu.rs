//! Boots the guest under `qemu-system-x86_64 -accel tcg` (no KVM on these machines) with
//! the serial console on QEMU's stdout, hands every console line to a callback as it
//! arrives, keeps a copy in a log file, and kills QEMU when the overall timeout passes.
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
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
/// once on a panic, which -no-reboot turns into QEMU exiting.
const APPEND: &str = "console=ttyS0 quiet panic=-1 oops=panic rdinit=/init";

/// The QEMU command line (also printed, so a human can rerun it by hand).
/// `extra` is appended to the kernel command line.
pub fn command(b: &Boot, extra: &str) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "1G", "-smp", "2"])
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
pub fn boot(b: &Boot, mut on_line: impl FnMut(&str, Duration) -> bool) -> Result<Outcome> {
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
    let (tx, rx) = mpsc::channel::<Option<String>>();

    let stdout = child.0.stdout.take().expect("piped");
    let mut log = std::fs::File::create(&b.serial_log)
        .with_context(|| format!("creating {}", b.serial_log.display()))?;
    let tx_out = tx.clone();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = log.write_all(&buf);
                    let line = clean(&String::from_utf8_lossy(&buf));
                    if tx_out.send(Some(line)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx_out.send(None);
    });
    let stderr = child.0.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(stderr).read_to_string(&mut s);
        for l in s.lines() {
            eprintln!("qemu! {l}");
        }
    });
    drop(tx);

    let deadline = start + b.timeout;
    let mut done_at: Option<Instant> = None;
    let mut timed_out = false;
    loop {
        let limit = match done_at {
            Some(t) => (t + Duration::from_secs(20)).min(deadline),
            None => deadline,
        };
        let now = Instant::now();
        if now >= limit {
            timed_out = done_at.is_none();
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(Some(line)) => {
                if on_line(&line, start.elapsed()) && done_at.is_none() {
                    done_at = Some(Instant::now());
                }
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    if timed_out {
        eprintln!(
            "vmtest: overall timeout of {} s passed: killing QEMU",
            b.timeout.as_secs()
        );
    }
    let status = match child.0.try_wait()? {
        Some(s) => Some(s),
        None if timed_out || done_at.is_some() => {
            // Give a powering-off guest a moment, then kill.
            let grace = Instant::now() + Duration::from_secs(if timed_out { 0 } else { 5 });
            loop {
                if let Some(s) = child.0.try_wait()? {
                    break Some(s);
                }
                if Instant::now() >= grace {
                    let _ = child.0.kill();
                    break child.0.wait().ok();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        None => Some(child.0.wait()?),
    };
    let _ = reader.join();
    Ok(Outcome {
        status,
        timed_out,
        elapsed: start.elapsed(),
    })
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
