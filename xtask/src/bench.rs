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

/// What the cost benchmark measures (`cargo xtask bench cost`).
#[derive(Clone, Debug, clap::Args)]
pub struct CostArgs {
    /// cost: target sizes in GiB.
    #[arg(long = "sizes-gib", value_delimiter = ',', default_values_t = [2u64, 16])]
    pub sizes_gib: Vec<u64>,
    /// cost: backends (`--backend` values; one this kernel cannot run fails the bench).
    #[arg(long, value_delimiter = ',', default_values_t = ["sample".to_string(), "fault".to_string(), "auto".to_string()])]
    pub backends: Vec<String>,
    /// cost: interleaved runs per backend and size.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// cost: seconds of each run left out at the start (sample sizing, first snapshots).
    #[arg(long = "warmup", default_value_t = 6.0)]
    pub warmup_s: f64,
    /// cost: seconds of each run measured.
    #[arg(long = "window", default_value_t = 15.0)]
    pub window_s: f64,
    /// cost: the writer's rate, MiB/s of random 4 KiB page writes over the whole target.
    #[arg(long, default_value_t = 50.0)]
    pub rate_mib: f64,
    /// cost: measure this migtrace binary instead of the one built here.
    #[arg(long)]
    pub migtrace: Option<std::path::PathBuf>,
}

/// `cargo xtask bench [overhead|cost]`: both by default.
pub fn main(what: &str, rounds: usize, seconds: f64, cost: CostArgs) -> Result<()> {
    if !matches!(what, "all" | "overhead" | "cost") {
        anyhow::bail!("unknown benchmark {what:?}: overhead or cost (default: both)");
    }
    if cost.migtrace.is_none() || what != "cost" {
        crate::build()?;
    }
    if what != "cost" {
        crate::sys::ensure_packages(&["bpftrace"], "the benchmark")?;
        run(rounds, seconds)?;
    }
    if what != "overhead" {
        run_cost(&cost)?;
    }
    Ok(())
}

/// One watch run of the cost benchmark.
struct CostRun {
    /// The backend the watch said it runs (`auto` resolves to one).
    backend: String,
    /// The watcher's CPU (user + system) over the window, percent of one core.
    cpu_pct: f64,
    /// Median over the window's intervals of the sampled pages and of the 95 % half-width
    /// relative to the rate (sampling backends only).
    sampled: Option<f64>,
    rel_half_width: Option<f64>,
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').context("bad stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok(ticks as f64 / hz)
}

/// Resident memory of a process in bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(kb * 1024)
}

