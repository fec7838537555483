//! The `softdirty` backend: exact dirty tracking with the kernel's soft-dirty write
//! protection (`CONFIG_MEM_SOFT_DIRTY`; Debian, Ubuntu and RHEL kernels have it, CRIU relies
//! on it).
//!
//! Each epoch (50 ms to 1 s):
//! 1. arm: `echo 4 > /proc/PID/clear_refs` clears the soft-dirty bits and write-protects the
//!    target's pages, so the first write to each page in the epoch takes a fault;
//! 2. the eBPF page-fault program (with `FLAG_RECORD_PAGES`) sends every write fault of the
//!    target — write-protect or first touch — to a ring buffer: page, thread, time;
//! 3. at the epoch's end user space reads pagemap bit 55 of the present pages, re-arms, and
//!    drains the events recorded before the arm. The epoch's dirty set is the union of both:
//!    the kernel's soft-dirty view catches writes no fault of the target shows (vhost kernel
//!    threads writing guest RAM, `process_vm_writev`), and the events catch writes the
//!    pagemap read raced with. Pages of mappings that did not exist at the previous arm are
//!    taken from events only, because the kernel reports a new mapping soft-dirty as a whole,
//!    written or not. The two one-sided differences are counted and reported, never hidden.
//! 4. a transparent huge page is soft-dirty per 2 MiB, not per 4 KiB: a dirty one is resolved
//!    after the re-arm by hashing a fixed sample of its subpages ([`super::thp`]), so every
//!    count (interval, growth window, run) is in 4 KiB pages, exact or estimated with a 95 %
//!    interval; a huge page that cannot be resolved is kept apart, never counted as 4 KiB.
//!
//! Cost: every page written in an epoch takes one extra fault, and each arm holds the
//! target's memory-map lock while it write-protects (the target cannot fault meanwhile). The
//! backend calibrates what one write-protect fault costs on this machine at start, times every
//! arm, and reports the share of one CPU the target loses to both. While that share is above
//! `--max-overhead` during the first three intervals, it lengthens the epoch (never shortens
//! it below `--epoch`), always to a length that divides the interval, so every interval holds
//! whole epochs and the growth curve's windows mean one thing. The pagemap scan is
//! migtrace's own CPU time (8 bytes read per page of writable memory per epoch) and is
//! reported separately.
//!
//! Arming clears soft-dirty bits for everybody. If something else tracks the target with
//! them (a CRIU pre-dump, another migtrace), arming would corrupt its view: the backend
//! refuses unless `--force`, when the target is being traced or already has cleared bits.
use std::{
    collections::{HashMap, HashSet},
    fs::{File, OpenOptions},
    io::Write,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use migtrace_common::PageEvent;

use crate::probe::fault::{FaultProbe, ProbeOptions};

use super::{
    growth::{GrowthWindows, PageSet},
    pagemap::Pagemap,
    thp::{DirtySet, Scan, ThpTracker, HUGE, K},
    DirtySource, SourceOptions,
};
use crate::{
    error::Error,
    model::summary::FULL_SHARE,
    record::{BackendStats, FinalReport, IntervalReport, SoftDirtyStats},
    target::page_size,
};

/// The base tick: epochs are whole multiples of it.
pub const TICK: Duration = Duration::from_millis(50);
const MAX_EPOCH_TICKS: u32 = 20;
const PM_SOFT_DIRTY: u64 = 1 << 55;
const PM_PRESENT: u64 = 1 << 63;
const ADAPT_INTERVALS: u32 = 3;
/// migtrace's own CPU for the epochs (scanning pagemap, hashing huge pages' subpages) may be
/// this many times `--max-overhead` (that budget is the target's; scanning and hashing cost
/// the target nothing but shared reads of its memory-map lock).
const OWN_CPU_BUDGET: f64 = 10.0;

/// Probes soft-dirty support on this kernel: a freshly written page must read soft-dirty in
/// pagemap (bit 55 is always 0 on kernels without `CONFIG_MEM_SOFT_DIRTY`).
pub fn kernel_support() -> std::result::Result<(), Error> {
    let no = |m: String| Error::Unsupported(m);
    let page = page_size() as usize;
    // SAFETY: a private anonymous page of our own, written once and unmapped.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if m == libc::MAP_FAILED {
            return Err(no("mmap of a probe page failed".into()));
        }
        std::ptr::write_volatile(m as *mut u8, 1);
        let r = pagemap_entry(std::process::id(), m as u64);
        libc::munmap(m, page);
        match r {
            Ok(e) if e & PM_SOFT_DIRTY != 0 => Ok(()),
            Ok(_) => Err(no(
                "this kernel does not track soft-dirty pages (CONFIG_MEM_SOFT_DIRTY is not set)"
                    .into(),
            )),
            Err(e) => Err(no(format!("cannot read pagemap: {e}"))),
        }
    }
}

