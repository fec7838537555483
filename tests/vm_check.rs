//! `vm-check`: end-to-end checks of migtrace that need a kernel feature the development and
//! CI machines lack (soft-dirty). `cargo xtask vmtest` builds it, copies it into the Debian
//! guest with the migtrace binary, and runs one check per test entry in
//! `tests/vm/tests.json`. Each check runs the real binary against the built-in writer, prints
//! what it measured, and exits non-zero when a tolerance is exceeded.
//!
//! Tolerances (stated here and printed):
//! - unique-page dirty rate of a known writer, softdirty: ±2 % of the truth;
//! - growth curve of a hot/cold writer, softdirty: ±5 % of the analytical expectation at each
//!   window with at least 4 windows averaged (the writer is random, so each window's count
//!   scatters around its expectation);
//! - softdirty against sample on the same target: reported; the sample must agree within
//!   its own 95 % interval plus 5 %;
//! - unique 4 KiB pages of writers on transparent huge pages, softdirty: a uniform random
//!   writer within ±10 % (the bound docs/softdirty.md states: one huge page's 64 sampled
//!   subpages give a per-interval 95 % half-width of about ±8 % at 16 MiB/s over 64 MiB, and
//!   the mean of 5 intervals about ±4 %; the rest is margin for the guest's pacing), and the
//!   truth inside the summary's 95 % interval widened by 2 %; a sequential writer within
//!   ±3 % (stratified sampling of a contiguous run errs by at most one stratum per run end).
//!   Soft-dirty alone counts 2 MiB per huge page written: +369 % and +10 to +20 % on these
//!   two in the guest. The hot/cold growth curve on huge pages: ±10 %. A huge page cut by
//!   `--range` must be reported as known only at 2 MiB, never counted as 4 KiB pages.
use std::process::ExitCode;

// Checks against a real KVM guest, for the nested-KVM boot (tests/vm/kvm.json).
mod kvm_check;

use migtrace::workload::{expected_unique, Pattern};
use migtrace_e2e::{assert_complete_summary, Writer};

