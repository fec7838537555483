//! Prometheus metrics: a registry of what watches measure, a [`Sink`] that feeds it from
//! the watch records, and a `/metrics` endpoint (one thread, `tiny_http`).
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
use std::{
    net::{SocketAddr, TcpListener},
    sync::Arc,
};

use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::Sink;
use crate::error::Error;
use crate::record::{Interval, LinkInterval, QemuRate, Start, Summary};

/// A label value, escaped as the text exposition format requires: `\` as `\\`, `"` as
/// `\"` and a line feed as `\n`. prometheus-client 0.24 writes label values verbatim, so
/// a watched process (or, for `exporter --qemu`, any user's `qemu-system-*` with a `-name`
/// of its choosing) named `x"} 1⏎evil 9⏎#` put a sample of its own on /metrics. Every
/// label here is this type, so no value reaches the exposition unescaped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Default)]
pub struct LabelValue(String);

impl<S: Into<String>> From<S> for LabelValue {
    fn from(s: S) -> LabelValue {
        LabelValue(s.into())
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, enc: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            enc.write_str(&rest[..i])?;
            enc.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        enc.write_str(rest)
    }
}

/// Who a series is about: one watched process (for QEMU, its guest's `-name`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet, Default)]
pub struct TargetLabels {
    pub pid: LabelValue,
    pub comm: LabelValue,
    /// The guest name for a QEMU target; empty otherwise.
    pub guest: LabelValue,
}

/// A target and one more label (the fault kind, the drop reason).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub pid: LabelValue,
    pub comm: LabelValue,
    pub guest: LabelValue,
    pub kind: LabelValue,
}

/// A target and the link a prediction is for (bits per second).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LinkLabels {
    pub pid: LabelValue,
    pub comm: LabelValue,
    pub guest: LabelValue,
    pub link_bits: LabelValue,
}

/// A target and the state of its migration (`migtrace passes`), a state set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub pid: LabelValue,
    pub comm: LabelValue,
    pub guest: LabelValue,
    pub status: LabelValue,
}

pub mod passes;

/// Fault kinds, as `kind` label values.
pub const FAULT_KINDS: [&str; 4] = ["write_not_present", "write_protect", "read", "out_of_range"];
/// Drop reasons, as `kind` label values.
pub const DROP_KINDS: [&str; 3] = ["thread_map_full", "ringbuf_full", "sample_misses"];

type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;
type CounterF = Counter<f64, std::sync::atomic::AtomicU64>;
type Hist = Family<TargetLabels, Histogram, fn() -> Histogram>;

/// Every metric migtrace serves, registered once.
pub struct Metrics {
    registry: Registry,
    pub dirty_rate: Family<TargetLabels, GaugeF>,
    pub dirty_rate_hist: Hist,
    pub interval_pages_hist: Hist,
    /// Pass durations, bytes and dirtied pages (`migtrace passes --listen`).
    pub pass_duration_hist: Hist,
    pub pass_bytes_hist: Hist,
    pub pass_dirty_pages_hist: Hist,
    /// A migration followed by `migtrace passes`, live from QEMU's replies.
    pub migration_pass: Family<TargetLabels, Gauge>,
    pub migration_remaining: Family<TargetLabels, GaugeF>,
    pub migration_dirty_rate: Family<TargetLabels, GaugeF>,
    pub migration_throttle: Family<TargetLabels, GaugeF>,
    pub migration_status: Family<StatusLabels, Gauge>,
    pub migration_total_time: Family<TargetLabels, GaugeF>,
    pub migration_setup_time: Family<TargetLabels, GaugeF>,
    pub migration_downtime: Family<TargetLabels, GaugeF>,
    pub migration_transferred: Family<TargetLabels, Counter>,
    pub dirty_pages: Family<TargetLabels, CounterF>,
    pub intervals: Family<TargetLabels, Counter>,
    pub faults: Family<KindLabels, Counter>,
    pub dropped: Family<KindLabels, Counter>,
    pub writable: Family<TargetLabels, GaugeF>,
    pub rss: Family<TargetLabels, GaugeF>,
    pub qemu_rate: Family<TargetLabels, GaugeF>,
    /// The send path (`watch --iface`): tx of the interface, headroom, dirty/headroom.
    pub link_tx: Family<TargetLabels, GaugeF>,
    pub link_headroom: Family<TargetLabels, GaugeF>,
    pub dirty_headroom_ratio: Family<TargetLabels, GaugeF>,
    pub targets: Gauge,
    /// The exporter's own resident memory (set by `migtrace exporter`).
    pub exporter_rss: Gauge,
    /// `--predict-link`: the link (bits per second) the live predictions are for.
    pub predict_link: Option<f64>,
    pub predicted_total: Family<LinkLabels, GaugeF>,
    pub predicted_downtime: Family<LinkLabels, GaugeF>,
    pub predicted_converges: Family<LinkLabels, Gauge>,
}

