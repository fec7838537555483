//! What the model knows about the guest: its memory, its dirty-set growth curve U(t), its
//! writers (vCPUs or threads) with their busy shares, and its zero pages. Built either from
//! plain numbers (`--mem --dirty-rate --wws`) or from a measured [`Profile`]. Pure: no I/O.
use crate::profile::Profile;

/// Bytes of a 4 KiB page, the page size assumed when no profile says otherwise.
pub const DEFAULT_PAGE: f64 = 4096.0;

/// The dirty-set growth curve: unique bytes dirtied within a window of `t` seconds.
#[derive(Clone, Debug)]
pub enum Curve {
    /// `U(t) = W (1 - exp(-r t / W))`: starts at slope `r` (the dirty rate) and saturates at
    /// the writable working set `W`. It is the expected number of distinct pages hit when
    /// writes at rate `r` fall uniformly on `W` bytes (the classic "coupon collector"
    /// occupancy curve), so hot pages rewritten within a window count once.
    Saturating { rate: f64, wws: f64 },
    /// `U(t) = min(r t, W)`: a writer that sweeps its working set in order (a sequential
    /// rewriter, a ring buffer) touches every page once per sweep, so nothing is rewritten
    /// within a window shorter than a sweep. The upper bound of the saturating curve.
    Sweep { rate: f64, wws: f64 },
    /// A measured curve, read through [`Profile::unique_pages_in`] (linear between points,
    /// flat past the last). `cap` is the memory size the user asked for, when smaller than
    /// what the profile saw.
    Measured { profile: Box<Profile>, cap: f64 },
}

impl Curve {
    /// Unique bytes dirtied within `t` seconds (never negative).
    pub fn unique_bytes(&self, t: f64) -> f64 {
        if t <= 0.0 {
            return 0.0;
        }
        match self {
            Curve::Saturating { rate, wws } => {
                if *wws <= 0.0 || *rate <= 0.0 {
                    0.0
                } else {
                    wws * -(-rate * t / wws).exp_m1()
                }
            }
            Curve::Sweep { rate, wws } => (rate * t).min(*wws).max(0.0),
            Curve::Measured { profile, cap } => {
                let page = profile.target.page_size.max(1) as f64;
                (unique_pages_in(profile, t) * page).min(*cap).max(0.0)
            }
        }
    }

    /// The initial slope (bytes/s): the rate at which a writer dirties new pages.
    pub fn rate(&self) -> f64 {
        match self {
            Curve::Saturating { rate, .. } | Curve::Sweep { rate, .. } => *rate,
            Curve::Measured { profile, .. } => profile.dirty.bytes_per_sec.max(0.0),
        }
    }

    /// The shortest measured window, when the curve is already flat there: the next point
    /// holds at most [`FLAT_WITHIN`] more unique pages. The writer then fills its working set
    /// within the profile's shortest window, so how fast it dirties below that window is not
    /// known; the curve is read linearly from zero there, the least a concave curve through
    /// that point can dirty. A CPU-bound TCG writer over 64 MiB, watched with 1 s intervals,
    /// showed U(1 s) = U(2 s) = U(4 s) = the working set and a "rate" of 62 MiB/s; watched
    /// with 100 ms intervals, U(0.12 s) was already 94 % of it (about 500 MiB/s).
    pub fn flat_from_first_window(&self) -> Option<f64> {
        let Curve::Measured { profile, .. } = self else {
            return None;
        };
        match profile.growth.as_slice() {
            [a, b, ..]
                if a.unique_pages > 0.0 && b.unique_pages <= a.unique_pages * FLAT_WITHIN =>
            {
                Some(a.window_s)
            }
            _ => None,
        }
    }

    /// Longest window the curve was measured on, past which it is extrapolated flat.
    pub fn measured_up_to(&self) -> Option<f64> {
        match self {
            Curve::Saturating { .. } | Curve::Sweep { .. } => None,
            Curve::Measured { profile, .. } => profile.growth.last().map(|p| p.window_s),
        }
    }
}

