//! The link side of the pre-copy race during a watch (`watch --iface IF [--link RATE]`):
//! reads the send-path probe ([`crate::probe::send`]) once per interval and sets the
//! interface's traffic against the nominal link.
//!
//! Headroom is what a migration would get: `link x efficiency - traffic already there`,
//! where the traffic is the interface's tx minus what the target's own QEMU migration
//! threads sent (a running migration is not competition for itself). The ratio of the dirty
//! rate to the headroom is a live convergence indicator: above 1 a pre-copy cannot converge
//! without throttling the guest.
use anyhow::Result;

use crate::{
    probe::send::{SendOptions, SendProbe},
    record::{LinkInterval, LinkSummary, SendThread},
};

/// What `watch` asks of the link side.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    pub iface: Option<String>,
    /// `--link`, bits per second.
    pub link_bits: Option<f64>,
    /// Fraction of the link that carries migration payload (predict's default, 0.94).
    pub efficiency: f64,
}

/// Bytes per second a migration would get: `link x efficiency - tx`, at least 0.
pub fn headroom(link_bits: f64, efficiency: f64, tx_bytes_per_sec: f64) -> f64 {
    (link_bits / 8.0 * efficiency - tx_bytes_per_sec).max(0.0)
}

/// The dirty rate over the headroom; `None` without a headroom (no link known, or the link
/// is already full: then nothing converges).
pub fn dirty_to_headroom(dirty_bytes_per_sec: f64, headroom: Option<f64>) -> Option<f64> {
    headroom
        .filter(|&h| h > 0.0)
        .map(|h| dirty_bytes_per_sec / h)
}

/// The probe and what the watch has seen so far.
pub struct LinkWatch {
    probe: SendProbe,
    cfg: LinkConfig,
    link_bits: Option<f64>,
    link_from: Option<String>,
    /// Running statistics of the per-interval rates (O(1) memory: a watch may run for days).
    rates: Rates,
    totals: Totals,
    notes: Vec<String>,
}

/// Interface tx per interval (bytes/s), the other traffic (tx minus migration) and the
/// headroom, kept as sums and extremes rather than lists.
#[derive(Default)]
struct Rates {
    n: u64,
    tx_sum: f64,
    tx_peak: Option<f64>,
    other_sum: f64,
    headroom_min: Option<f64>,
}

impl Rates {
    fn add(&mut self, tx: f64, other: f64) {
        self.n += 1;
        self.tx_sum += tx;
        self.other_sum += other;
        self.tx_peak = Some(self.tx_peak.map_or(tx, |p| p.max(tx)));
    }

    fn add_headroom(&mut self, h: f64) {
        self.headroom_min = Some(self.headroom_min.map_or(h, |m| m.min(h)));
    }

    fn mean(&self, sum: f64) -> Option<f64> {
        (self.n > 0).then(|| sum / self.n as f64)
    }
}

#[derive(Default)]
struct Totals {
    tx: u64,
    send: u64,
    calls: u64,
    errors: u64,
    migration: u64,
    thread_map_full: u64,
}

impl LinkWatch {
    /// Attaches the probe for `pid` (its sends) and the interface.
    pub fn attach(pid: u32, cfg: LinkConfig) -> Result<LinkWatch> {
        let opts = SendOptions {
            iface: cfg.iface.clone(),
            ..SendOptions::default()
        };
        let probe = SendProbe::attach(Some(pid), &opts)?;
        let mut notes = probe.notes().to_vec();
        let (link_bits, link_from) = match (cfg.link_bits, &cfg.iface) {
            (Some(b), _) => (Some(b), Some("--link".to_string())),
            (None, Some(i)) => match link_speed_bits(i) {
                Some(b) => (Some(b), Some(format!("/sys/class/net/{i}/speed"))),
                None => {
                    notes.push(format!("{i} reports no link speed (/sys/class/net/{i}/speed): give --link RATE for the headroom and the dirty/headroom ratio"));
                    (None, None)
                }
            },
            (None, None) => (None, None),
        };
        Ok(LinkWatch {
            probe,
            cfg,
            link_bits,
            link_from,
            rates: Rates::default(),
            totals: Totals::default(),
            notes,
        })
    }