/// Dirty-rate buckets, bytes per second: 1 MiB/s to 32 GiB/s, doubling.
fn rate_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1048576.0, 2.0, 16,
    ))
}

/// Unique-pages buckets: 16 pages to 256 Mi pages, by fours.
fn pages_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        16.0, 4.0, 12,
    ))
}

/// Bytes-per-pass buckets: 64 KiB to 256 GiB, by fours.
fn pass_bytes_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        65536.0, 4.0, 12,
    ))
}

/// Pass-duration buckets, seconds: 10 ms to about 10 min.
fn pass_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.01, 3.0, 11,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All families, registered under the `migtrace` prefix.
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("migtrace"),
            dirty_rate: Family::default(),
            dirty_rate_hist: Family::new_with_constructor(rate_histogram as fn() -> Histogram),
            interval_pages_hist: Family::new_with_constructor(pages_histogram as fn() -> Histogram),
            pass_duration_hist: Family::new_with_constructor(pass_histogram as fn() -> Histogram),
            pass_bytes_hist: Family::new_with_constructor(
                pass_bytes_histogram as fn() -> Histogram,
            ),
            pass_dirty_pages_hist: Family::new_with_constructor(
                pages_histogram as fn() -> Histogram,
            ),
            migration_pass: Family::default(),
            migration_remaining: Family::default(),
            migration_dirty_rate: Family::default(),
            migration_throttle: Family::default(),
            migration_status: Family::default(),
            migration_total_time: Family::default(),
            migration_setup_time: Family::default(),
            migration_downtime: Family::default(),
            migration_transferred: Family::default(),
            dirty_pages: Family::default(),
            intervals: Family::default(),
            faults: Family::default(),
            dropped: Family::default(),
            writable: Family::default(),
            rss: Family::default(),
            qemu_rate: Family::default(),
            link_tx: Family::default(),
            link_headroom: Family::default(),
            dirty_headroom_ratio: Family::default(),
            targets: Gauge::default(),
            exporter_rss: Gauge::default(),
            predict_link: None,
            predicted_total: Family::default(),
            predicted_downtime: Family::default(),
            predicted_converges: Family::default(),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "dirty_rate_bytes_per_second",
            "Unique bytes dirtied per second in the last interval",
            self.dirty_rate.clone(),
        );
        r.register(
            "interval_dirty_rate_bytes_per_second",
            "Distribution of the per-interval dirty rate",
            self.dirty_rate_hist.clone(),
        );
        r.register(
            "interval_dirty_pages",
            "Distribution of the unique pages dirtied per interval",
            self.interval_pages_hist.clone(),
        );
        self.register_counts();
        self.register_passes();
    }

    /// The families of `migtrace passes --listen`.
    fn register_passes(&mut self) {
        let r = &mut self.registry;
        let (s, b) = (|| Unit::Seconds, || Unit::Bytes);
        r.register_with_unit(
            "pass_duration",
            "Duration of the pre-copy passes of a migration (migtrace passes)",
            s(),
            self.pass_duration_hist.clone(),
        );
        r.register_with_unit(
            "pass_sent",
            "Bytes QEMU sent in each pre-copy pass (ram.transferred over the pass)",
            b(),
            self.pass_bytes_hist.clone(),
        );
        r.register(
            "pass_dirty_pages",
            "Pages the guest dirtied in each pass (QEMU's dirty-pages-rate x the pass duration)",
            self.pass_dirty_pages_hist.clone(),
        );
        r.register(
            "migration_pass",
            "The pass in progress (QEMU's dirty-sync-count)",
            self.migration_pass.clone(),
        );
        r.register_with_unit(
            "migration_remaining",
            "Bytes still to send (ram.remaining)",
            b(),
            self.migration_remaining.clone(),
        );
        r.register(
            "migration_dirty_rate_bytes_per_second",
            "QEMU's dirty-pages-rate of the migration, in bytes per second",
            self.migration_dirty_rate.clone(),
        );
        r.register(
            "migration_cpu_throttle_ratio",
            "Auto-converge CPU throttle, 0 to 1 (cpu-throttle-percentage / 100)",
            self.migration_throttle.clone(),
        );
        r.register(
            "migration_status",
            "1 for the status the migration is in, 0 for the others",
            self.migration_status.clone(),
        );
        r.register_with_unit(
            "migration_total_time",
            "Time since the migration started (QEMU's total-time)",
            s(),
            self.migration_total_time.clone(),
        );
        r.register_with_unit(
            "migration_setup_time",
            "The migration's setup time",
            s(),
            self.migration_setup_time.clone(),
        );
        r.register_with_unit(
            "migration_downtime",
            "The migration's downtime (once completed)",
            s(),
            self.migration_downtime.clone(),
        );
        r.register_with_unit(
            "migration_transferred",
            "Bytes the migration sent (ram.transferred)",
            b(),
            self.migration_transferred.clone(),
        );
    }

    /// The counters, the target's memory and the exporter's own figures.
    fn register_counts(&mut self) {
        let r = &mut self.registry;
        let bytes = || Unit::Bytes;
        r.register(
            "dirty_pages",
            "Sum over intervals of the unique pages dirtied in each interval",
            self.dirty_pages.clone(),
        );
        r.register("intervals", "Intervals measured", self.intervals.clone());
        r.register(
            "page_faults",
            "Page faults seen, by kind",
            self.faults.clone(),
        );
        r.register(
            "dropped_events",
            "Events lost, by reason",
            self.dropped.clone(),
        );
        r.register_with_unit(
            "target_writable",
            "Writable memory measured",
            bytes(),
            self.writable.clone(),
        );
        r.register_with_unit(
            "target_resident",
            "Resident memory of the target",
            bytes(),
            self.rss.clone(),
        );
        r.register(
            "qemu_dirty_rate_bytes_per_second",
            "QEMU's own calc-dirty-rate measurement (watch --qmp)",
            self.qemu_rate.clone(),
        );
        r.register(
            "link_tx_bytes_per_second",
            "Transmit rate of the watched interface (watch --iface; eBPF net_dev_xmit)",
            self.link_tx.clone(),
        );
        r.register(
            "link_headroom_bytes_per_second",
            "What a migration would get: link x efficiency minus the traffic already there",
            self.link_headroom.clone(),
        );
        r.register(
            "dirty_headroom_ratio",
            "Dirty rate over link headroom: above 1 a pre-copy cannot converge unthrottled",
            self.dirty_headroom_ratio.clone(),
        );
        r.register("targets", "Targets being watched now", self.targets.clone());
        r.register_with_unit(
            "predicted_total_time",
            "Modelled pre-copy migration time over --predict-link at the live rate (QEMU policy, 300 ms downtime target)",
            Unit::Seconds,
            self.predicted_total.clone(),
        );
        r.register_with_unit(
            "predicted_downtime",
            "Modelled downtime over --predict-link at the live rate",
            Unit::Seconds,
            self.predicted_downtime.clone(),
        );
        r.register(
            "predicted_converges",
            "1 when the modelled migration over --predict-link converges within the downtime target, else 0",
            self.predicted_converges.clone(),
        );
        r.register_with_unit(
            "exporter_resident",
            "Resident memory of the exporter itself (migtrace exporter only)",
            bytes(),
            self.exporter_rss.clone(),
        );
    }

    /// The same, with live predictions for a link of `link_bits` (`--predict-link`).
    pub fn predicting(link_bits: Option<f64>) -> Metrics {
        Metrics {
            predict_link: link_bits,
            ..Metrics::new()
        }
    }

    /// Every series name this registry can serve (histograms with their `_bucket`, `_sum`
    /// and `_count`, counters with `_total`), whether or not it has samples now: families
    /// without samples (pass durations, QEMU's rate without `--qmp`) are left out of a scrape.
    pub fn served_names() -> std::collections::BTreeSet<String> {
        let m = Metrics::new();
        let l = TargetLabels::default();
        let _ = m.dirty_rate.get_or_create(&l);
        let _ = m.dirty_rate_hist.get_or_create(&l);
        let _ = m.interval_pages_hist.get_or_create(&l);
        let _ = m.pass_duration_hist.get_or_create(&l);
        let _ = m.pass_bytes_hist.get_or_create(&l);
        let _ = m.pass_dirty_pages_hist.get_or_create(&l);
        for f in [
            &m.migration_remaining,
            &m.migration_dirty_rate,
            &m.migration_throttle,
            &m.migration_total_time,
            &m.migration_setup_time,
            &m.migration_downtime,
        ] {
            let _ = f.get_or_create(&l);
        }
        let _ = m.migration_pass.get_or_create(&l);
        let _ = m.migration_transferred.get_or_create(&l);
        let _ = m.migration_status.get_or_create(&StatusLabels {
            pid: LabelValue::default(),
            comm: LabelValue::default(),
            guest: LabelValue::default(),
            status: "active".into(),
        });
        let _ = m.dirty_pages.get_or_create(&l);
        let _ = m.intervals.get_or_create(&l);
        let _ = m.faults.get_or_create(&kind(&l, "read"));
        let _ = m.dropped.get_or_create(&kind(&l, "ringbuf_full"));
        let _ = m.writable.get_or_create(&l);
        let _ = m.rss.get_or_create(&l);
        let _ = m.qemu_rate.get_or_create(&l);
        let _ = m.link_tx.get_or_create(&l);
        let _ = m.link_headroom.get_or_create(&l);
        let _ = m.dirty_headroom_ratio.get_or_create(&l);
        let ll = link(&l, 1.0);
        let _ = m.predicted_total.get_or_create(&ll);
        let _ = m.predicted_downtime.get_or_create(&ll);
        let _ = m.predicted_converges.get_or_create(&ll);
        family_names(&to_text_004(&m.openmetrics()))
    }

    /// Removes every series of one target (its watch ended).
    pub fn forget(&self, l: &TargetLabels) {
        for f in [
            &self.dirty_rate,
            &self.writable,
            &self.rss,
            &self.qemu_rate,
            &self.link_tx,
            &self.link_headroom,
            &self.dirty_headroom_ratio,
        ] {
            f.remove(l);
        }
        for h in [
            &self.dirty_rate_hist,
            &self.interval_pages_hist,
            &self.pass_duration_hist,
        ] {
            h.remove(l);
        }
        self.dirty_pages.remove(l);
        self.intervals.remove(l);
        for k in FAULT_KINDS {
            self.faults.remove(&kind(l, k));
        }
        for k in DROP_KINDS {
            self.dropped.remove(&kind(l, k));
        }
        if let Some(b) = self.predict_link {
            let ll = link(l, b);
            self.predicted_total.remove(&ll);
            self.predicted_downtime.remove(&ll);
            self.predicted_converges.remove(&ll);
        }
    }

    /// The OpenMetrics text of everything registered.
    pub fn openmetrics(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut s, &self.registry);
        s
    }
}

