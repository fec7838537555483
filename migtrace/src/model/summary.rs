//! Watch statistics: from the backends' per-interval reports to the interval records and the
//! summary a watch prints and saves. Pure: times come in as seconds, the target's state as
//! plain values, so a recorded series replays to the same summary (the golden-master test in
//! `migtrace/tests/watch_golden.rs` does exactly that).
use crate::record::{
    Drops, EndReason, FaultCounts, FinalReport, GuestInfo, Interval, IntervalReport,
    RatePercentiles, Summary, ThreadLine, ThreadTime,
};

/// One measured interval as the summary counts it.
#[derive(Clone, Copy, Debug)]
struct Measured {
    pages: f64,
    dur: f64,
    pps: f64,
    /// Shorter than [`FULL_SHARE`] of the interval (the watch ended mid-interval).
    partial: bool,
}

/// An interval shorter than this share of `--interval` is partial.
pub const FULL_SHARE: f64 = 0.75;

/// Which intervals the summary counts, and why the others are left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counted {
    /// Full intervals after the warm-up (the normal case).
    Full,
    /// Only partial intervals (after the warm-up) were measured: they are all there is.
    PartialOnly,
    /// Every interval was warm-up: all are kept.
    WarmupOnly,
    /// Nothing was measured.
    Nothing,
}

/// Running statistics of a set of intervals: O(1) in the number of intervals (the rate
/// histogram's size depends on the range of the rates, not on how many there are).
#[derive(Clone, Debug)]
struct Acc {
    n: u64,
    /// Sums in arrival order: the same additions, in the same order, as summing a list.
    pages: f64,
    secs: f64,
    peak_pps: f64,
    /// Interval rates, pages per second (hdrhistogram, 3 significant digits; u32 counts:
    /// 4 billion intervals, and half the memory of u64, which is tens of KiB).
    rates: hdrhistogram::Histogram<u32>,
}

impl Default for Acc {
    fn default() -> Acc {
        Acc {
            n: 0,
            pages: 0.0,
            secs: 0.0,
            peak_pps: 0.0,
            rates: hdrhistogram::Histogram::new(3).expect("3 significant digits"),
        }
    }
}

impl Acc {
    fn add(&mut self, m: &Measured) {
        self.n += 1;
        self.secs += m.dur;
        self.pages += m.pages;
        self.peak_pps = self.peak_pps.max(m.pps);
        // Auto-resizing histogram: recording cannot fail for finite non-negative rates.
        let _ = self.rates.record(m.pps.max(0.0).round() as u64);
    }
}

/// How many partial intervals the summary names one by one; more are counted.
const PARTIALS_NAMED: usize = 16;

/// Accumulates intervals into the summary's rate statistics.
///
/// Two kinds of interval are shown but left out of the summary's rate, peak and
/// percentiles, because their rate does not describe an interval of the asked length:
/// - warm-up: a sampling source reports `warmup` on an interval after which it had to grow
///   its sample (the first estimates of a large target come from a sample too small for the
///   requested precision); that interval and every one before it are warm-up;
/// - partial: an interval shorter than [`FULL_SHARE`] of `--interval` (the watch ended
///   mid-interval). Unique pages per window grow more slowly than the window for writers
///   that rewrite pages, so a short window reads high: a 0.3 s window of a 64 MiB/s
///   rewriter read 228 MiB/s.
///
/// When nothing else was measured they are kept, and the summary says so: the mean then
/// still never exceeds the peak, because both come from the same intervals.
///
/// Memory is O(1) in the length of the watch: no interval is kept. What is left out is
/// always a prefix (warm-up ends at the last interval that says so, an exec leaves out
/// everything before it), so three running accumulators give exactly the statistics the
/// list of intervals gave: every interval (for a watch that was all warm-up), and the full
/// and the partial intervals after the prefix, which start again from empty when the
/// prefix grows. Sums are added in arrival order, as the list was summed.
pub struct Totals {
    /// Every measured interval.
    all: Acc,
    /// The full intervals after the left-out prefix.
    full: Acc,
    /// The partial intervals after the left-out prefix.
    part: Acc,
    /// The first `warmup` measured intervals are warm-up.
    warmup: u64,
    /// The first `before_exec` measured intervals measured a program the target has since
    /// exec'd away from.
    before_exec: u64,
    /// Lengths of the first [`PARTIALS_NAMED`] partial intervals, in order; their number and
    /// the shortest of all.
    partials: Vec<f64>,
    partial_n: u64,
    partial_min: f64,
    interval_s: f64,
    faults: Option<FaultCounts>,
    drops: Drops,
    page: u64,
}