    /// What the link side cannot measure, in words (for the start record).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Reads the interval's counters; `dirty` is its dirty rate in bytes per second.
    pub fn end_interval(&mut self, dirty: f64, wall_s: f64, t_s: f64) -> Result<LinkInterval> {
        let d = self.probe.take_deltas()?;
        let (iface_on, process_on) = self.probe.coverage();
        let t = &mut self.totals;
        t.tx += d.if_bytes;
        t.send += d.send_bytes;
        t.calls += d.send_calls;
        t.errors += d.send_errors;
        t.migration += d.migration_bytes;
        t.thread_map_full += d.thread_map_full;
        let per_s = |b: u64| b as f64 / wall_s.max(1e-9);
        let tx = iface_on.then(|| per_s(d.if_bytes));
        let other = tx.map(|x| (x - per_s(d.migration_bytes)).max(0.0));
        let head = match (self.link_bits, other) {
            (Some(l), Some(o)) => Some(headroom(l, self.cfg.efficiency, o)),
            _ => None,
        };
        if let (Some(x), Some(o)) = (tx, other) {
            self.rates.add(x, o);
        }
        if let Some(h) = head {
            self.rates.add_headroom(h);
        }
        Ok(LinkInterval {
            t_s,
            iface: self.cfg.iface.clone(),
            tx_bytes_per_sec: tx,
            tx_packets_per_sec: iface_on.then(|| per_s(d.if_packets)),
            link_bits: self.link_bits,
            headroom_bytes_per_sec: head,
            dirty_to_headroom: dirty_to_headroom(dirty, head),
            send_bytes_per_sec: process_on.then(|| per_s(d.send_bytes)),
            migration_bytes: d.migration_bytes,
            thread_map_full: d.thread_map_full,
        })
    }

    /// The link side over the watch; `dirty` is the summary's dirty rate.
    pub fn summary(&mut self, dirty: f64) -> Result<LinkSummary> {
        let r = &self.rates;
        let head = match (self.link_bits, r.mean(r.other_sum)) {
            (Some(l), Some(o)) => Some(headroom(l, self.cfg.efficiency, o)),
            _ => None,
        };
        let threads = self
            .probe
            .take_thread_bytes()?
            .into_iter()
            .map(|t| SendThread {
                tid: t.tid,
                comm: t.comm,
                bytes: t.bytes,
                calls: t.calls,
                migration: t.migration,
            })
            .collect();
        let t = &self.totals;
        Ok(LinkSummary {
            iface: self.cfg.iface.clone(),
            link_bits: self.link_bits,
            link_from: self.link_from.clone(),
            efficiency: self.cfg.efficiency,
            tx_bytes_per_sec: r.mean(r.tx_sum),
            tx_peak_bytes_per_sec: r.tx_peak,
            headroom_bytes_per_sec: head,
            headroom_min_bytes_per_sec: r.headroom_min,
            dirty_to_headroom: dirty_to_headroom(dirty, head),
            send_bytes: t.send,
            send_calls: t.calls,
            send_errors: t.errors,
            migration_bytes: t.migration,
            tx_bytes: t.tx,
            thread_map_full: t.thread_map_full,
            threads,
            notes: self.notes.clone(),
        })
    }
}

/// The nominal rate of an interface in bits per second, from `/sys/class/net/IF/speed`
/// (Mbit/s); `None` where the driver reports none (loopback, many virtual devices: the
/// file is unreadable, or says -1).
pub fn link_speed_bits(iface: &str) -> Option<f64> {
    let s = std::fs::read_to_string(
        std::path::Path::new("/sys/class/net")
            .join(iface)
            .join("speed"),
    )
    .ok()?;
    let mbit: i64 = s.trim().parse().ok()?;
    (mbit > 0).then_some(mbit as f64 * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headroom_is_link_times_efficiency_minus_traffic() {
        // 1 Gbit/s = 125 MB/s; x 0.94 = 117.5 MB/s; 17.5 MB/s already used.
        assert_eq!(headroom(1e9, 0.94, 17.5e6), 100e6);
        assert_eq!(headroom(1e9, 0.94, 200e6), 0.0);
        assert_eq!(dirty_to_headroom(50e6, Some(100e6)), Some(0.5));
        assert_eq!(dirty_to_headroom(50e6, Some(0.0)), None);
        assert_eq!(dirty_to_headroom(50e6, None), None);
    }

    #[test]
    fn running_rates_give_the_mean_peak_and_lowest_headroom() {
        let mut r = Rates::default();
        assert_eq!(r.mean(r.tx_sum), None);
        for (tx, other, h) in [(10.0, 4.0, 90.0), (30.0, 8.0, 70.0), (20.0, 6.0, 80.0)] {
            r.add(tx, other);
            r.add_headroom(h);
        }
        assert_eq!(r.mean(r.tx_sum), Some(20.0));
        assert_eq!(r.mean(r.other_sum), Some(6.0));
        assert_eq!(r.tx_peak, Some(30.0));
        assert_eq!(r.headroom_min, Some(70.0));
    }
}