/// [`Profile::unique_pages_in`] with the segment found by bisection: the same points and
/// the same arithmetic, in log time, since the model asks for every writer in every pass
/// and a profile may hold thousands of points.
fn unique_pages_in(p: &Profile, window_s: f64) -> f64 {
    let cap = (p.target.writable_bytes / p.target.page_size.max(1)) as f64;
    let pts = &p.growth;
    let v = if pts.is_empty() {
        p.dirty.pages_per_sec * window_s
    } else if window_s <= pts[0].window_s {
        pts[0].unique_pages * window_s / pts[0].window_s
    } else {
        // The first point at or past the window, as `windows(2).find(..)` finds it.
        match pts.partition_point(|g| g.window_s < window_s) {
            j if j > 0 && j < pts.len() => {
                let (a, b) = (&pts[j - 1], &pts[j]);
                a.unique_pages
                    + (b.unique_pages - a.unique_pages) * (window_s - a.window_s)
                        / (b.window_s - a.window_s)
            }
            _ => pts[pts.len() - 1].unique_pages,
        }
    };
    if cap > 0.0 {
        v.min(cap)
    } else {
        v
    }
}

/// Above this many writers, [`Workload::from_profile`] merges those of (nearly) the same busy
/// share: the model steps through every writer in every pass, and a profile may carry 16384
/// threads. Profiles with fewer writers are modelled thread by thread, exactly.
pub const MERGE_ABOVE: usize = 64;

/// Writers with busy shares within 0.25 % of each other (relative; all under 0.01 % of a
/// CPU together, which no CPU throttle slows) as one writer each: their shares summed, their
/// busy shares averaged by share. A CPU throttle slows a writer by its busy share only, so
/// writers of the same busy share are one writer to the model; at most about 1850 remain.
fn merge_writers(writers: &[Writer]) -> Vec<Writer> {
    let mut groups: std::collections::BTreeMap<i64, (f64, f64)> = Default::default();
    for w in writers {
        let key = (w.busy.max(1e-4).ln() * 200.0).round() as i64;
        let g = groups.entry(key).or_default();
        g.0 += w.share;
        g.1 += w.share * w.busy;
    }
    groups
        .into_values()
        .filter(|(share, _)| *share > 0.0)
        .map(|(share, busy_sum)| Writer {
            share,
            busy: (busy_sum / share).clamp(0.0, 1.0),
        })
        .collect()
}

/// One writer (a vCPU or a writing thread): its share of the dirtying and the fraction of
/// wall time it is on CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct Writer {
    /// Share of all dirtying, in (0, 1]; shares are normalised to sum to 1.
    pub share: f64,
    /// Fraction of wall time on CPU, in [0, 1]. 1.0 when unknown (the conservative choice
    /// for a throttle: a fully busy vCPU is the one a CPU throttle slows the most, so
    /// assuming it overstates what a throttle buys; see `sim::cpu_throttle_factor`).
    pub busy: f64,
}

/// The guest as the model sees it.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Guest memory in bytes: what the first (bulk) pass walks.
    pub mem: f64,
    /// Page size in bytes.
    pub page: f64,
    /// Fraction of `mem` that is zero pages, sent as a few bytes in the bulk pass.
    pub zero_share: f64,
    pub curve: Curve,
    /// At least one writer; shares sum to 1.
    pub writers: Vec<Writer>,
}

impl Workload {
    /// From plain numbers: `rate` bytes/s of new dirty pages, saturating at `wws` bytes
    /// (the whole memory when `None`), spread evenly over `vcpus` writers of `busy` share.
    pub fn synthetic(
        mem: f64,
        rate: f64,
        wws: Option<f64>,
        vcpus: u32,
        busy: f64,
        zero_share: f64,
    ) -> Workload {
        Self::synthetic_with(mem, rate, wws, vcpus, busy, zero_share, false)
    }