fn pagemap_entry(pid: u32, addr: u64) -> std::io::Result<u64> {
    let mut e = [0u64];
    Pagemap::open(pid)?.read_entries(addr, &mut e)?;
    Ok(e[0])
}

fn clear_refs(pid: u32) -> std::io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/clear_refs"))?
        .write_all(b"4")
}

pub(super) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Measures what one write-protect fault costs here: write 4096 pages of our own, clear
/// their soft-dirty bits, and time the rewrite. Returns nanoseconds per fault.
fn calibrate_fault_ns() -> Result<f64> {
    let page = page_size() as usize;
    let n = 4096;
    // SAFETY: our own private mapping, written inside its bounds, then unmapped.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            n * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if m == libc::MAP_FAILED {
            return Err(anyhow!("mmap for calibration failed"));
        }
        libc::madvise(m, n * page, libc::MADV_NOHUGEPAGE);
        let p = m as *mut u8;
        for i in 0..n {
            std::ptr::write_volatile(p.add(i * page), 1);
        }
        // Baseline: the same loop without faults.
        let t0 = Instant::now();
        for i in 0..n {
            std::ptr::write_volatile(p.add(i * page), 2);
        }
        let base = t0.elapsed();
        clear_refs(std::process::id()).context("calibration clear_refs")?;
        let t1 = Instant::now();
        for i in 0..n {
            std::ptr::write_volatile(p.add(i * page), 3);
        }
        let faulting = t1.elapsed();
        libc::munmap(m, n * page);
        Ok((faulting.saturating_sub(base)).as_nanos() as f64 / n as f64)
    }
}

