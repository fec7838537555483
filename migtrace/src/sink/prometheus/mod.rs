//! Prometheus metrics: a registry of what watches measure, a [`Sink`] that feeds it from
//! the watch records, and a `/metrics` endpoint (one thread, hyper, with limits).
//!
//! The registry ([`Metrics`]) holds every family once; each watched target is one label
//! set ([`TargetLabels`]: pid, comm, guest). `watch --listen` has one target; the exporter
//! many, and removes a target's series when its watch ends ([`Metrics::forget`]), so the
//! state stays bounded however many targets come and go. Names follow the Prometheus
//! rules (base units, `_bytes`, `_seconds`, `_total`); `docs/monitoring.md` lists them.
//!
//! The format is chosen by the client's `Accept` header: OpenMetrics when asked for
//! (`application/openmetrics-text`, what Prometheus asks first), else the classic text
//! format 0.0.4 (what `curl` and `promtool check metrics` read), converted from the same
//! encoding by [`to_text_004`].
//!
//! Files: [`metrics`] (the registry and labels), [`server`] (the endpoint), and here the
//! [`PromSink`] that feeds the registry from a watch.
pub mod metrics;
pub mod server;

use std::sync::Arc;

pub use metrics::*;
pub use server::{bind, serve};

use prometheus_client::metrics::family::Family;

use super::Sink;
use crate::model::predict_live;
use crate::record::{Interval, LinkInterval, QemuRate, Start, Summary};

/// How many recent intervals the live prediction averages.
const PREDICT_WINDOW: usize = 10;

/// Feeds one target's series from the watch records.
pub struct PromSink {
    metrics: Arc<Metrics>,
    labels: TargetLabels,
    /// Writable memory measured, bytes (for the live prediction).
    writable: f64,
    /// The latest interval rates, for the live prediction.
    recent: std::collections::VecDeque<f64>,
}

impl PromSink {
    /// A sink for one target; its labels come from the start record.
    pub fn new(metrics: Arc<Metrics>) -> PromSink {
        PromSink {
            metrics,
            labels: TargetLabels::default(),
            writable: 0.0,
            recent: std::collections::VecDeque::with_capacity(PREDICT_WINDOW),
        }
    }

    /// This target's labels (set by the start record).
    pub fn labels(&self) -> &TargetLabels {
        &self.labels
    }
}

impl PromSink {
    /// `--predict-link`: the model on the mean of the latest interval rates.
    fn predict(&mut self, rate: f64) {
        let Some(bits) = self.metrics.predict_link else {
            return;
        };
        if self.recent.len() == PREDICT_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(rate);
        let mean = self.recent.iter().sum::<f64>() / self.recent.len() as f64;
        let o = predict_live(self.writable, mean, bits);
        let ll = link(&self.labels, bits);
        let m = &self.metrics;
        m.predicted_total.get_or_create(&ll).set(o.total_time_s);
        m.predicted_downtime.get_or_create(&ll).set(o.downtime_s);
        m.predicted_converges
            .get_or_create(&ll)
            .set(i64::from(o.converges));
    }
}

impl Sink for PromSink {
    fn start(&mut self, s: &Start) {
        self.labels = TargetLabels {
            pid: s.pid.to_string().into(),
            comm: s.comm.clone().into(),
            // The guest found by the watch; else QEMU's `-name` read from its command
            // line (a QEMU process watched whole, or whose guest RAM was not found).
            guest: s
                .guest
                .as_ref()
                .and_then(|g| g.name.clone())
                .or_else(|| crate::qemu::read_cmdline(s.pid).ok()?.name)
                .unwrap_or_default()
                .into(),
        };
        let m = &self.metrics;
        self.writable = s.writable_bytes as f64;
        m.writable
            .get_or_create(&self.labels)
            .set(s.writable_bytes as f64);
        m.rss
            .get_or_create(&self.labels)
            .set(s.target_rss_bytes as f64);
    }