fn main() -> ExitCode {
    std::env::set_var(
        "MIGTRACE_BIN",
        std::env::var("MIGTRACE_BIN").unwrap_or_else(|_| "/usr/local/bin/migtrace".into()),
    );
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("rate") => rate(&args[1], args[2].parse().unwrap()),
        Some("growth") => growth(),
        Some("growth-thp") => growth_thp(),
        Some("agree") => agree(),
        Some("exit-mid-epoch") => exit_mid_epoch(),
        Some("growth-long-epoch") => growth_long_epoch(),
        Some("thp") => thp(),
        Some("thp-clipped") => thp_clipped(),
        Some("rollup-race") => rollup_race(),
        Some("thp-rate") => thp_rate(&args[1], args[2].parse().unwrap(), &args[3]),
        Some("kvm-watch") if args.get(1).map(String::as_str) == Some("fault") => {
            kvm_check::watch_fault()
        }
        Some("kvm-watch") if args.len() == 2 => kvm_check::watch(&args[1]),
        Some("kvm-idle") if args.len() == 2 => kvm_check::idle(&args[1]),
        Some("kvm-migrate") => kvm_check::migrate(),
        Some("kvm-attach") if args.len() == 3 => {
            kvm_check::attach_cycles(&args[1], args[2].parse().unwrap())
        }
        _ => {
            Err("usage: vm-check rate seq|random RATE_MIB | growth | agree | exit-mid-epoch | thp | thp-clipped | rollup-race | thp-rate seq|random RATE_MIB anon|malloc | kvm-watch auto|softdirty|sample|fault | kvm-idle BACKEND | kvm-attach MODE CYCLES | kvm-migrate".into())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

const WSS_MIB: u64 = 64;

fn pages() -> f64 {
    (WSS_MIB * 256) as f64
}

/// The unique-page dirty rate of a known writer, within ±2 %.
fn rate(pattern: &str, rate_mib: f64) -> Result<(), String> {
    let w = Writer::steady(pattern, rate_mib, WSS_MIB, &[]);
    let watch = w.watch("softdirty", &["--interval", "1s", "--duration", "6s"]);
    let (intervals, s, st) = watch.finish();
    let done = w.stop();
    if !st.success() {
        return Err(format!("watch exited with {st}"));
    }
    assert_complete_summary(&s);
    let writes = done["pages_per_sec"].as_f64().unwrap();
    let p = if pattern == "seq" {
        Pattern::Seq
    } else {
        Pattern::Random
    };
    let truth = expected_unique(p, writes, pages(), 1.0, 0.0, 0.0);
    // Skip the first interval: the writer's pacing and the first arm settle there.
    let tail: Vec<f64> = intervals[1..]
        .iter()
        .map(|i| i["dirty_pages_per_sec"].as_f64().unwrap())
        .collect();
    let measured = tail.iter().sum::<f64>() / tail.len() as f64;
    let err = (measured - truth) / truth;
    println!(
        "softdirty {pattern} at {rate_mib} MiB/s: writer {writes:.0} writes/s, truth {truth:.0} unique pages/s, measured {measured:.0} ({:+.2} %), intervals {tail:?}",
        err * 100.0
    );
    println!("backend stats: {}", s["backend_stats"]);
    if s["dropped_events"].as_u64() != Some(0) {
        return Err(format!("dropped events: {}", s["dropped_events"]));
    }
    if err.abs() > 0.02 {
        return Err(format!("error {:+.2} % exceeds ±2 %", err * 100.0));
    }
    Ok(())
}

/// The growth curve of a hot/cold writer against its analytical expectation, ±5 %.
fn growth() -> Result<(), String> {
    growth_with(&[], &["--epoch", "100ms"], 0.1, 0.05)
}

/// The same on transparent huge pages, where the curve's windows unite the sampled
/// subpages that changed: ±10 % (a 100 ms window holds about 100 changed pages in 3 hot huge
/// pages, each estimated from 64 subpages: about ±25 % per window, averaged over 4 or more).
fn growth_thp() -> Result<(), String> {
    growth_with(&["--thp"], &["--epoch", "100ms"], 0.1, 0.10)
}

fn growth_with(
    writer_extra: &[&str],
    extra: &[&str],
    epoch_s: f64,
    tol: f64,
) -> Result<(), String> {
    let (hot_frac, hot_share, rate_mib) = (0.1, 0.9, 4.0);
    let (hf, hs) = (hot_frac.to_string(), hot_share.to_string());
    let mut wargs = vec!["--hot-frac", &hf, "--hot-share", &hs];
    wargs.extend_from_slice(writer_extra);
    let w = Writer::steady("hotcold", rate_mib, WSS_MIB, &wargs);
    let mut args = vec![
        "--interval",
        "1s",
        "--duration",
        "9s",
        "--max-overhead",
        "100",
    ];
    args.extend_from_slice(extra);
    let watch = w.watch("softdirty", &args);
    let (_, s, st) = watch.finish();
    let done = w.stop();
    if !st.success() {
        return Err(format!("watch exited with {st}"));
    }
    let writes = done["pages_per_sec"].as_f64().unwrap();
    let got_epoch = s["backend_stats"]["epoch_s"].as_f64().unwrap_or(0.0);
    if (got_epoch - epoch_s).abs() > 1e-9 {
        return Err(format!("epoch {got_epoch} s, asked for {epoch_s} s"));
    }
    println!(
        "epochs left out of the growth curve: {} (epoch {got_epoch} s)",
        s["backend_stats"]["epochs_outside_growth"]
    );
    let mut checked = 0;
    let mut worst: f64 = 0.0;
    for g in s["growth"].as_array().unwrap() {
        let (win, u, n) = (
            g["window_s"].as_f64().unwrap(),
            g["unique_pages"].as_f64().unwrap(),
            g["windows"].as_u64().unwrap(),
        );
        let expect = expected_unique(Pattern::Hotcold, writes, pages(), win, hot_frac, hot_share);
        let err = (u - expect) / expect;
        println!(
            "U({win:.2} s) = {u:.0} pages over {n} windows; expected {expect:.0} ({:+.2} %)",
            err * 100.0
        );
        if n >= 4 {
            checked += 1;
            worst = worst.max(err.abs());
        }
    }
    if checked < 3 {
        return Err(format!("only {checked} growth points with 4+ windows"));
    }
    if worst > tol {
        return Err(format!(
            "worst growth-curve error {:.2} % exceeds ±{:.0} %",
            worst * 100.0,
            tol * 100.0
        ));
    }
    if writer_extra.contains(&"--thp") {
        println!("backend stats: {}", s["backend_stats"]);
    }
    Ok(())
}

/// softdirty and sample on the same target at the same time: report their agreement.
fn agree() -> Result<(), String> {
    let w = Writer::steady("seq", 4.0, WSS_MIB, &[]);
    let sd = w.watch("softdirty", &["--interval", "1s", "--duration", "5s"]);
    let sa = w.watch(
        "sample",
        &[
            "--interval",
            "1s",
            "--duration",
            "5s",
            "--sample-error",
            "0.05",
        ],
    );
    let (_, s1, st1) = sd.finish();
    let (_, s2, st2) = sa.finish();
    let done = w.stop();
    if !st1.success() || !st2.success() {
        return Err(format!("watch exit {st1} / {st2}"));
    }
    let a = s1["dirty_pages_per_sec"].as_f64().unwrap();
    let b = s2["dirty_pages_per_sec"].as_f64().unwrap();
    let ci = &s2["ci95_bytes_per_sec"];
    let half = (ci[1].as_f64().unwrap() - ci[0].as_f64().unwrap()) / 2.0 / 4096.0;
    println!(
        "agreement: softdirty {a:.0} pages/s, sample {b:.0} pages/s (95 % ±{half:.0}), ratio sample/softdirty {:.3}; writer {} writes/s",
        b / a,
        done["pages_per_sec"]
    );
    if (a - b).abs() > half + 0.05 * a {
        return Err("sample and softdirty disagree beyond the sample's interval plus 5 %".into());
    }
    Ok(())
}

/// A writer that exits mid-epoch, while still writing, still gives a complete summary with
/// its exact page count: a sequential first-touch writer on a fresh mapping writes each page
/// once, so the truth is the number of writes it reports.
fn exit_mid_epoch() -> Result<(), String> {
    let mut w = Writer::start(&[
        "--pattern",
        "seq",
        "--rate-mib",
        "2",
        "--wss-mib",
        "64",
        "--no-prefault",
        "--wait-go",
        "--duration",
        "1230ms",
    ]);
    let range = w.range_arg();
    let watch = w.watch("softdirty", &["--epoch", "500ms", "--range", &range]);
    w.go();
    let done = w.wait_done();
    let (_, s, st) = watch.finish();
    if !st.success() {
        return Err(format!("watch exited with {st}"));
    }
    assert_complete_summary(&s);
    let writes = done["page_writes"].as_u64().unwrap();
    println!(
        "exit mid-epoch: end {} unique {} for {writes} first-touch writes, faults {}",
        s["end_reason"], s["unique_pages_total"], s["faults"]
    );
    if s["end_reason"] != "target-exited" {
        return Err(format!("end_reason {}", s["end_reason"]));
    }
    if s["unique_pages_total"].as_f64() != Some(writes as f64) {
        return Err(format!(
            "unique pages {} != {writes} writes",
            s["unique_pages_total"]
        ));
    }
    Ok(())
}

/// An epoch longer than one tick (250 ms, 4 per 1 s interval): the growth curve of a hot/cold
/// writer still matches its expectation within ±5 %, and the epoch is the one asked for.
fn growth_long_epoch() -> Result<(), String> {
    growth_with(&[], &["--epoch", "250ms"], 0.25, 0.05)
}

/// Transparent huge pages written whole: one first-touch fault maps 2 MiB, and soft-dirty
/// marks all 512 subpages. The count must come from sampling (every huge page resolved, none
/// left at 2 MiB), and as every subpage was written (each sampled one changed from zero), the
/// estimate is every 4 KiB page: exactly `n`. Sparse writes on huge pages are `thp-rate`.
fn thp() -> Result<(), String> {
    let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
    let mut w = Writer::start(&[
        "--pattern",
        "once",
        "--wss-mib",
        "32",
        "--thp",
        "--wait-go",
        "--duration",
        "3s",
    ]);
    let n = w.ready["pages"].as_u64().unwrap();
    let pid = w.pid();
    let range = w.range_arg();
    let watch = w.watch("softdirty", &["--interval", "500ms", "--range", &range]);
    w.go();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let huge_kb = anon_huge_kb(pid);
    let _ = w.wait_done();
    let (_, s, st) = watch.finish();
    if !st.success() {
        return Err(format!("watch exited with {st}"));
    }
    println!(
        "thp: {huge_kb} kB in huge pages; unique {} of {n} pages; faults {}; stats {}; {}",
        s["unique_pages_total"],
        s["faults"],
        s["backend_stats"],
        thp_state()
    );
    if huge_kb == 0 {
        return Err(format!(
            "the writer got no transparent huge pages: the test proves nothing; {}",
            thp_state()
        ));
    }
    if s["unique_pages_total"].as_f64() != Some(n as f64) {
        return Err(format!("unique pages {} != {n}", s["unique_pages_total"]));
    }
    let st = &s["backend_stats"];
    let huge = n / 512;
    if st["thp_huge_pages_resolved"].as_u64().unwrap_or(0) < huge / 2 {
        return Err(format!(
            "{} huge pages resolved by sampling, expected most of {huge}",
            st["thp_huge_pages_resolved"]
        ));
    }
    if st["thp_huge_pages_2m_only"].as_u64() != Some(0) {
        return Err(format!(
            "huge pages left at 2 MiB: {}",
            st["thp_huge_pages_2m_only"]
        ));
    }
    Ok(())
}

/// `AnonHugePages` of a process, kB, through the tool's own reader (summed over
/// /proc/PID/smaps: smaps_rollup loses a mapping under mmap_lock contention on 6.1).
fn anon_huge_kb(pid: u32) -> u64 {
    migtrace::target::anon_huge_bytes(pid).unwrap_or(0) / 1024
}

/// The guest's state for huge pages in one line, for a THP test that got none: the THP
/// settings, free memory, free 2 MiB-or-larger blocks (buddyinfo orders 9 and 10) and the
/// kernel's THP fault counters. A CI run once gave 0 kB three times over with nothing to say why.
fn thp_state() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_else(|e| format!("({e})"));
    let enabled = read("/sys/kernel/mm/transparent_hugepage/enabled");
    let defrag = read("/sys/kernel/mm/transparent_hugepage/defrag");
    let meminfo = read("/proc/meminfo");
    let pick = |text: &str, keys: &[&str]| -> String {
        text.lines()
            .filter(|l| keys.iter().any(|k| l.starts_with(k)))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    };
    // Each buddyinfo line: "Node 0, zone Normal c0 c1 ... c10"; orders 9 and 10 are 2 and 4 MiB.
    let big: Vec<String> = read("/proc/buddyinfo")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let zone = f.get(3)?;
            Some(format!("{zone} {}+{}", f.get(13)?, f.get(14)?))
        })
        .collect();
    format!(
        "THP enabled {}, defrag {}; {}; free 2M+4M blocks by zone: {}; {}",
        enabled.trim(),
        defrag.trim(),
        pick(
            &meminfo,
            &["MemTotal", "MemFree", "Shmem:", "AnonHugePages"]
        ),
        big.join(", "),
        pick(
            &read("/proc/vmstat"),
            &[
                "thp_fault_alloc",
                "thp_fault_fallback ",
                "compact_stall",
                "compact_fail"
            ]
        )
    )
}