    /// As [`Workload::synthetic`], with a sweeping ([`Curve::Sweep`]) writer when `sweep`.
    pub fn synthetic_with(
        mem: f64,
        rate: f64,
        wws: Option<f64>,
        vcpus: u32,
        busy: f64,
        zero_share: f64,
        sweep: bool,
    ) -> Workload {
        let n = vcpus.max(1);
        let wws = wws.unwrap_or(mem).min(mem);
        Workload {
            mem,
            page: DEFAULT_PAGE,
            zero_share: zero_share.clamp(0.0, 1.0),
            curve: if sweep {
                Curve::Sweep { rate, wws }
            } else {
                Curve::Saturating { rate, wws }
            },
            writers: (0..n)
                .map(|_| Writer {
                    share: 1.0 / n as f64,
                    busy: busy.clamp(0.0, 1.0),
                })
                .collect(),
        }
    }

    /// From a measured profile. `mem` overrides the memory size (else the profile's private
    /// writable bytes); `busy` overrides every busy share; `vcpus` splits the dirtying evenly
    /// when the profile has no per-thread attribution.
    pub fn from_profile(
        p: &Profile,
        mem: Option<f64>,
        busy: Option<f64>,
        vcpus: Option<u32>,
        zero_share: Option<f64>,
    ) -> Workload {
        let page = (p.target.page_size.max(1)) as f64;
        let writable = p.target.writable_bytes as f64;
        let mem = mem.unwrap_or(writable).max(page);
        // Zero pages: the measured share when the backend saw it; otherwise, anonymous
        // memory that is not resident reads as zero, so 1 - rss/writable is a lower bound.
        let zero = zero_share.or(p.zero_page_share).unwrap_or_else(|| {
            if writable > 0.0 {
                (1.0 - p.target.rss_bytes as f64 / writable).clamp(0.0, 1.0)
            } else {
                0.0
            }
        });
        let top_busy = busy.or(p.busy_share).unwrap_or(1.0);
        let guest_vcpus = p.guest.as_ref().map(|g| g.vcpus.as_slice()).unwrap_or(&[]);
        let mut writers: Vec<Writer> = match (vcpus, p.threads.is_empty()) {
            // A guest's writers are its vCPUs, each with its own time on CPU; without
            // attribution of the dirtying to them, they share it equally.
            (None, _) if !guest_vcpus.is_empty() => guest_vcpus
                .iter()
                .map(|v| Writer {
                    share: 1.0 / guest_vcpus.len() as f64,
                    busy: busy.or(v.busy_share).unwrap_or(top_busy),
                })
                .collect(),
            (None, false) => p
                .threads
                .iter()
                .filter(|t| t.share > 0.0 && t.share.is_finite())
                .map(|t| Writer {
                    share: t.share,
                    busy: busy.or(t.busy_share).unwrap_or(top_busy),
                })
                .collect(),
            _ => {
                let n = vcpus.unwrap_or(1).max(1);
                (0..n)
                    .map(|_| Writer {
                        share: 1.0 / n as f64,
                        busy: top_busy,
                    })
                    .collect()
            }
        };
        if writers.is_empty() {
            writers.push(Writer {
                share: 1.0,
                busy: top_busy,
            });
        }
        let sum: f64 = writers.iter().map(|w| w.share).sum();
        for w in &mut writers {
            w.share /= sum;
            w.busy = w.busy.clamp(0.0, 1.0);
        }
        if writers.len() > MERGE_ABOVE {
            writers = merge_writers(&writers);
        }
        Workload {
            mem,
            page,
            zero_share: zero.clamp(0.0, 1.0),
            curve: Curve::Measured {
                profile: Box::new(p.clone()),
                cap: mem,
            },
            writers,
        }
    }