impl Totals {
    /// Totals for intervals of `interval_s` seconds over pages of `page` bytes.
    pub fn new(interval_s: f64, page: u64) -> Totals {
        Totals {
            all: Acc::default(),
            full: Acc::default(),
            part: Acc::default(),
            warmup: 0,
            before_exec: 0,
            partials: Vec::new(),
            partial_n: 0,
            partial_min: f64::INFINITY,
            interval_s,
            faults: None,
            drops: Drops::default(),
            page,
        }
    }

    /// The target exec'd: what was measured so far describes another program, so the
    /// summary leaves it out (the next interval, which holds the exec, too).
    pub fn exec(&mut self) {
        self.before_exec = self.all.n + 1;
        self.restart_after();
    }

    /// The interval just added was still the new program's start-up after an exec: it
    /// leaves the summary like the ones before it.
    pub fn starting(&mut self) {
        self.before_exec = self.before_exec.max(self.all.n);
        self.restart_after();
    }

    /// The left-out prefix grew past every interval so far.
    fn restart_after(&mut self) {
        self.full = Acc::default();
        self.part = Acc::default();
    }

    /// Intervals at the start that the summary leaves out (warm-up, before an exec).
    fn skipped(&self) -> u64 {
        self.warmup.max(self.before_exec).min(self.all.n)
    }

    fn counted_kind(&self) -> Counted {
        if self.full.n > 0 {
            Counted::Full
        } else if self.part.n > 0 {
            Counted::PartialOnly
        } else if self.all.n > 0 {
            Counted::WarmupOnly
        } else {
            Counted::Nothing
        }
    }

    /// The intervals the summary counts.
    fn counted(&self) -> &Acc {
        match self.counted_kind() {
            Counted::Full => &self.full,
            Counted::PartialOnly => &self.part,
            Counted::WarmupOnly | Counted::Nothing => &self.all,
        }
    }

    /// Number of intervals the summary counts.
    pub fn intervals(&self) -> u64 {
        self.counted().n
    }

    /// Adds one interval's report. `wall_s` is the wall time since the previous interval
    /// ended (used when the source does not know its own window), `t_s` the time since the
    /// watch started. Returns the record to show, or `None` when no rate was measured (the
    /// fault counts and drops of such an interval still count).
    pub fn add(&mut self, r: &IntervalReport, wall_s: f64, t_s: f64) -> Option<Interval> {
        let page = self.page;
        // The source's own window (between its snapshots or arms) when it has one.
        let dur = r.window.map_or(wall_s, |w| w.as_secs_f64());
        self.drops.add(&r.drops);
        if let Some(f) = &r.faults {
            self.faults.get_or_insert_with(FaultCounts::default).add(f);
        }
        if !r.measured {
            return None;
        }
        let pps = if dur > 0.0 { r.unique_pages / dur } else { 0.0 };
        let partial = dur < FULL_SHARE * self.interval_s;
        let m = Measured {
            pages: r.unique_pages,
            dur,
            pps,
            partial,
        };
        self.record(&m, r.warmup);
        Some(Interval {
            t_s,
            duration_s: dur,
            dirty_pages: r.unique_pages,
            dirty_pages_per_sec: pps,
            dirty_bytes_per_sec: pps * page as f64,
            ci95_bytes_per_sec: r
                .ci95
                .map(|(lo, hi)| [lo / dur * page as f64, hi / dur * page as f64]),
            faults: r.faults,
            drops: r.drops,
            sample: r.sample,
            warmup: r.warmup,
            partial,
            note: None,
        })
    }

    /// Counts one measured interval; `warmup`: it and every one before it are warm-up.
    fn record(&mut self, m: &Measured, warmup: bool) {
        let index = self.all.n;
        self.all.add(m);
        if m.partial {
            self.partial_n += 1;
            self.partial_min = self.partial_min.min(m.dur);
            if self.partials.len() < PARTIALS_NAMED {
                self.partials.push(m.dur);
            }
        }
        if warmup {
            self.warmup = self.all.n;
            self.restart_after();
        } else if index >= self.warmup.max(self.before_exec) {
            if m.partial {
                self.part.add(m);
            } else {
                self.full.add(m);
            }
        }
    }