/// A writer on transparent huge pages. After earlier tests a 1 GiB guest could be too
/// fragmented for the kernel to find 2 MiB pages at fault time (seen once: 0 kB of THP), so
/// memory is compacted first, and the writer started again (at most three times) while less
/// than half of its working set came on huge pages. The test still fails if none does, and
/// says what the guest had ([`thp_state`]). A CI run on another machine still got 0 kB, with
/// no retry printed, in two THP tests out of seven, so the boot now has 2 GiB
/// (tests/vm/tests.json); the cause there is not known.
fn thp_writer(pattern: &str, rate_mib: f64, memory: &str) -> Writer {
    let mut tries = 0;
    loop {
        let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
        let w = Writer::steady(pattern, rate_mib, WSS_MIB, &["--thp", "--memory", memory]);
        tries += 1;
        if anon_huge_kb(w.pid()) * 2 >= WSS_MIB * 1024 || tries == 3 {
            return w;
        }
        eprintln!(
            "only {} kB of THP after try {tries}: compacting and starting again; {}",
            anon_huge_kb(w.pid()),
            thp_state()
        );
    }
}

/// A writer on transparent huge pages (`--thp`, anonymous or malloc memory): the rate in
/// unique 4 KiB pages per second, against the writer's truth.
fn thp_rate(pattern: &str, rate_mib: f64, memory: &str) -> Result<(), String> {
    let w = thp_writer(pattern, rate_mib, memory);
    let pid = w.pid();
    let huge_kb = anon_huge_kb(pid);
    let watch = w.watch("softdirty", &["--interval", "1s", "--duration", "6s"]);
    let (intervals, s, st) = watch.finish();
    let huge_after = anon_huge_kb(pid);
    let done = w.stop();
    if !st.success() {
        return Err(format!("watch exited with {st}"));
    }
    assert_complete_summary(&s);
    if huge_kb < WSS_MIB * 1024 / 2 {
        return Err(format!(
            "only {huge_kb} kB of the writer is in huge pages ({huge_after} kB after the watch): the test proves nothing; {}",
            thp_state()
        ));
    }
    let writes = done["pages_per_sec"].as_f64().unwrap();
    let (p, tol) = if pattern == "seq" {
        (Pattern::Seq, 0.03)
    } else {
        (Pattern::Random, 0.10)
    };
    let truth = expected_unique(p, writes, pages(), 1.0, 0.0, 0.0);
    let tail: Vec<f64> = intervals[1..]
        .iter()
        .map(|i| i["dirty_pages_per_sec"].as_f64().unwrap())
        .collect();
    let measured = tail.iter().sum::<f64>() / tail.len() as f64;
    let err = (measured - truth) / truth;
    let ci = &s["ci95_bytes_per_sec"];
    let (lo, hi) = (
        ci[0].as_f64().unwrap_or(f64::NAN) / 4096.0,
        ci[1].as_f64().unwrap_or(f64::NAN) / 4096.0,
    );
    println!(
        "softdirty {pattern} THP {memory} at {rate_mib} MiB/s: {huge_kb} kB huge; writer {writes:.0} writes/s, truth {truth:.0} unique 4 KiB pages/s, measured {measured:.0} ({:+.2} %, bound ±{:.0} %); summary {:.0} pages/s, 95 % [{lo:.0}, {hi:.0}]; intervals {tail:.0?}",
        err * 100.0,
        tol * 100.0,
        s["dirty_pages_per_sec"].as_f64().unwrap_or(0.0)
    );
    println!("backend stats: {}", s["backend_stats"]);
    if err.abs() > tol {
        return Err(format!(
            "error {:+.2} % exceeds ±{:.0} %",
            err * 100.0,
            tol * 100.0
        ));
    }
    if s["backend_stats"]["thp_huge_pages_resolved"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        return Err("no huge page was resolved by sampling".into());
    }
    if !(lo * 0.98 <= truth && truth <= hi * 1.02) {
        return Err(format!(
            "truth {truth:.0} outside the summary's 95 % interval [{lo:.0}, {hi:.0}] (±2 %)"
        ));
    }
    Ok(())
}