/// Where migtrace records that it armed a process: `/run/migtrace/softdirty/PID-STARTTIME`.
/// A watch holds an exclusive flock on it; the file stays afterwards, so a later watch knows
/// that cleared bits were migtrace's own doing and not another tool's.
fn claim(pid: u32) -> std::result::Result<(File, bool), Error> {
    let no = |m: String| Error::Unsupported(m);
    // The start time tells this process from a later one with the same pid.
    let start = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_err(|e| no(format!("/proc/{pid}/stat: {e}")))?
        .starttime;
    let dir = std::path::Path::new("/run/migtrace/softdirty");
    std::fs::create_dir_all(dir).map_err(|e| no(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("{pid}-{start}"));
    let existed = path.exists();
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| no(format!("{}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err(no(format!("another migtrace is already tracking pid {pid} with soft-dirty ({} is locked); two arming watches would corrupt each other (--force overrides)", path.display())));
    }
    Ok((f, existed))
}

/// Refuses when another tool seems to use the target's soft-dirty bits.
fn check_not_in_use(pid: u32) -> std::result::Result<(), Error> {
    let no = |m: String| Error::Unsupported(m);
    let tracer = procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .map(|s| s.tracerpid)
        .unwrap_or(0);
    if tracer != 0 {
        return Err(no(format!(
            "pid {pid} is being traced by pid {tracer} (a CRIU dump or debugger?); arming soft-dirty would corrupt its view (--force overrides)"
        )));
    }
    // A process whose soft-dirty bits were never cleared has them set on every present page
    // (new mappings start soft-dirty). Many present pages with the bit clear mean someone
    // cleared them: a CRIU pre-dump or another migtrace.
    let regions = crate::target::Target::open(pid)
        .and_then(|t| t.writable_regions())
        .map_err(|e| no(e.to_string()))?;
    let pm = Pagemap::open(pid).map_err(|e| no(format!("/proc/{pid}/pagemap: {e}")))?;
    let (mut present, mut clean) = (0u64, 0u64);
    // A sample of the first 64k present pages is plenty for this check.
    let _ = pm.walk(&regions, |_, e| {
        if e & PM_PRESENT != 0 {
            present += 1;
            clean += u64::from(e & PM_SOFT_DIRTY == 0);
        }
        present < 65_536
    });
    if present >= 64 && clean * 2 > present {
        return Err(no(format!(
            "{clean} of {present} present pages of pid {pid} have their soft-dirty bit cleared: something (a CRIU pre-dump, another migtrace) already tracks it, and arming would corrupt its view (--force overrides)"
        )));
    }
    Ok(())
}

/// Window lengths of the growth curve: 1 .. 2^15 epochs.
const LEVELS: usize = 16;

/// The epoch lengths that divide `--interval` (in ticks), and the one nearest `--epoch`.
fn epoch_for(opts: &SourceOptions) -> Result<(Vec<u32>, u32)> {
    let interval_ticks = (opts.interval.as_millis() / TICK.as_millis()) as u32;
    if !opts.interval.as_millis().is_multiple_of(TICK.as_millis()) || interval_ticks == 0 {
        return Err(Error::Usage(format!(
            "softdirty needs an --interval that is a multiple of {} ms (got {:?})",
            TICK.as_millis(),
            opts.interval
        ))
        .into());
    }
    let choices = epoch_choices(interval_ticks);
    let wanted = (opts.epoch.as_millis() / TICK.as_millis()) as u32;
    let epoch_ticks = *choices
        .iter()
        .min_by_key(|&&c| (c as i64 - wanted as i64).abs())
        .unwrap_or(&1);
    if epoch_ticks != wanted {
        log::warn!(
            "softdirty epoch {} ms does not divide the {} ms interval: using {} ms",
            wanted * 50,
            interval_ticks * 50,
            epoch_ticks * 50
        );
    }
    Ok((choices, epoch_ticks))
}

/// Epoch lengths, in ticks, that divide an interval of `interval_ticks`, up to 1 s.
fn epoch_choices(interval_ticks: u32) -> Vec<u32> {
    (1..=MAX_EPOCH_TICKS.min(interval_ticks))
        .filter(|d| interval_ticks.is_multiple_of(*d))
        .collect()
}

pub struct SoftDirtySource {
    pid: u32,
    /// The flocked claim file (released when the watch ends).
    _claim: Option<File>,
    probe: FaultProbe,
    pagemap: Pagemap,
    /// Allowed epoch lengths (ticks dividing the interval) and the current one.
    choices: Vec<u32>,
    epoch_ticks: u32,
    /// Epochs ended in this interval, and when the interval began (CLOCK_MONOTONIC at the
    /// boundary tick, before its scan): epoch k ends on the tick nearest
    /// `interval_start_ns + (k+1) x epoch`, a grid on the clock, not a count of ticks.
    epochs_done: u32,
    interval_start_ns: u64,
    /// Epochs left out of the growth curve (cut by the end, or the target gone).
    epochs_outside_growth: u64,
    /// Whether the grid has been put on the watch's clock (at the first tick).
    on_watch_clock: bool,
    max_overhead: f64,
    fault_ns: f64,
    /// CLOCK_MONOTONIC of the last arm, and of the arm that started the interval.
    arm_ns: u64,
    interval_arm_ns: u64,
    /// Writable mappings at the last arm (pages outside them come from events only).
    armed_regions: Vec<crate::target::Region>,
    /// `--range`, or a guest's RAM blocks: the pagemap side is clipped to them, as the
    /// kernel side is to the range around them.
    ranges: Vec<(u64, u64)>,
    epoch: DirtySet,
    interval_set: DirtySet,
    all: DirtySet,
    threads: HashMap<u32, u64>,
    levels: GrowthWindows<DirtySet>,
    /// Resolves dirty transparent huge pages to 4 KiB by content sampling.
    thp: ThpTracker,
    interval: Duration,
    /// Per sampled huge page, the sum over intervals of its estimate's standard deviation:
    /// over full intervals, and over partial ones (for when only those are counted).
    sd_full: HashMap<u64, f64>,
    sd_partial: HashMap<u64, f64>,
    any_full: bool,
    /// THP hashing and pagemap scan time at the end of the previous interval, and the share
    /// of a CPU both took in the last interval.
    hash_mark: Duration,
    scan_mark: Duration,
    own_pct: f64,
    mismatch_event_only: u64,
    pagemap_only: u64,
    new_mapping_only: u64,
    induced: u64,
    arm_time: Duration,
    arm_time_interval: Duration,
    scan_time: Duration,
    intervals: u32,
    started: Instant,
    gone: bool,
    overhead_pct: f64,
}

impl SoftDirtySource {
    pub fn new(opts: &SourceOptions) -> Result<SoftDirtySource> {
        crate::probe::require()?;
        kernel_support()?;
        let (choices, epoch_ticks) = epoch_for(opts)?;
        let claim = match claim(opts.pid) {
            Ok((f, armed_before)) => {
                // Bits that migtrace itself cleared in an earlier watch are no sign of another tool.
                if !opts.force && !armed_before {
                    check_not_in_use(opts.pid)?;
                }
                Some(f)
            }
            Err(why) if !opts.force => return Err(why.into()),
            Err(_) => None,
        };
        let fault_ns = calibrate_fault_ns()?;
        let probe = FaultProbe::attach(ProbeOptions {
            tgid: opts.pid,
            range: opts.range,
            record_pages: Some(16 << 20),
        })?;
        let pagemap = Pagemap::open(opts.pid).context("opening the target's pagemap")?;
        let mut s = SoftDirtySource {
            pid: opts.pid,
            _claim: claim,
            probe,
            pagemap,
            choices,
            epoch_ticks,
            epochs_done: 0,
            interval_start_ns: 0,
            epochs_outside_growth: 0,
            on_watch_clock: false,
            max_overhead: opts.max_overhead_pct,
            fault_ns,
            arm_ns: 0,
            interval_arm_ns: 0,
            armed_regions: Vec::new(),
            ranges: opts.scope(),
            epoch: DirtySet::default(),
            interval_set: DirtySet::default(),
            all: DirtySet::default(),
            threads: HashMap::new(),
            levels: GrowthWindows::new(LEVELS),
            thp: ThpTracker::new(opts.pid),
            interval: opts.interval,
            sd_full: HashMap::new(),
            sd_partial: HashMap::new(),
            any_full: false,
            hash_mark: Duration::ZERO,
            scan_mark: Duration::ZERO,
            own_pct: 0.0,
            mismatch_event_only: 0,
            pagemap_only: 0,
            new_mapping_only: 0,
            induced: 0,
            arm_time: Duration::ZERO,
            arm_time_interval: Duration::ZERO,
            scan_time: Duration::ZERO,
            intervals: 0,
            started: Instant::now(),
            gone: false,
            overhead_pct: 0.0,
        };
        s.take_thp_baseline()?;
        s.hash_mark = s.thp.counters.hash_time;
        s.scan_mark = s.scan_time;
        s.interval_start_ns = monotonic_ns();
        s.arm()?;
        s.interval_arm_ns = s.arm_ns;
        Ok(s)
    }

    /// The target's writable mappings, clipped to `--range` or the guest's RAM.
    fn regions(&self) -> Result<Vec<crate::target::Region>> {
        crate::target::Target::open(self.pid)?
            .with_ranges(self.ranges.clone())
            .writable_regions()
    }

    /// Hashes the sampled subpages of every huge page, for the first epoch to compare with.
    fn take_thp_baseline(&mut self) -> Result<()> {
        let regions = self.regions()?;
        self.thp
            .take_baseline(&mut self.pagemap, &regions)
            .context("reading the target's pagemap for its huge pages")
    }

    fn arm(&mut self) -> Result<()> {
        self.armed_regions = self.regions()?;
        let t = Instant::now();
        self.arm_ns = monotonic_ns();
        let r = clear_refs(self.pid)
            .with_context(|| format!("arming soft-dirty on pid {} (clear_refs)", self.pid));
        let took = t.elapsed();
        self.arm_time += took;
        self.arm_time_interval += took;
        r
    }

    /// Drains the ring buffer: events before `split_ns` go to the finished epoch set, later
    /// ones to `next`; pages of events at or after `late_ns` also go to `late` (written while
    /// pagemap was being read: not expected to show there).
    fn drain(
        &mut self,
        split_ns: Option<u64>,
        late_ns: Option<u64>,
        next: &mut Vec<PageEvent>,
        late: &mut HashSet<u64>,
    ) {
        let Some(rb) = self.probe.events() else {
            return;
        };
        while let Some(item) = rb.next() {
            if item.len() < std::mem::size_of::<PageEvent>() {
                continue;
            }
            // SAFETY: the kernel wrote a PageEvent; read unaligned from the ring buffer.
            let e: PageEvent =
                unsafe { std::ptr::read_unaligned(item.as_ptr() as *const PageEvent) };
            if split_ns.is_some_and(|s| e.time_ns >= s) {
                next.push(e);
                continue;
            }
            if late_ns.is_some_and(|l| e.time_ns >= l) {
                late.insert(e.page);
            }
            // (What `take_event` does, on the fields: the ring buffer borrows the probe.)
            if self.thp.seen_by_hash(e.page, e.time_ns) || self.epoch.exact.insert(e.page) {
                *self.threads.entry(e.tid).or_default() += 1;
            }
        }
    }

    /// Adds a fault event to the epoch. A write to a huge page that the previous epoch's
    /// resolution hashed after it was made is that epoch's: its estimate took it in.
    fn take_event(&mut self, e: &PageEvent) {
        if self.thp.seen_by_hash(e.page, e.time_ns) || self.epoch.exact.insert(e.page) {
            *self.threads.entry(e.tid).or_default() += 1;
        }
    }

    /// Present soft-dirty pages of the writable mappings, with the dirty huge pages apart.
    fn soft_dirty_pages(&mut self) -> Result<Scan> {
        let regions = self.regions()?;
        Ok(self.thp.scan(&mut self.pagemap, &regions, false)?)
    }

    fn in_armed_regions(&self, page: u64) -> bool {
        let i = self.armed_regions.partition_point(|r| r.end <= page);
        self.armed_regions
            .get(i)
            .is_some_and(|r| r.start <= page && page < r.end)
    }

    /// Nominal epoch length, ns.
    fn epoch_ns(&self) -> u64 {
        self.epoch_ticks as u64 * TICK.as_nanos() as u64
    }

    /// Whether this tick ends an epoch: the grid point `interval_start_ns + (k+1) x epoch`
    /// is at most half a tick away, and it is not the interval's last epoch (the boundary ends
    /// that one). Counting ticks instead let late ticks (a loaded 2-vCPU TCG guest) stretch
    /// every epoch and leave the interval's last one short, and a short last epoch restarted
    /// the growth windows: a CI run's 250 ms epochs gave 27, 10 and 1 windows of 1, 2 and 4
    /// epochs in 9 s, too few to check the curve. On the grid a late tick lengthens one
    /// epoch and the next is shorter; the interval's epochs stay in step with it.
    fn epoch_due(&self) -> bool {
        let per_interval = (self.interval.as_nanos() as u64 / self.epoch_ns()).max(1) as u32;
        if self.epochs_done + 1 >= per_interval {
            return false;
        }
        let due = self.interval_start_ns + (self.epochs_done as u64 + 1) * self.epoch_ns();
        monotonic_ns() + TICK.as_nanos() as u64 / 2 >= due
    }

    /// Ends the epoch: read pagemap, re-arm, take the events before the arm, and form the
    /// epoch's dirty set. Unless the target is gone or `cut` (the watch ended inside it),
    /// the epoch enters the growth curve at its measured length, whatever that is: in a
    /// 2-vCPU TCG guest ticks came 50 to 120 ms late, so 100 ms epochs measured 27 to 219 ms
    /// (a late one, then a short one as the grid caught up). Leaving those out restarted
    /// the windows 7 to 15 times in 9 s; kept, each window's x is its measured length and
    /// the curve's point the mean of those (the curve is near linear over one epoch's
    /// spread, so the mean of U over the spread is U at the mean, to well under 1 %).
    fn end_epoch(&mut self, cut: bool) {
        let prev_arm_ns = self.arm_ns;
        let mut carry = Vec::new();
        let mut late = HashSet::new();
        if !self.gone {
            let scan = Instant::now();
            let pm_start = monotonic_ns();
            let pm = self.soft_dirty_pages();
            self.scan_time += scan.elapsed();
            let rearmed = self.arm();
            if pm.is_err() || rearmed.is_err() {
                // The target exited between the checks: keep what the events say.
                self.gone = true;
            }
            self.drain(Some(self.arm_ns), Some(pm_start), &mut carry, &mut late);
            if let Ok(pm) = pm {
                self.merge_scan(pm, &late);
            }
        } else {
            self.drain(None, None, &mut carry, &mut late);
        }
        let epoch = std::mem::take(&mut self.epoch);
        self.interval_set.unite(&epoch);
        self.all.unite(&epoch);
        // The epoch ran from the previous arm to this one.
        let len_ns = self.arm_ns.saturating_sub(prev_arm_ns);
        if !cut && !self.gone {
            self.levels.push(&epoch, len_ns as f64 / 1e9);
        } else {
            self.epochs_outside_growth += 1;
            self.levels.restart_windows();
        }
        for e in carry {
            self.take_event(&e);
        }
    }

    /// Adds a pagemap scan to the epoch's events: 4 KiB pages by the cross-check rules, and
    /// the dirty huge pages resolved by sampling (the re-arm has already happened).
    fn merge_scan(&mut self, pm: Scan, late: &HashSet<u64>) {
        let huge: HashSet<u64> = pm.huge.iter().chain(&pm.clipped_huge).copied().collect();
        self.mismatch_event_only += self
            .epoch
            .exact
            .iter()
            .filter(|&&p| {
                !pm.dirty.contains(&p) && !huge.contains(&(p & !(HUGE - 1))) && !late.contains(&p)
            })
            .count() as u64;
        let extra: Vec<u64> = pm.dirty.difference(&self.epoch.exact).copied().collect();
        for p in extra {
            if self.in_armed_regions(p) {
                self.pagemap_only += 1;
                self.epoch.exact.insert(p);
            } else {
                self.new_mapping_only += 1;
            }
        }
        // A fault that raced with the scan (the huge page was not yet mapped, or not yet
        // soft-dirty, when read) may have let a whole huge page be written before the re-arm:
        // such a page is resolved too.
        let (mut resolve, mut mapped) = (pm.huge, pm.mapped);
        let raced: HashSet<u64> = self
            .epoch
            .exact
            .iter()
            .filter(|&p| !pm.dirty.contains(p))
            .map(|&p| p & !(HUGE - 1))
            .filter(|b| !huge.contains(b))
            .collect();
        for b in raced {
            if self.thp.huge_now(&mut self.pagemap, b) {
                resolve.push(b);
                mapped.insert(b);
            }
        }
        // A huge page of a new mapping is resolved too: it was not mapped at the previous
        // scan, so its subpages compare with zeros and only written ones count.
        self.thp
            .resolve((&resolve, &pm.clipped_huge), mapped, &mut self.epoch);
    }

    /// Lengthens the epoch, during the first intervals only, while the target's overhead is
    /// above `--max-overhead` or migtrace's own CPU for the epochs (the pagemap scans and
    /// the THP hashing, both once per epoch) above `OWN_CPU_BUDGET` times it: longer
    /// epochs cost less of both.
    fn adapt(&mut self, secs: f64) {
        let (hashed, scanned) = (self.thp.counters.hash_time, self.scan_time);
        let own = hashed.saturating_sub(self.hash_mark) + scanned.saturating_sub(self.scan_mark);
        let own_pct = own.as_secs_f64() / secs * 100.0;
        self.hash_mark = hashed;
        self.scan_mark = scanned;
        self.own_pct = own_pct;
        let over =
            self.overhead_pct > self.max_overhead || own_pct > OWN_CPU_BUDGET * self.max_overhead;
        if self.intervals > ADAPT_INTERVALS || !over {
            return;
        }
        if let Some(&longer) = self.choices.iter().find(|&&c| c > self.epoch_ticks) {
            log::info!(
                "softdirty: overhead {:.2} % (budget {:.2} %), pagemap scans and THP hashing {:.1} % of a CPU (budget {:.1} %): epoch {} -> {} ms",
                self.overhead_pct,
                self.max_overhead,
                own_pct,
                OWN_CPU_BUDGET * self.max_overhead,
                self.epoch_ticks * 50,
                longer * 50
            );
            self.epoch_ticks = longer;
            // The growth curve is per epoch length: start it afresh.
            self.levels = GrowthWindows::new(LEVELS);
        }
    }

    /// The interval's 4 KiB estimate (exact where no huge page was sampled); remembers each
    /// sampled huge page's standard deviation for the run's interval. Clears the set.
    fn interval_estimate(&mut self, secs: f64) -> super::thp::Estimate {
        let full = secs >= FULL_SHARE * self.interval.as_secs_f64();
        self.any_full |= full;
        let acc = if full {
            &mut self.sd_full
        } else {
            &mut self.sd_partial
        };
        let est = self
            .interval_set
            .estimate_with(|b, sd| *acc.entry(b).or_default() += sd);
        self.interval_set = DirtySet::default();
        est
    }

    /// Standard deviation of the summed intervals' pages when huge pages were sampled. A
    /// huge page keeps its sample, so its errors may repeat from interval to interval: its
    /// standard deviations add (the bound whatever the correlation); huge pages are
    /// independent, so their variances add.
    fn total_pages_sd(&self) -> Option<f64> {
        let acc = if self.any_full {
            &self.sd_full
        } else {
            &self.sd_partial
        };
        let touched = self.thp.counters.resolved + self.thp.counters.unresolved > 0;
        touched.then(|| acc.values().map(|s| s * s).sum::<f64>().sqrt())
    }

    pub fn stats(&self) -> SoftDirtyStats {
        let el = self.started.elapsed().as_secs_f64().max(1e-9);
        SoftDirtyStats {
            epoch_s: self.epoch_ticks as f64 * TICK.as_secs_f64(),
            epochs_outside_growth: Some(self.epochs_outside_growth),
            induced_faults: self.induced,
            induced_faults_per_sec: self.induced as f64 / el,
            fault_cost_ns: self.fault_ns,
            arm_time_s: self.arm_time.as_secs_f64(),
            est_target_cpu_overhead_pct: self.overhead_pct,
            max_overhead_pct: self.max_overhead,
            pagemap_scan_cpu_pct: self.scan_time.as_secs_f64() / el * 100.0,
            pagemap_reader: Some(self.pagemap.method()),
            pages_from_pagemap_only: self.pagemap_only,
            new_mapping_pages_without_event: self.new_mapping_only,
            events_not_soft_dirty: self.mismatch_event_only,
            ..self.thp_stats(el)
        }
    }

    /// When the epoch scans cost more than their budget even at the longest epoch: every
    /// epoch reads the soft-dirty state of all the target's writable memory, so that cost
    /// grows with the target (docs/softdirty.md).
    fn scan_caveat(&self) -> Option<String> {
        let longest = self.choices.last() == Some(&self.epoch_ticks);
        let budget = OWN_CPU_BUDGET * self.max_overhead;
        (self.intervals > ADAPT_INTERVALS && longest && self.own_pct > budget).then(|| {
            format!(
                "the pagemap scans (with {}) and THP hashing took {:.1} % of a CPU at the longest epoch ({} ms), above their budget of {budget:.1} %: each epoch reads the soft-dirty state of all the target's writable memory",
                self.pagemap.method().describe(),
                self.own_pct,
                self.epoch_ticks * 50
            )
        })
    }

    /// What the transparent huge pages did to the count, once there were dirty ones.
    fn thp_caveats(&self) -> Vec<String> {
        let t = &self.thp.counters;
        let mut c = Vec::new();
        if t.resolved > 0 {
            c.push(format!(
                "transparent huge pages: soft-dirty marks 2 MiB at a time, so {} dirty huge pages (summed over epochs) were resolved to 4 KiB by hashing {K} of their 512 subpages: those pages are an estimate, with its 95 % interval; a write that leaves a subpage's content unchanged is not seen there",
                t.resolved
            ));
        }
        if t.unresolved > 0 {
            c.push(format!(
                "{} dirty huge pages (summed over epochs, {} MiB) were known only at 2 MiB granularity (no earlier hashes, or unreadable): they are left out of the rate and only widen the upper end of its 95 % interval",
                t.unresolved,
                t.unresolved * 2
            ));
        }
        c
    }

    /// The THP figures, shown only once the target had a huge page.
    fn thp_stats(&self, el: f64) -> SoftDirtyStats {
        let c = &self.thp.counters;
        let mut s = SoftDirtyStats::default();
        if c.hashed_pages == 0 {
            return s;
        }
        let all = self.all.estimate();
        s.pages_exact_4k = Some(all.exact_pages);
        s.thp_pages_estimated_4k = Some(all.huge_estimated);
        s.thp_huge_pages_resolved = Some(c.resolved);
        s.thp_huge_pages_2m_only = Some(c.unresolved);
        s.thp_detection = Some(c.detect);
        s.thp_sampled_per_huge_page = Some(K as u64);
        s.thp_hashed_pages = Some(c.hashed_pages);
        s.thp_baseline_pages = Some(c.baseline_pages);
        s.thp_hash_cpu_pct = Some(c.hash_time.as_secs_f64() / el * 100.0);
        s
    }
}

impl DirtySource for SoftDirtySource {
    fn name(&self) -> &'static str {
        "softdirty"
    }

    fn caveats(&self) -> Vec<String> {
        let mut c = vec![
            format!(
                "softdirty is exact per epoch ({} ms) on 4 KiB pages{}: every page written takes one extra write-protect fault per epoch",
                self.epoch_ticks as u64 * TICK.as_millis() as u64,
                if self.thp.counters.resolved > 0 {
                    " (transparent huge pages: estimated, see below)"
                } else {
                    ""
                }
            ),
            "pages of a mapping created or grown during an epoch count only where a fault was seen; hugetlbfs memory is not tracked by soft-dirty".into(),
        ];
        c.extend(self.thp_caveats());
        c.extend(self.scan_caveat());
        c
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(TICK)
    }

    fn tick(&mut self) -> Result<()> {
        if !self.on_watch_clock {
            // The watch's clock, and so its interval boundaries, start after this source is
            // built and armed (the start line and a link probe come between), and its timer
            // ticks first one tick after that start: the grid goes on that clock, so the
            // first interval's epochs are not run early and cut at its boundary.
            self.interval_start_ns = monotonic_ns().saturating_sub(TICK.as_nanos() as u64);
            self.on_watch_clock = true;
        }
        if self.epoch_due() {
            self.epochs_done += 1;
            self.end_epoch(false);
        } else {
            let (mut carry, mut late) = (Vec::new(), HashSet::new());
            self.drain(None, None, &mut carry, &mut late);
        }
        Ok(())
    }

    fn on_exec(&mut self) -> Result<()> {
        // The old pagemap descriptor reads the dead address space; the new one starts with
        // every page soft-dirty, so it is armed afresh. The epoch in progress is not full.
        self.pagemap =
            Pagemap::open(self.pid).context("opening the target's pagemap after its exec")?;
        self.thp.reset();
        self.take_thp_baseline()?;
        self.arm()?;
        self.levels.restart_windows();
        Ok(())
    }

    fn end_interval(&mut self, target_gone: bool) -> Result<IntervalReport> {
        self.gone |= target_gone;
        // The interval boundary ends the interval's last epoch. An interval that ends over
        // half an epoch early is the watch's last (a signal, the target's exit): its last
        // epoch was cut, and stays out of the growth curve.
        let now = monotonic_ns();
        let ran = now.saturating_sub(self.interval_start_ns);
        let cut = ran + self.epoch_ns() / 2 < self.interval.as_nanos() as u64;
        self.epochs_done = 0;
        self.interval_start_ns = now;
        self.end_epoch(cut);
        let (faults, drops) = self.probe.take_deltas()?;
        self.induced += faults.write_protect;
        let window_ns = self.arm_ns.saturating_sub(self.interval_arm_ns);
        let window = Duration::from_nanos(window_ns);
        self.interval_arm_ns = self.arm_ns;
        let secs = window.as_secs_f64().max(1e-9);
        self.overhead_pct = (faults.write_protect as f64 * self.fault_ns / 1e9
            + self.arm_time_interval.as_secs_f64())
            / secs
            * 100.0;
        self.arm_time_interval = Duration::ZERO;
        self.intervals += 1;
        self.adapt(secs);
        let est = self.interval_estimate(secs);
        let mut report =
            IntervalReport::exact((window_ns > 0).then_some(window), est.pages, faults, drops);
        report.ci95 = est.ci95();
        Ok(report)
    }

    fn finish(&mut self) -> Result<FinalReport> {
        self.probe.stop()?;
        let all = self.all.estimate();
        let growth = self.levels.curve();
        let mut threads: Vec<(u32, u64)> = self.threads.iter().map(|(&t, &n)| (t, n)).collect();
        threads.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(FinalReport {
            growth,
            unique_pages_total: Some(all.pages),
            threads,
            zero_page_share: None,
            backend_stats: Some(BackendStats::Softdirty(self.stats())),
            total_pages_sd: self.total_pages_sd(),
            warmup_pages_sd: None,
            threads_attribute_dirtying: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_divide_the_interval() {
        assert_eq!(epoch_choices(20), vec![1, 2, 4, 5, 10, 20]);
        assert_eq!(epoch_choices(6), vec![1, 2, 3, 6]);
        assert_eq!(epoch_choices(1), vec![1]);
        assert_eq!(epoch_choices(40), vec![1, 2, 4, 5, 8, 10, 20]);
    }
}