    /// Mean rate over the measured time, pages per second, and that time.
    fn rate_pages(&self) -> (f64, f64) {
        let c = self.counted();
        let rate = if c.secs > 0.0 { c.pages / c.secs } else { 0.0 };
        (rate, c.secs)
    }

    /// Sum of the counted intervals' unique pages.
    fn pages(&self) -> f64 {
        self.counted().pages
    }

    /// The run's 95 % interval of the rate, bytes per second, from the standard deviation
    /// of the summed pages (sampling backends).
    fn ci95(&self, total_pages_sd: Option<f64>, warmup_sd: Option<f64>) -> Option<[f64; 2]> {
        let page = self.page as f64;
        let (rate, secs) = self.rate_pages();
        // Warm-up intervals counted after all: their variance counts too.
        let total_pages_sd = match (self.counted_kind(), total_pages_sd, warmup_sd) {
            (Counted::WarmupOnly, Some(a), Some(b)) => Some(a.hypot(b)),
            (_, sd, _) => sd,
        };
        total_pages_sd.filter(|_| self.intervals() > 0).map(|sd| {
            let half = 1.96 * sd / secs.max(1e-9) * page;
            let r = rate * page;
            [(r - half).max(0.0), r + half]
        })
    }

    /// Mean measured length of the counted intervals, seconds (the asked length when
    /// nothing was measured).
    fn mean_window(&self) -> f64 {
        let c = self.counted();
        if c.n == 0 {
            self.interval_s
        } else {
            c.secs / c.n as f64
        }
    }

    fn peak(&self) -> f64 {
        self.counted().peak_pps
    }

    /// Percentiles of the interval rates (hdrhistogram, 3 significant digits).
    fn percentiles(&self) -> Option<RatePercentiles> {
        let page = self.page as f64;
        let rates = &self.counted().rates;
        (!rates.is_empty()).then(|| {
            let q = |p: f64| rates.value_at_quantile(p) as f64 * page;
            RatePercentiles {
                p50_bytes_per_sec: q(0.5),
                p90_bytes_per_sec: q(0.9),
                p99_bytes_per_sec: q(0.99),
                max_bytes_per_sec: rates.max() as f64 * page,
            }
        })
    }
}

/// The target as read from /proc at one moment.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TargetState {
    pub rss: u64,
    /// Writable memory measured (private and shared).
    pub writable: u64,
    /// Of which shared mappings (memfd, shared anonymous, files).
    #[serde(default)]
    pub shared: u64,
    pub threads: Vec<ThreadTime>,
}

/// What the summary needs besides the interval totals.
pub struct SummaryInput<'a> {
    pub pid: u32,
    pub comm: String,
    pub backend: String,
    pub end: EndReason,
    pub duration_s: f64,
    /// The target at the start and the last time it was seen alive.
    pub first: &'a TargetState,
    pub last: &'a TargetState,
    /// Seconds between those two readings: busy shares divide by this, not by the watch.
    pub busy_window_s: f64,
    /// Clock ticks per second of the thread CPU times.
    pub clock_hz: f64,
    pub fin: &'a FinalReport,
    pub caveats: Vec<String>,
    pub profile_out: Option<String>,
    /// Name of a thread that is not in `last` (it exited): asked of the caller.
    pub thread_comm: &'a dyn Fn(u32) -> String,
    /// The guest, when the target is QEMU: its vCPUs get their busy shares.
    pub guest: Option<GuestInfo>,
}