    /// Unique bytes dirtied in a window of `t` seconds when writer `i` runs at speed
    /// `factors[i]` (1 = unthrottled). Each writer owns its share of the curve and a slowed
    /// writer moves along it more slowly: `sum_i share_i * U(f_i * t)`. (Writers that share
    /// pages would overlap; the model does not know the overlap and ignores it.)
    pub fn dirtied(&self, t: f64, factors: &[f64]) -> f64 {
        let u = self
            .writers
            .iter()
            .zip(factors)
            .map(|(w, f)| w.share * self.curve.unique_bytes(f * t))
            .sum::<f64>();
        u.min(self.mem)
    }

    /// Bytes the bulk pass puts on the wire: non-zero pages in full plus a page header, zero
    /// pages as a header and a flag byte.
    pub fn bulk_bytes(&self) -> f64 {
        let pages = self.mem / self.page;
        let zero = pages * self.zero_share;
        (pages - zero) * (self.page + PAGE_HEADER) + zero * ZERO_PAGE_WIRE
    }
}

/// A growth curve whose second point holds at most this factor of the unique pages of its
/// first is flat from its first window ([`Curve::flat_from_first_window`]); 5 % is above the
/// sampling backend's error at the plateau of a saturated writer.
pub const FLAT_WITHIN: f64 = 1.05;

