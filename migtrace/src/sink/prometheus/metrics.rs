//! The registry of what watches and `passes` measure ([`Metrics`]), its label sets (every
//! label value escaped, [`LabelValue`]) and the text formats it is served in.
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

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

/// Fault kinds, as `kind` label values.
pub const FAULT_KINDS: [&str; 4] = ["write_not_present", "write_protect", "read", "out_of_range"];
/// Drop reasons, as `kind` label values.
pub const DROP_KINDS: [&str; 3] = ["thread_map_full", "ringbuf_full", "sample_misses"];

pub(crate) type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;
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
    /// Processes `exporter --qemu` found and does not watch: not trusted, or past
    /// `--max-targets`.
    pub exporter_skipped: Gauge,
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
            exporter_skipped: Gauge::default(),
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
        self.register_exporter();
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

    /// The counters, the target's memory and the live predictions.
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
    }

    /// The exporter's own figures.
    fn register_exporter(&mut self) {
        let r = &mut self.registry;
        r.register_with_unit(
            "exporter_resident",
            "Resident memory of the exporter itself (migtrace exporter only)",
            Unit::Bytes,
            self.exporter_rss.clone(),
        );
        r.register(
            "exporter_skipped_targets",
            "Processes the exporter found and does not watch: an untrusted QEMU (owner, executable) or one past --max-targets",
            self.exporter_skipped.clone(),
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

/// A target's labels with a `kind`.
pub(crate) fn kind(l: &TargetLabels, k: &str) -> KindLabels {
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