/// The series names in a text-format scrape, from its `# TYPE` lines.
pub fn family_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for rest in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut it = rest.split(' ');
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                out.insert(format!("{name}{suffix}"));
            }
        }
        out.insert(name.to_string());
    }
    out
}

/// A target's labels with a link.
pub(crate) fn link(l: &TargetLabels, bits: f64) -> LinkLabels {
    LinkLabels {
        pid: l.pid.clone(),
        comm: l.comm.clone(),
        guest: l.guest.clone(),
        link_bits: format!("{bits:.0}").into(),
    }
}

/// How many recent intervals the live prediction averages.
const PREDICT_WINDOW: usize = 10;

/// The pre-copy model ([`crate::model::sim`]) run on a live rate: `mem` bytes dirtied at
/// `rate` bytes/s, the dirty set growing up to the whole memory (the growth curve is only
/// known at the end of a watch), QEMU's policy with its 300 ms default downtime target, no
/// throttle, the default link efficiency.
pub fn predict_live(mem: f64, rate: f64, link_bits: f64) -> crate::model::sim::Outcome {
    use crate::model::{sim, workload::Workload};
    let w = Workload::synthetic(mem.max(4096.0), rate.max(0.0), None, 1, 1.0, 0.0);
    let policy = sim::Policy::Qemu;
    let sc = sim::Scenario {
        link_bits,
        efficiency: crate::model::config::DEFAULT_EFFICIENCY,
        downtime_s: policy.default_downtime_s(),
        policy,
        throttle: sim::Throttle::None,
        limits: sim::Limits::default(),
        stop_copy_bits: None,
    };
    sim::simulate(&w, &sc)
}