/// A `--range` that cuts a huge page: the part inside the range cannot be sampled against the
/// whole page's strata, so it is known only at 2 MiB. It must be kept apart (stats and a
/// caveat), never counted as 4 KiB pages: the count is exactly the 3 whole huge pages.
fn thp_clipped() -> Result<(), String> {
    let mut w = Writer::start(&[
        "--pattern",
        "once",
        "--wss-mib",
        "8",
        "--thp",
        "--wait-go",
        "--duration",
        "3s",
    ]);
    let (addr, len) = w.mapping();
    let range = format!("{:x}-{:x}", addr + (1 << 20), addr + len);
    let watch = w.watch("softdirty", &["--interval", "500ms", "--range", &range]);
    w.go();
    let _ = w.wait_done();
    let (_, s, st) = watch.finish();
    if !st.success() {
        return Err(format!("watch exited with {st}"));
    }
    let st = &s["backend_stats"];
    println!(
        "thp clipped: unique {}; 2 MiB only {}; caveats {}",
        s["unique_pages_total"], st["thp_huge_pages_2m_only"], s["caveats"]
    );
    if s["unique_pages_total"].as_f64() != Some(3.0 * 512.0) {
        return Err(format!("unique pages {} != 1536", s["unique_pages_total"]));
    }
    if st["thp_huge_pages_2m_only"].as_u64().unwrap_or(0) == 0 {
        return Err("the cut huge page is not reported as known only at 2 MiB".into());
    }
    if !s["caveats"].to_string().contains("2 MiB granularity") {
        return Err("no caveat names the huge pages known only at 2 MiB".into());
    }
    Ok(())
}

