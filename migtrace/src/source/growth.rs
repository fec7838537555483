//! The dirty-set growth curve U(window), measured with tumbling windows of 2^k epochs.
//!
//! Every epoch a backend hands in the set of pages dirtied in it. For each window length
//! epoch x 2^k, [`GrowthWindows`] keeps the union of the current tumbling window; when a window
//! completes, its size is averaged into U(epoch x 2^k). All levels exist from the first epoch,
//! so each level's windows are aligned to it. The set type is the backend's: an exact
//! `HashSet` of page numbers (softdirty) or a HyperLogLog sketch (fault), whose union is
//! exact too (register max), leaving only the sketch's own error.
use std::collections::HashSet;

use migtrace_common::Hll;

use crate::{
    estimate::{hll_estimate, hll_merge, Mean},
    record::GrowthPoint,
};

/// A set of pages that can be united with another and counted.
pub trait PageSet: Default {
    /// Adds every page of `other`.
    fn unite(&mut self, other: &Self);
    /// Number of distinct pages (exact or estimated).
    fn count(&self) -> f64;
}

impl PageSet for Hll {
    fn unite(&mut self, other: &Self) {
        hll_merge(self, other);
    }
    fn count(&self) -> f64 {
        hll_estimate(self)
    }
}

impl PageSet for HashSet<u64> {
    fn unite(&mut self, other: &Self) {
        self.extend(other.iter().copied());
    }
    fn count(&self) -> f64 {
        self.len() as f64
    }
}

/// One window length: the union of the window in progress, and the mean over full windows.
struct Level<S> {
    current: S,
    filled: u64,
    /// Measured length of the window in progress, seconds.
    secs: f64,
    mean: Mean,
    /// Mean measured length of the complete windows: the curve's x, never the nominal.
    mean_secs: Mean,
}

/// Tumbling windows of 1, 2, 4 ... 2^(levels-1) epochs.
pub struct GrowthWindows<S: PageSet> {
    levels: Vec<Level<S>>,
}

impl<S: PageSet> GrowthWindows<S> {
    /// Windows of up to 2^(levels-1) epochs.
    pub fn new(levels: usize) -> Self {
        GrowthWindows {
            levels: (0..levels)
                .map(|_| Level {
                    current: S::default(),
                    filled: 0,
                    secs: 0.0,
                    mean: Mean::default(),
                    mean_secs: Mean::default(),
                })
                .collect(),
        }
    }

    /// Adds one epoch's dirty set, measured over `secs` seconds.
    pub fn push(&mut self, epoch: &S, secs: f64) {
        for (k, l) in self.levels.iter_mut().enumerate() {
            l.current.unite(epoch);
            l.filled += 1;
            l.secs += secs;
            if l.filled == 1 << k {
                l.mean.add(l.current.count());
                l.mean_secs.add(l.secs);
                l.current = S::default();
                l.filled = 0;
                l.secs = 0.0;
            }
        }
    }

    /// Drops the windows in progress (after an epoch of another length), keeping the means.
    pub fn restart_windows(&mut self) {
        for l in self.levels.iter_mut() {
            l.current = S::default();
            l.filled = 0;
            l.secs = 0.0;
        }
    }

    /// U(window) for every window length with at least one complete window, at the mean
    /// measured length of those windows.
    pub fn curve(&self) -> Vec<GrowthPoint> {
        self.levels
            .iter()
            .filter_map(|l| {
                Some(GrowthPoint {
                    window_s: l.mean_secs.get()?,
                    unique_pages: l.mean.get()?,
                    windows: l.mean.n,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migtrace_common::{hll_index_rank, page_hash};

    fn sketch(pages: impl Iterator<Item = u64>) -> Hll {
        let mut h = Hll::default();
        for p in pages {
            let (i, r) = hll_index_rank(page_hash(p));
            h.regs[i] = h.regs[i].max(r);
        }
        h
    }

    #[test]
    fn growth_of_a_sequential_writer_is_linear_then_flat() {
        // 100 pages per epoch, cycling through 1600 pages: U(w) = min(100 w, 1600).
        let mut g = GrowthWindows::<Hll>::new(19);
        for e in 0..64u64 {
            let start = (e * 100) % 1600;
            g.push(&sketch(start..start + 100), 0.05);
        }
        let c = g.curve();
        assert_eq!(c.len(), 7); // 1, 2, 4, ..., 64 epochs
        for p in &c {
            let epochs = (p.window_s / 0.05).round();
            assert!((p.window_s / 0.05 - epochs).abs() < 1e-9);
            let expect = (100.0 * epochs).min(1600.0);
            assert!(
                (p.unique_pages - expect).abs() / expect < 0.03,
                "{p:?} expect {expect}"
            );
        }
        assert_eq!(c[0].windows, 64);
        assert_eq!(c[6].windows, 1);
    }

    #[test]
    fn exact_sets_restart_after_a_short_epoch() {
        let mut g = GrowthWindows::<HashSet<u64>>::new(4);
        g.push(&(0..10).collect(), 0.1);
        g.push(&(10..20).collect(), 0.12);
        g.restart_windows();
        g.push(&(0..10).collect(), 0.1);
        let c = g.curve();
        assert!(
            (c[1].window_s - 0.22).abs() < 1e-12,
            "measured, not 2 x 0.1"
        );
        assert_eq!(c[0].windows, 3);
        assert_eq!(c[1].unique_pages, 20.0);
        assert_eq!(c[1].windows, 1);
    }
}
