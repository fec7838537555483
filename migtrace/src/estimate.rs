//! Statistics shared by the measurement backends: the HyperLogLog estimator for the kernel's
//! unique-page sketches, and binomial confidence intervals for sampling. Pure functions.
use migtrace_common::{Hll, HLL_BITS, HLL_REGS};

/// Merges `src` into `dst` (register-wise max): the sketch of the union of both sets.
pub fn hll_merge(dst: &mut Hll, src: &Hll) {
    for (d, s) in dst.regs.iter_mut().zip(src.regs.iter()) {
        if *s > *d {
            *d = *s;
        }
    }
}

/// Estimated number of distinct items in a sketch (Flajolet et al. 2007, with the
/// linear-counting correction for small sets; with a 64-bit hash no large-range
/// correction is needed). Relative standard error 1.04/sqrt(m) = 1.6 % for m = 4096;
/// below about 2.5 m items linear counting is used, which is much tighter than that.
pub fn hll_estimate(h: &Hll) -> f64 {
    let m = HLL_REGS as f64;
    let mut sum = 0.0;
    let mut zeros = 0usize;
    for &r in h.regs.iter() {
        sum += f64::powi(2.0, -(r as i32));
        if r == 0 {
            zeros += 1;
        }
    }
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    }
}

/// Relative standard error of [`hll_estimate`] in its raw (non-linear-counting) range.
pub fn hll_rel_std_error() -> f64 {
    1.04 / ((1u64 << HLL_BITS) as f64).sqrt()
}

/// Wilson score interval for a binomial proportion: `k` successes out of `n`, at normal
/// quantile `z` (1.96 for 95 %). Better behaved than the normal approximation when the
/// dirtied share is near 0 or 1, which is common.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * ((p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt()) / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Sample size for a relative error `rel` (half-width of the 95 % interval over the
/// estimate) when the dirtied share is about `p`: n = z^2 (1 - p) / (p rel^2).
pub fn sample_size_for(p: f64, rel: f64) -> f64 {
    let p = p.clamp(1e-6, 1.0);
    let z = 1.96f64;
    z * z * (1.0 - p) / (p * rel * rel)
}

/// Mean accumulator.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mean {
    pub sum: f64,
    pub n: u64,
}

impl Mean {
    pub fn add(&mut self, x: f64) {
        self.sum += x;
        self.n += 1;
    }
    pub fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use migtrace_common::{hll_index_rank, page_hash};

    fn sketch(range: std::ops::Range<u64>) -> Hll {
        let mut h = Hll::default();
        for p in range {
            let (i, r) = hll_index_rank(page_hash(p));
            if h.regs[i] < r {
                h.regs[i] = r;
            }
        }
        h
    }

    #[test]
    fn hll_is_accurate_across_scales() {
        for &n in &[1u64, 10, 100, 1000, 10_000, 65_536, 1_000_000] {
            let est = hll_estimate(&sketch(0..n));
            let err = (est - n as f64).abs() / n as f64;
            // 4 standard errors in the raw range; linear counting is far tighter.
            assert!(err < 4.0 * hll_rel_std_error(), "n={n} est={est} err={err}");
        }
        assert_eq!(hll_estimate(&Hll::default()), 0.0);
    }

    #[test]
    fn hll_merge_is_union() {
        let mut a = sketch(0..50_000);
        let b = sketch(25_000..75_000);
        hll_merge(&mut a, &b);
        let est = hll_estimate(&a);
        assert!((est - 75_000.0).abs() / 75_000.0 < 0.07, "est={est}");
    }

    #[test]
    fn wilson_contains_p_and_shrinks() {
        let (lo, hi) = wilson(30, 100, 1.96);
        assert!(lo < 0.3 && hi > 0.3);
        let (lo2, hi2) = wilson(300, 1000, 1.96);
        assert!(hi2 - lo2 < hi - lo);
        let (lo0, hi0) = wilson(0, 100, 1.96);
        assert_eq!(lo0, 0.0);
        assert!(hi0 > 0.0 && hi0 < 0.05);
    }

    #[test]
    fn sample_size_grows_for_rare_dirtying() {
        assert!(sample_size_for(0.01, 0.05) > sample_size_for(0.5, 0.05));
        let n = sample_size_for(0.5, 0.05);
        assert!((n - 1536.6).abs() < 1.0, "n={n}");
    }
}