/// `AnonHugePages` of a process in kB as smaps_rollup gives it (the reader the tool used to
/// have), for `rollup-race` to show what it loses.
fn rollup_huge_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// 64 MiB of this process in huge pages, beside a thread that maps and unmaps 4 KiB in a
/// loop (as a starting thread or an allocator does): the mmap_lock is contended all the
/// time. For 5 s, the tool's huge-page reader must give the whole 64 MiB on every read. The
/// same count from smaps_rollup is printed beside it: on Debian's 6.1 it loses the mapping
/// in about half the reads, which is what failed the THP tests now and then.
fn rollup_race() -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    const LEN: usize = 64 << 20;
    const HUGE: usize = 2 << 20;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh private anonymous mapping, used only inside its bounds below.
    let map = unsafe { libc::mmap(std::ptr::null_mut(), LEN + HUGE, prot, flags, -1, 0) };
    if map == libc::MAP_FAILED {
        return Err("mmap of 66 MiB failed".into());
    }
    let base = (map as usize).next_multiple_of(HUGE) as *mut u8;
    // SAFETY: `base..base + LEN` lies inside the mapping (it has HUGE bytes to spare).
    unsafe { libc::madvise(base as _, LEN, libc::MADV_HUGEPAGE) };
    for i in (0..LEN).step_by(4096) {
        // SAFETY: inside the mapping, which nothing else uses.
        unsafe { base.add(i).write_volatile(1) };
    }
    let me = std::process::id();
    let quiet = anon_huge_kb(me);
    if quiet < (LEN as u64 >> 10) / 2 {
        return Err(format!(
            "only {quiet} kB in huge pages with no contention: the test proves nothing; {}",
            thp_state()
        ));
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: maps and unmaps a page of its own; nothing touches it.
                unsafe {
                    let p = libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, flags, -1, 0);
                    libc::munmap(p, 4096);
                }
                n += 1;
            }
            n
        })
    };
    let (mut reads, mut low, mut rollup_low, mut worst) = (0u64, 0u64, 0u64, quiet);
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(5) {
        let kb = anon_huge_kb(me);
        worst = worst.min(kb);
        low += u64::from(kb < quiet);
        rollup_low += u64::from(rollup_huge_kb(me).unwrap_or(0) < quiet);
        reads += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let maps = churn.join().unwrap_or(0);
    println!(
        "{quiet} kB in huge pages; under {maps} mmap/munmap pairs: the tool's reader was low in {low} of {reads} reads (lowest {worst} kB), smaps_rollup in {rollup_low}; kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    if low > 0 {
        return Err(format!("the tool's huge-page reader lost memory in {low} of {reads} reads under mmap_lock contention"));
    }
    Ok(())
}