    fn interval(&mut self, i: &Interval) {
        let (m, l) = (&self.metrics, &self.labels);
        m.intervals.get_or_create(l).inc();
        if let Some(f) = &i.faults {
            let by_kind = [f.write_not_present, f.write_protect, f.read, f.out_of_range];
            for (k, n) in FAULT_KINDS.iter().zip(by_kind) {
                m.faults.get_or_create(&kind(l, k)).inc_by(n);
            }
        }
        let d = &i.drops;
        for (k, n) in DROP_KINDS
            .iter()
            .zip([d.thread_map_full, d.ringbuf_full, d.sample_misses])
        {
            m.dropped.get_or_create(&kind(l, k)).inc_by(n);
        }
        // A partial interval (the watch ended mid-way) is no rate; a warm-up one is.
        if i.partial || !i.dirty_bytes_per_sec.is_finite() {
            return;
        }
        m.dirty_rate.get_or_create(l).set(i.dirty_bytes_per_sec);
        m.dirty_rate_hist
            .get_or_create(l)
            .observe(i.dirty_bytes_per_sec);
        m.interval_pages_hist
            .get_or_create(l)
            .observe(i.dirty_pages);
        m.dirty_pages
            .get_or_create(l)
            .inc_by(i.dirty_pages.max(0.0));
        self.predict(i.dirty_bytes_per_sec);
    }

    fn summary(&mut self, s: &Summary) {
        self.metrics
            .rss
            .get_or_create(&self.labels)
            .set(s.target_rss_bytes as f64);
    }

    fn qemu(&mut self, r: &QemuRate) {
        self.metrics
            .qemu_rate
            .get_or_create(&self.labels)
            .set(r.bytes_per_sec);
    }

    fn link(&mut self, l: &LinkInterval) {
        let m = &self.metrics;
        let set = |f: &Family<TargetLabels, GaugeF>, v: Option<f64>| {
            if let Some(v) = v {
                f.get_or_create(&self.labels).set(v);
            }
        };
        set(&m.link_tx, l.tx_bytes_per_sec);
        set(&m.link_headroom, l.headroom_bytes_per_sec);
        set(&m.dirty_headroom_ratio, l.dirty_to_headroom);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn counters_are_renamed_for_text_004() {
        let m = Metrics::new();
        let l = TargetLabels {
            pid: "1".into(),
            comm: "x".into(),
            guest: "".into(),
        };
        m.intervals.get_or_create(&l).inc();
        let t = to_text_004(&m.openmetrics());
        assert!(t.contains("# TYPE migtrace_intervals_total counter"), "{t}");
        assert!(t.contains("migtrace_intervals_total{pid=\"1\""), "{t}");
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"));
        m.forget(&l);
        assert!(!m.openmetrics().contains("pid=\"1\""));
    }

    /// The two forgeries issue 17 found: a watched process's name, and a `qemu-system-*`
    /// `-name` that any user can choose, each closing the label and adding a sample.
    #[test]
    fn label_values_cannot_forge_samples() {
        let m = Metrics::new();
        let l = TargetLabels {
            pid: "7".into(),
            comm: "x\"} 1\nevil 9\n#\\".into(),
            guest: "vm\"} 1\nmigtrace_predicted_converges{guest=\"prod-db\"} 1\n#".into(),
        };
        m.intervals.get_or_create(&l).inc();
        let t = to_text_004(&m.openmetrics());
        // Every sample line is one of ours; the forged names stay inside one of them.
        let samples: Vec<&str> = t.lines().filter(|x| !x.starts_with('#')).collect();
        assert!(samples.iter().all(|x| x.starts_with("migtrace_")), "{t}");
        let samples: Vec<&str> = samples.into_iter().filter(|x| x.contains("pid=")).collect();
        assert_eq!(samples.len(), 1, "{t}");
        assert!(samples[0].starts_with("migtrace_intervals_total{"), "{t}");
        assert!(samples[0].contains(r#"comm="x\"} 1\nevil 9\n#\\""#), "{t}");
        assert!(
            samples[0].contains(
                r#"guest="vm\"} 1\nmigtrace_predicted_converges{guest=\"prod-db\"} 1\n#""#
            ),
            "{t}"
        );
    }

    #[test]
    fn listen_is_checked() {
        assert!(matches!(bind("nonsense", false), Err(Error::Usage(_))));
        assert!(matches!(bind("8.8.8.8:9464", false), Err(Error::Usage(_))));
        assert!(bind("127.0.0.1:0", false).is_ok());
    }
}