/// Bytes of the per-page header in QEMU's RAM stream: a be64 of offset | flags
/// (`migration/ram.c`, `save_page_header`). It is why a page costs 4104 bytes, not 4096.
pub const PAGE_HEADER: f64 = 8.0;
/// Bytes for a zero page: the header and one fill byte (`RAM_SAVE_FLAG_ZERO` followed by
/// `qemu_put_byte(f, 0)` in `migration/ram.c`, `save_zero_page_to_file`). "A few bytes, not
/// 4 KiB", as the 512 MiB guest that sent only 338 MiB in all showed on this machine.
pub const ZERO_PAGE_WIRE: f64 = PAGE_HEADER + 1.0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_curve_starts_at_rate_and_saturates() {
        let c = Curve::Saturating {
            rate: 100.0,
            wws: 1000.0,
        };
        // Small window: close to rate x t.
        assert!((c.unique_bytes(0.01) - 1.0).abs() < 0.01);
        // Long window: the working set, never more.
        assert!((c.unique_bytes(1000.0) - 1000.0).abs() < 1e-6);
        // One "fill time" W/r: 1 - 1/e of the set.
        let one = c.unique_bytes(10.0);
        assert!((one - 1000.0 * (1.0 - (-1.0f64).exp())).abs() < 1e-9);
        assert_eq!(c.unique_bytes(0.0), 0.0);
    }

    #[test]
    fn sweep_curve_is_linear_then_flat_and_bounds_the_saturating_one() {
        let sw = Curve::Sweep {
            rate: 100.0,
            wws: 1000.0,
        };
        let sat = Curve::Saturating {
            rate: 100.0,
            wws: 1000.0,
        };
        assert_eq!(sw.unique_bytes(5.0), 500.0);
        assert_eq!(sw.unique_bytes(50.0), 1000.0);
        for t in [0.1, 1.0, 5.0, 10.0, 100.0] {
            assert!(sat.unique_bytes(t) <= sw.unique_bytes(t) + 1e-9);
        }
    }

    #[test]
    fn throttled_writer_moves_slower_along_the_curve() {
        let w = Workload::synthetic(1e9, 1e6, Some(1e8), 2, 1.0, 0.0);
        let full = w.dirtied(10.0, &[1.0, 1.0]);
        let half = w.dirtied(10.0, &[0.5, 0.5]);
        assert!((half - w.dirtied(5.0, &[1.0, 1.0])).abs() < 1e-6);
        assert!(half < full);
    }

    /// The bisection finds the segment the linear scan of `Profile::unique_pages_in` finds.
    #[test]
    fn bisection_matches_the_profile_curve() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/profiles/busy-vm.json"
        ))
        .unwrap();
        let p = Profile::parse(&text, "busy-vm").unwrap();
        let last = p.growth.last().unwrap().window_s;
        for i in 0..2000 {
            let t = last * 1.5 * i as f64 / 1999.0;
            assert_eq!(unique_pages_in(&p, t), p.unique_pages_in(t), "t = {t}");
        }
        for g in &p.growth {
            assert_eq!(
                unique_pages_in(&p, g.window_s),
                p.unique_pages_in(g.window_s)
            );
        }
    }

    /// Thousands of threads become at most a few thousand writers, with the same total
    /// share and nearly the same dirtying under a throttle.
    #[test]
    fn many_threads_are_merged_by_busy_share() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/profiles/busy-vm.json"
        ))
        .unwrap();
        let mut p = Profile::parse(&text, "busy-vm").unwrap();
        let few = Workload::from_profile(&p, None, None, None, None);
        assert_eq!(few.writers.len(), p.threads.len());
        let t = p.threads[0].clone();
        p.threads = (0..16384u32)
            .map(|i| crate::profile::ThreadShare {
                tid: i + 1,
                busy_share: Some(f64::from(i % 1000) / 999.0),
                share: 1.0 / 16384.0,
                ..t.clone()
            })
            .collect();
        let many = Workload::from_profile(&p, None, None, None, None);
        assert!(many.writers.len() <= 1900, "{}", many.writers.len());
        let total: f64 = many.writers.iter().map(|w| w.share).sum();
        assert!((total - 1.0).abs() < 1e-9);
        let slowed = |w: &Workload| {
            let f: Vec<f64> = w
                .writers
                .iter()
                .map(|x| (0.5 / x.busy.max(1e-9)).min(1.0))
                .collect();
            w.dirtied(3.0, &f)
        };
        let mut exact = many.clone();
        exact.writers = p
            .threads
            .iter()
            .map(|t| Writer {
                share: t.share,
                busy: t.busy_share.unwrap_or(1.0),
            })
            .collect();
        let (a, b) = (slowed(&many), slowed(&exact));
        assert!((a - b).abs() <= 0.005 * b, "{a} vs {b}");
    }

    /// A curve already at its plateau at the first point is flagged; a growing one is not.
    #[test]
    fn a_curve_flat_from_its_first_window_is_flagged() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/profiles/busy-vm.json"
        ))
        .unwrap();
        let mut p = Profile::parse(&text, "busy-vm").unwrap();
        let w = Workload::from_profile(&p, None, None, None, None);
        assert_eq!(w.curve.flat_from_first_window(), None);
        // The 1 s watch of the CPU-bound guest in docs/backtest.md: 16,027 pages at 1, 2, 4 s.
        for (g, x) in p.growth.iter_mut().zip([1.01, 2.0, 4.0]) {
            g.window_s = x;
            g.unique_pages = 16_027.0;
        }
        p.growth.truncate(3);
        let w = Workload::from_profile(&p, None, None, None, None);
        assert_eq!(w.curve.flat_from_first_window(), Some(1.01));
        // Below the first window the curve is read linearly from zero: a lower bound.
        assert!((w.curve.unique_bytes(0.101) - 1602.7 * 4096.0).abs() < 1.0);
        let synthetic = Workload::synthetic(1e9, 1e8, Some(1e8), 1, 1.0, 0.0);
        assert_eq!(synthetic.curve.flat_from_first_window(), None);
    }

    #[test]
    fn zero_pages_cost_a_few_bytes() {
        let w = Workload::synthetic(4096.0 * 1000.0, 0.0, None, 1, 1.0, 0.75);
        let expect = 250.0 * (4096.0 + 8.0) + 750.0 * 9.0;
        assert!((w.bulk_bytes() - expect).abs() < 1e-6);
    }
}
