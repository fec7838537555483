//! The overhead benchmark: how much `migtrace watch` slows a fault-heavy target.
//!
//! The target is `migtrace writer --pattern churn` (map 16 MiB, write one byte per page,
//! unmap, repeat), the worst case for a page-fault tracer: every write is a fault. Each round
//! runs, interleaved on the same machine:
//! - A: the target alone;
//! - B: the target with `migtrace watch --backend fault` attached;
//! - C: the target with bpftrace keeping a per-page map (`@pages[args->address >> 12] = count()`).
//!
//! It prints faults per second per run, the medians and the slowdowns against A. Timings
//! live here, never in test assertions: this machine is noisy.
use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::root;

fn start_target(seconds: f64, wait_go: bool) -> Result<(Child, u32)> {
    let bin = root().join("target/release/migtrace");
    let mut c = Command::new(bin);
    c.args([
        "writer",
        "--pattern",
        "churn",
        "--wss-mib",
        "16",
        "--duration",
        &format!("{}ms", (seconds * 1000.0) as u64),
    ]);
    if wait_go {
        c.arg("--wait-go");
    }
    let child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let pid = child.id();
    Ok((child, pid))
}

fn go(child: &mut Child) -> Result<()> {
    use std::io::Write;
    let stdin = child.stdin.as_mut().context("stdin")?;
    stdin.write_all(b"go\n")?;
    stdin.flush()?;
    Ok(())
}

fn wait_ready(child: &mut Child) -> Result<BufReader<std::process::ChildStdout>> {
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    Ok(out)
}

fn run_one(kind: &str, seconds: f64) -> Result<f64> {
    let (mut child, pid) = start_target(seconds, true)?;
    let out = wait_ready(&mut child)?;
    let mut tracer = match kind {
        "A" => None,
        "B" => Some(
            Command::new(root().join("target/release/migtrace"))
                .args(["watch", "--backend", "fault", "--json", "--pid", &pid.to_string()])
                .stdout(Stdio::piped())
                .spawn()?,
        ),
        _ => Some(
            Command::new("bpftrace")
                // Unbuffered: its "Attaching N probes" line must reach us at once; a pipe
                // would otherwise hold it in bpftrace's buffer (a bench hung on that).
                .args([
                    "-B",
                    "none",
                    "-e",
                    &format!(
                        "tracepoint:exceptions:page_fault_user /pid == {pid}/ {{ @pages[args->address >> 12] = count(); }} END {{ clear(@pages); }}"
                    ),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?,
        ),
    };
    // Wait until the tracer says it is attached: migtrace's first JSON line ("start"),
    // bpftrace's "Attaching 1 probe...". Then drain its output in the background.
    if let Some(t) = tracer.as_mut() {
        let mut r = BufReader::new(t.stdout.take().context("tracer stdout")?);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            std::io::copy(&mut r, &mut std::io::sink())
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = t.kill();
                anyhow::bail!("the {kind} tracer did not report attaching within 30 s");
            }
        };
        if kind == "C" && !line.contains("Attaching") {
            anyhow::bail!("bpftrace did not attach: {line:?}");
        }
        sleep(Duration::from_millis(100));
    }
    go(&mut child)?;
    let mut rate = None;
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        if v["type"] == "done" {
            rate = v["pages_per_sec"].as_f64();
        }
    }
    child.wait()?;
    if let Some(mut t) = tracer.take() {
        // SIGTERM ends both tracers cleanly. A tracer that has not exited 10 s later is
        // killed rather than waited for forever (a bench once hung on bpftrace here).
        // SAFETY: signalling our own child.
        unsafe { libc::kill(t.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(t.try_wait(), Ok(None)) {
            if std::time::Instant::now() > deadline {
                eprintln!("bench: the {kind} tracer ignored SIGTERM for 10 s; killing it");
                let _ = t.kill();
                let _ = t.wait();
                break;
            }
            sleep(Duration::from_millis(20));
        }
    }
    rate.context("the writer reported no rate")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(rounds: usize, seconds: f64) -> Result<()> {
    // bpftrace resolves tracepoints through tracefs, which is not mounted at boot here.
    if !std::path::Path::new("/sys/kernel/tracing/events").exists() {
        crate::sys::run(Command::new("mount").args([
            "-t",
            "tracefs",
            "tracefs",
            "/sys/kernel/tracing",
        ]))
        .context("mounting tracefs for bpftrace")?;
    }
    let kinds = ["A", "B", "C"];
    let names = [
        "no tracer",
        "migtrace watch --backend fault",
        "bpftrace @pages[addr>>12]=count()",
    ];
    let mut res: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for r in 0..rounds {
        for (i, k) in kinds.iter().enumerate() {
            let v = run_one(k, seconds)?;
            println!("round {} {:<36} {:>10.0} faults/s", r + 1, names[i], v);
            res[i].push(v);
        }
    }
    let meds: Vec<f64> = res.iter_mut().map(|v| median(v)).collect();
    println!("\nmedians of {rounds} interleaved rounds, {seconds} s each (churn writer, 16 MiB):");
    for i in 0..3 {
        let slow = (1.0 - meds[i] / meds[0]) * 100.0;
        println!(
            "  {:<36} {:>10.0} faults/s  slowdown {:>5.1} %",
            names[i], meds[i], slow
        );
    }
    Ok(())
}