/// Builds the summary from the totals and the end-of-watch state.
pub fn summarize(t: &Totals, inp: SummaryInput<'_>) -> Summary {
    let page = t.page;
    let busy = busy_shares(
        &inp.first.threads,
        &inp.last.threads,
        inp.busy_window_s,
        inp.clock_hz,
    );
    let threads = thread_lines(&inp, &busy);
    let guest = inp.guest.clone().map(|g| with_vcpu_busy(g, &busy));
    // A guest's writers are its vCPUs: their mean time on CPU is what a throttle acts on.
    let busy_share = match &guest {
        Some(g) if !g.vcpus.is_empty() => {
            let v: Vec<f64> = g.vcpus.iter().filter_map(|c| c.busy_share).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        }
        _ => mean_busy_share(&threads, &busy, inp.fin.threads_attribute_dirtying),
    };
    let (rate_pages, _) = t.rate_pages();
    let mut caveats = inp.caveats;
    if inp.end == EndReason::TargetExited && t.intervals() == 0 {
        caveats.push("the target exited before a full interval was measured".into());
    }
    caveats.extend(interval_caveats(t));
    Summary {
        pid: inp.pid,
        comm: inp.comm,
        backend: inp.backend,
        end_reason: inp.end,
        duration_s: inp.duration_s,
        intervals: t.intervals(),
        interval_s: t.mean_window(),
        dirty_pages: t.pages(),
        dirty_pages_per_sec: rate_pages,
        dirty_bytes_per_sec: rate_pages * page as f64,
        ci95_bytes_per_sec: t.ci95(inp.fin.total_pages_sd, inp.fin.warmup_pages_sd),
        peak_bytes_per_sec: t.peak() * page as f64,
        rate_percentiles: t.percentiles(),
        unique_pages_total: inp.fin.unique_pages_total,
        target_rss_bytes: inp.last.rss,
        writable_bytes: inp.last.writable,
        shared_writable_bytes: inp.last.shared,
        page_size: page,
        faults: t.faults,
        dropped_events: t.drops.total(),
        drops: t.drops,
        growth: inp.fin.growth.clone(),
        threads,
        busy_share,
        zero_page_share: inp.fin.zero_page_share,
        caveats,
        backend_stats: inp.fin.backend_stats.clone(),
        profile_out: inp.profile_out,
        guest,
        qemu_dirty_rate: None,
        link: None,
    }
}

/// The guest with each vCPU's share of the watch on CPU.
fn with_vcpu_busy(mut g: GuestInfo, busy: &[(u32, f64)]) -> GuestInfo {
    for v in &mut g.vcpus {
        v.busy_share = busy.iter().find(|b| b.0 == v.tid).map(|b| b.1);
    }
    g
}

/// What the summary says about the intervals it left out or had to keep.
fn interval_caveats(t: &Totals) -> Vec<String> {
    let mut out = Vec::new();
    match t.counted_kind() {
        Counted::Full => {
            if t.before_exec > t.warmup {
                out.push(format!(
                    "the first {} interval(s) measured the program before the target's exec, or its start-up after it, and are left out of the summary",
                    t.skipped()
                ));
            } else if t.warmup > 0 {
                out.push(format!(
                    "the first {} interval(s) sized the sample (warm-up) and are left out of the summary's rate and percentiles",
                    t.warmup
                ));
            }
            for d in &t.partials {
                out.push(format!(
                    "a partial interval ({d:.2} s of {:.2} s) is shown but left out of the summary: a shorter window reads a different rate",
                    t.interval_s
                ));
            }
            let more = t.partial_n.saturating_sub(t.partials.len() as u64);
            if more > 0 {
                out.push(format!(
                    "{more} more partial interval(s) are shown but left out of the summary"
                ));
            }
        }
        Counted::PartialOnly => out.push(format!(
            "only partial intervals were measured (shortest {:.2} s of {:.2} s): the rate is per that shorter window and reads higher than a full interval would for a writer that rewrites pages",
            t.partial_min,
            t.interval_s
        )),
        Counted::WarmupOnly if t.before_exec > t.warmup => out.push(format!(
            "all {} intervals came before the target's exec, held it or were the new program's start-up (its memory still growing): the summary mixes them and is not the new program's steady rate",
            t.all.n
        )),
        Counted::WarmupOnly => out.push(format!(
            "all {} intervals were sample warm-up (the sample was still being sized): the rate is less precise than requested",
            t.all.n
        )),
        Counted::Nothing => {}
    }
    out
}

/// One line per thread the source attributed writes to, with its share and time on CPU.
fn thread_lines(inp: &SummaryInput<'_>, busy: &[(u32, f64)]) -> Vec<ThreadLine> {
    let total_faults: u64 = inp.fin.threads.iter().map(|t| t.1).sum();
    inp.fin
        .threads
        .iter()
        .map(|&(tid, n)| ThreadLine {
            tid,
            comm: inp
                .last
                .threads
                .iter()
                .find(|t| t.tid == tid)
                .map(|t| t.comm.clone())
                .unwrap_or_else(|| (inp.thread_comm)(tid)),
            write_faults: n,
            share: if total_faults > 0 {
                n as f64 / total_faults as f64
            } else {
                0.0
            },
            busy_share: busy.iter().find(|b| b.0 == tid).map(|b| b.1),
        })
        .collect()
}