/// A populated target of `gib` GiB: a random writer at `rate_mib`, after writing every page
/// once (so the whole size is resident). Returns when it is ready.
fn start_cost_target(bin: &std::path::Path, gib: u64, rate_mib: f64) -> Result<(Child, u32)> {
    let mut child = Command::new(bin)
        .args([
            "writer",
            "--pattern",
            "random",
            "--wss-mib",
            &(gib * 1024).to_string(),
            "--rate-mib",
            &rate_mib.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut out = wait_ready(&mut child)?;
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let rss = rss_bytes(pid)?;
    if rss < gib << 30 {
        let _ = child.kill();
        anyhow::bail!(
            "the {gib} GiB writer is resident for only {} MiB: not enough memory?",
            rss >> 20
        );
    }
    Ok((child, pid))
}

fn cost_run(bin: &std::path::Path, pid: u32, backend: &str, o: &CostArgs) -> Result<CostRun> {
    let total = (o.warmup_s + o.window_s + 1.5).ceil() as u64;
    let mut w = Command::new(bin)
        .args([
            "watch",
            "--backend",
            backend,
            "--pid",
            &pid.to_string(),
            "--interval",
            "1s",
            "--duration",
            &format!("{total}s"),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let wpid = w.id();
    let r = BufReader::new(w.stdout.take().context("watch stdout")?);
    let started = std::time::Instant::now();
    // The records, each with the time it arrived.
    let reader = std::thread::spawn(move || {
        r.lines()
            .map_while(|l| l.ok())
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .map(|v| (started.elapsed().as_secs_f64(), v))
            .collect::<Vec<_>>()
    });
    sleep(Duration::from_secs_f64(o.warmup_s));
    let (c0, t0) = (cpu_seconds(wpid)?, started.elapsed().as_secs_f64());
    sleep(Duration::from_secs_f64(o.window_s));
    let (c1, t1) = (cpu_seconds(wpid)?, started.elapsed().as_secs_f64());
    let status = w.wait()?;
    let recs = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    if !status.success() {
        anyhow::bail!("watch --backend {backend} failed: {status}");
    }
    let name = recs
        .iter()
        .find(|(_, v)| v["type"] == "start")
        .and_then(|(_, v)| v["backend"].as_str())
        .unwrap_or(backend)
        .to_string();
    let (mut sampled, mut half) = (Vec::new(), Vec::new());
    for (t, v) in &recs {
        if v["type"] != "interval" || *t < t0 || *t > t1 {
            continue;
        }
        if let Some(n) = v["sample"]["sampled"].as_f64() {
            sampled.push(n);
        }
        if let (Some(lo), Some(hi), Some(r)) = (
            v["ci95_bytes_per_sec"][0].as_f64(),
            v["ci95_bytes_per_sec"][1].as_f64(),
            v["dirty_bytes_per_sec"].as_f64(),
        ) {
            if r > 0.0 {
                half.push((hi - lo) / 2.0 / r);
            }
        }
    }
    Ok(CostRun {
        backend: name,
        cpu_pct: (c1 - c0) / (t1 - t0) * 100.0,
        sampled: (!sampled.is_empty()).then(|| median(&mut sampled)),
        rel_half_width: (!half.is_empty()).then(|| median(&mut half)),
    })
}

/// The cost benchmark: the watcher's own CPU in steady state, per backend and target size.
pub fn run_cost(o: &CostArgs) -> Result<()> {
    let bin = o
        .migtrace
        .clone()
        .unwrap_or_else(|| root().join("target/release/migtrace"));
    let mut rows = Vec::new();
    for &gib in &o.sizes_gib {
        eprintln!(
            "bench: populating a {gib} GiB random writer at {} MiB/s",
            o.rate_mib
        );
        let (mut target, pid) = start_cost_target(&bin, gib, o.rate_mib)?;
        let mut runs: Vec<Vec<CostRun>> = (0..o.backends.len()).map(|_| Vec::new()).collect();
        let res = (|| -> Result<()> {
            for round in 0..o.runs {
                for (i, b) in o.backends.iter().enumerate() {
                    let r = cost_run(&bin, pid, b, o)?;
                    println!(
                        "{gib:>3} GiB round {} {:<22} {:>6.2} % of a core{}",
                        round + 1,
                        format!("{b} ({})", r.backend),
                        r.cpu_pct,
                        r.sampled
                            .map(|n| format!(
                                ", sample {n:.0} pages, {}",
                                r.rel_half_width.map_or("no interval".into(), |h| format!(
                                    "±{:.1} %",
                                    h * 100.0
                                ))
                            ))
                            .unwrap_or_default()
                    );
                    runs[i].push(r);
                }
            }
            Ok(())
        })();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let _ = target.wait();
        res?;
        for (b, rs) in o.backends.iter().zip(runs) {
            let mut cpu: Vec<f64> = rs.iter().map(|r| r.cpu_pct).collect();
            let mut n: Vec<f64> = rs.iter().filter_map(|r| r.sampled).collect();
            let mut h: Vec<f64> = rs.iter().filter_map(|r| r.rel_half_width).collect();
            rows.push((
                gib,
                format!("{b} ({})", rs[0].backend),
                median(&mut cpu),
                (!n.is_empty()).then(|| median(&mut n)),
                (!h.is_empty()).then(|| median(&mut h)),
            ));
        }
    }
    println!(
        "\nwatcher CPU in steady state: medians of {} runs, {} s measured after {} s of warm-up, 1 s intervals, random writer at {} MiB/s:",
        o.runs, o.window_s, o.warmup_s, o.rate_mib
    );
    println!("| target | backend | % of a core | % of a core per GiB | sampled pages | 95 % half-width per interval |");
    println!("|---|---|---|---|---|---|");
    for (gib, b, cpu, n, h) in rows {
        println!(
            "| {gib} GiB | {b} | {cpu:.2} | {:.3} | {} | {} |",
            cpu / gib as f64,
            n.map(|n| format!("{n:.0}")).unwrap_or_else(|| "-".into()),
            h.map(|h| format!("±{:.1} %", h * 100.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    Ok(())
}