/// A target's labels with a `kind`.
fn kind(l: &TargetLabels, k: &str) -> KindLabels {
    KindLabels {
        pid: l.pid.clone(),
        comm: l.comm.clone(),
        guest: l.guest.clone(),
        kind: k.into(),
    }
}

/// Converts the OpenMetrics text into the classic text format 0.0.4: no `# EOF` or
/// `# UNIT`, and a counter family is named as its samples are (`..._total`).
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut counters = std::collections::HashSet::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        if let Some((head, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(name) {
                out.push_str(&format!("{head}{name}_total{}\n", &rest[name.len()..]));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

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

/// Parses and checks `--listen`: ADDR:PORT, loopback unless `any`, and binds it now so that
/// a bad or busy address is an error before measuring starts.
pub fn bind(listen: &str, any: bool) -> Result<TcpListener, Error> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        Error::Usage(format!(
            "--listen {listen:?}: expected ADDR:PORT, e.g. 127.0.0.1:9464 or [::1]:9464"
        ))
    })?;
    if !addr.ip().is_loopback() && !any {
        return Err(Error::Usage(format!(
            "--listen {addr}: not a loopback address; add --listen-any to serve metrics beyond this host"
        )));
    }
    TcpListener::bind(addr).map_err(|e| Error::Usage(format!("--listen {addr}: cannot bind: {e}")))
}

/// Serves `/metrics` from `listener` in a background thread for the life of the process.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    if let Ok(a) = listener.local_addr() {
        eprintln!("migtrace: serving metrics on http://{a}/metrics");
    }
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| anyhow::anyhow!("starting the metrics server: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = respond(&req, &metrics);
                let _ = req.respond(resp);
            }
        })?;
    Ok(())
}

/// The response to one request: the metrics in the format asked for, or 404.
fn respond(req: &tiny_http::Request, m: &Metrics) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let path = req.url().split('?').next().unwrap_or("");
    if path != "/metrics" || !matches!(req.method(), tiny_http::Method::Get) {
        return tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404);
    }
    let openmetrics = req.headers().iter().any(|h| {
        h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
    });
    let (body, ctype) = if openmetrics {
        (
            m.openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            to_text_004(&m.openmetrics()),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let header = tiny_http::Header::from_bytes("Content-Type", ctype).expect("static header");
    tiny_http::Response::from_string(body).with_header(header)
}

#[cfg(test)]
mod tests {
    use super::*;

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