/// Mean busy share of the threads that dirtied memory; without attribution of the dirtying
/// itself (sample, sample+fault), of the threads that ran at least 1 % of the time, or, when
/// none did (hundreds of mostly idle threads), of those that ran at all.
fn mean_busy_share(threads: &[ThreadLine], busy: &[(u32, f64)], attributed: bool) -> Option<f64> {
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    if !threads.is_empty() && attributed {
        return mean(threads.iter().filter_map(|t| t.busy_share).collect());
    }
    let ran = |min: f64| busy.iter().map(|b| b.1).filter(|&b| b >= min).collect();
    mean(ran(0.01)).or_else(|| mean(ran(f64::MIN_POSITIVE)))
}

/// (tid, share of the window on CPU) for every thread seen at the end.
pub fn busy_shares(
    t0: &[ThreadTime],
    t1: &[ThreadTime],
    duration_s: f64,
    hz: f64,
) -> Vec<(u32, f64)> {
    t1.iter()
        .map(|t| {
            let before = t0
                .iter()
                .find(|x| x.tid == t.tid)
                .map(|x| x.ticks)
                .unwrap_or(0);
            let s = (t.ticks.saturating_sub(before)) as f64 / hz / duration_s.max(1e-9);
            (t.tid, s.clamp(0.0, 1.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tt(tid: u32, ticks: u64) -> ThreadTime {
        ThreadTime {
            tid,
            comm: format!("t{tid}"),
            ticks,
        }
    }

    #[test]
    fn busy_share_is_cpu_time_over_the_window() {
        let b = busy_shares(&[tt(1, 100)], &[tt(1, 150), tt(2, 500)], 1.0, 100.0);
        assert_eq!(b, vec![(1, 0.5), (2, 1.0)]);
    }

    #[test]
    fn partial_intervals_leave_the_summary_unless_they_are_all() {
        let mut t = Totals::new(1.0, 4096);
        let s = t.add(&interval(100.0, false), 0.3, 0.3).unwrap();
        assert!(s.partial);
        assert_eq!(t.counted_kind(), Counted::PartialOnly);
        assert_eq!(t.rate_pages().0, t.peak(), "mean never above the peak");
        assert!(interval_caveats(&t)[0].starts_with("only partial"));
        let mut t = Totals::new(1.0, 4096);
        t.add(&interval(100.0, false), 1.0, 1.0).unwrap();
        t.add(&interval(100.0, false), 0.1, 1.1).unwrap();
        assert_eq!(t.intervals(), 1);
        assert_eq!(t.rate_pages().0, 100.0);
        assert_eq!(t.peak(), 100.0);
        assert_eq!(t.percentiles().unwrap().max_bytes_per_sec, 100.0 * 4096.0);
        assert!(interval_caveats(&t)[0].starts_with("a partial interval (0.10 s"));
    }

    #[test]
    fn unmeasured_intervals_count_faults_only() {
        let mut t = Totals::new(1.0, 4096);
        let r = IntervalReport {
            measured: false,
            faults: Some(FaultCounts {
                write_not_present: 7,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(t.add(&r, 1.0, 1.0).is_none());
        assert_eq!(t.intervals(), 0);
        assert_eq!(t.faults.unwrap().write_not_present, 7);
    }

    fn interval(pages: f64, warmup: bool) -> IntervalReport {
        IntervalReport {
            measured: true,
            unique_pages: pages,
            warmup,
            ..Default::default()
        }
    }

    /// The list-keeping statistics these totals replaced (every interval kept, the summary
    /// computed over the list at the end): the streaming totals must give the same bits.
    struct Reference {
        measured: Vec<Measured>,
        warmup: usize,
        before_exec: usize,
    }

    impl Reference {
        fn counted(&self) -> (Counted, Vec<Measured>) {
            let skipped = self.warmup.max(self.before_exec).min(self.measured.len());
            let after = &self.measured[skipped..];
            if after.iter().any(|m| !m.partial) {
                let c = after.iter().filter(|m| !m.partial).copied().collect();
                (Counted::Full, c)
            } else if !after.is_empty() {
                (Counted::PartialOnly, after.to_vec())
            } else if !self.measured.is_empty() {
                (Counted::WarmupOnly, self.measured.clone())
            } else {
                (Counted::Nothing, Vec::new())
            }
        }
    }

    /// A small deterministic generator (xorshift), so the test needs no dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn streaming_totals_equal_the_list_they_replaced() {
        let mut kinds = Vec::new();
        for seed in 1..400u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut t = Totals::new(1.0, 4096);
            let mut r = Reference {
                measured: Vec::new(),
                warmup: 0,
                before_exec: 0,
            };
            for _ in 0..(next(&mut rng) % 300) {
                let x = next(&mut rng);
                if x.is_multiple_of(97) {
                    t.exec();
                    r.before_exec = r.measured.len() + 1;
                    continue;
                }
                if x.is_multiple_of(89) {
                    t.starting();
                    r.before_exec = r.before_exec.max(r.measured.len());
                    continue;
                }
                let pages = (next(&mut rng) % 1_000_000) as f64 / 7.0;
                let wall = if x.is_multiple_of(13) || seed % 5 == 0 {
                    0.3
                } else {
                    0.9 + (x % 300) as f64 / 1000.0
                };
                let warmup = x.is_multiple_of(31) && r.measured.len() < 150;
                let rep = IntervalReport {
                    measured: !x.is_multiple_of(17),
                    unique_pages: pages,
                    warmup,
                    ..Default::default()
                };
                if t.add(&rep, wall, 0.0).is_some() {
                    let pps = pages / wall;
                    r.measured.push(Measured {
                        pages,
                        dur: wall,
                        pps,
                        partial: wall < FULL_SHARE,
                    });
                    if warmup {
                        r.warmup = r.measured.len();
                    }
                }
            }
            let (kind, c) = r.counted();
            assert_eq!(t.counted_kind(), kind, "seed {seed}");
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
            assert_eq!(t.intervals(), c.len() as u64);
            let (mut pages, mut secs) = (0.0, 0.0);
            for m in &c {
                secs += m.dur;
                pages += m.pages;
            }
            let rate = if secs > 0.0 { pages / secs } else { 0.0 };
            assert_eq!(t.rate_pages(), (rate, secs), "seed {seed}");
            assert_eq!(t.pages(), c.iter().fold(0.0, |a, m| a + m.pages));
            let window = if c.is_empty() {
                1.0
            } else {
                c.iter().map(|m| m.dur).sum::<f64>() / c.len() as f64
            };
            assert_eq!(t.mean_window(), window, "seed {seed}");
            assert_eq!(t.peak(), c.iter().fold(0.0f64, |a, m| a.max(m.pps)));
            let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            for m in &c {
                h.record(m.pps.max(0.0).round() as u64).unwrap();
            }
            let p = t.percentiles();
            assert_eq!(p.is_some(), !h.is_empty());
            if let Some(p) = p {
                assert_eq!(
                    p.p50_bytes_per_sec,
                    h.value_at_quantile(0.5) as f64 * 4096.0
                );
                assert_eq!(
                    p.p99_bytes_per_sec,
                    h.value_at_quantile(0.99) as f64 * 4096.0
                );
                assert_eq!(p.max_bytes_per_sec, h.max() as f64 * 4096.0);
            }
            let partial: Vec<f64> = r
                .measured
                .iter()
                .filter(|m| m.partial)
                .map(|m| m.dur)
                .collect();
            assert_eq!(t.partial_n, partial.len() as u64);
            assert_eq!(t.partials[..], partial[..partial.len().min(PARTIALS_NAMED)]);
            assert_eq!(t.all.n, r.measured.len() as u64);
            let skipped = r.warmup.max(r.before_exec).min(r.measured.len());
            assert_eq!(t.skipped(), skipped as u64);
        }
        assert_eq!(
            kinds.len(),
            4,
            "every kind of count is exercised: {kinds:?}"
        );
    }

    #[test]
    fn warmup_intervals_leave_the_summary_unless_they_are_all() {
        let mut t = Totals::new(1.0, 4096);
        t.add(&interval(10.0, false), 1.0, 1.0);
        t.add(&interval(20.0, true), 1.0, 2.0);
        assert_eq!(t.intervals(), 2, "all warm-up: kept");
        assert!(interval_caveats(&t)[0].starts_with("all 2"));
        t.add(&interval(100.0, false), 1.0, 3.0);
        t.add(&interval(110.0, false), 1.0, 4.0);
        assert_eq!(t.intervals(), 2);
        assert_eq!(t.rate_pages().0, 105.0);
        assert_eq!(t.peak(), 110.0);
        assert!(interval_caveats(&t)[0].contains("first 2 interval"));
    }
}
