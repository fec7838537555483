//! The metrics of `migtrace passes --listen`: a real migration as QEMU reports it, live from
//! each `query-migrate` reply, and one observation per pass as each pass closes.
//!
//! Live gauges (the pass in progress, remaining bytes, QEMU's dirty rate, the throttle, the
//! status as a state set, total/setup/downtime) follow the replies. The per-pass histograms
//! (duration, bytes sent, pages dirtied) get each pass when the tracker closes it, timed by
//! the polls; when the migration ends they are rebuilt from the final report, whose pass
//! boundaries may have moved to a `MIGRATION_PASS` event's time or the downtime (at most one
//! poll), so that what a scrape sees after the end is the report exactly: count == passes.
use std::sync::Arc;

use crate::passes::{PassRecord, PassSummary};
use crate::qemu::qmp::MigrationInfo;
use crate::sink::prometheus::{link, Metrics, StatusLabels, TargetLabels};

/// Statuses a migration can be in (QEMU 7.2 `MigrationStatus`), served as a state set.
pub const STATUSES: [&str; 14] = [
    "none",
    "setup",
    "cancelling",
    "cancelled",
    "active",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover",
    "completed",
    "failed",
    "colo",
    "pre-switchover",
    "device",
    "wait-unplug",
];

/// Feeds one migration's series.
pub struct PassFeed {
    metrics: Arc<Metrics>,
    labels: TargetLabels,
    /// Passes already observed in the histograms.
    observed: usize,
    /// `ram.transferred` already counted.
    transferred: u64,
}

impl PassFeed {
    /// A feed for the migration of the QEMU with these labels.
    pub fn new(metrics: Arc<Metrics>, labels: TargetLabels) -> PassFeed {
        PassFeed {
            metrics,
            labels,
            observed: 0,
            transferred: 0,
        }
    }

    /// One `query-migrate` reply. An ending status (`completed`, `failed`, `cancelled`) is
    /// served by [`PassFeed::finish`], with the final values, so a scrape that sees it sees
    /// the whole report.
    pub fn reply(&mut self, info: &MigrationInfo) {
        let (m, l) = (&self.metrics, &self.labels);
        let status = info.status.as_deref().unwrap_or("none");
        if !crate::passes::is_terminal(status) {
            self.status(status);
        }
        let secs = |ms: Option<u64>| ms.map(|v| v as f64 / 1000.0);
        if let Some(t) = secs(info.total_time).filter(|t| *t > 0.0) {
            m.migration_total_time.get_or_create(l).set(t);
        }
        if let Some(t) = secs(info.setup_time) {
            m.migration_setup_time.get_or_create(l).set(t);
        }
        if let Some(t) = secs(info.downtime) {
            m.migration_downtime.get_or_create(l).set(t);
        }
        m.migration_throttle
            .get_or_create(l)
            .set(info.cpu_throttle_percentage.unwrap_or(0) as f64 / 100.0);
        let Some(ram) = &info.ram else { return };
        m.migration_pass
            .get_or_create(l)
            .set(ram.dirty_sync_count as i64);
        m.migration_remaining
            .get_or_create(l)
            .set(ram.remaining as f64);
        let page = if ram.page_size > 0 {
            ram.page_size
        } else {
            4096
        };
        m.migration_dirty_rate
            .get_or_create(l)
            .set(ram.dirty_pages_rate as f64 * page as f64);
        let c = m.migration_transferred.get_or_create(l);
        c.inc_by(ram.transferred.saturating_sub(self.transferred));
        self.transferred = self.transferred.max(ram.transferred);
    }

    /// The status as a state set: 1 for the one it is in, 0 for the others.
    fn status(&self, now: &str) {
        let known = STATUSES.contains(&now);
        for s in STATUSES {
            let g = self
                .metrics
                .migration_status
                .get_or_create(&status(&self.labels, s));
            g.set(i64::from(s == now));
        }
        if !known {
            let g = self
                .metrics
                .migration_status
                .get_or_create(&status(&self.labels, now));
            g.set(1);
        }
    }

    /// The passes closed so far (the tracker's list): observes the new ones.
    pub fn closed(&mut self, passes: &[PassRecord]) {
        for p in passes.iter().skip(self.observed) {
            self.observe(p);
        }
        self.observed = self.observed.max(passes.len());
    }

    fn observe(&self, p: &PassRecord) {
        let (m, l) = (&self.metrics, &self.labels);
        m.pass_duration_hist.get_or_create(l).observe(p.duration_s);
        m.pass_bytes_hist.get_or_create(l).observe(p.bytes as f64);
        if let Some(d) = p.dirty_pages {
            m.pass_dirty_pages_hist.get_or_create(l).observe(d);
        }
    }

    /// The final report: the histograms hold its passes exactly, the gauges its summary.
    pub fn finish(&mut self, passes: &[PassRecord], s: &PassSummary) {
        let m = self.metrics.clone();
        for h in [
            &m.pass_duration_hist,
            &m.pass_bytes_hist,
            &m.pass_dirty_pages_hist,
        ] {
            h.remove(&self.labels);
        }
        self.observed = 0;
        self.closed(passes);
        self.status(&s.status);
        let l = &self.labels;
        m.migration_pass.get_or_create(l).set(s.passes as i64);
        m.migration_total_time.get_or_create(l).set(s.total_time_s);
        if let Some(d) = s.downtime_s {
            m.migration_downtime.get_or_create(l).set(d);
        }
        let c = m.migration_transferred.get_or_create(l);
        c.inc_by(s.bytes.saturating_sub(self.transferred));
        self.transferred = self.transferred.max(s.bytes);
    }

    /// The model's prediction for this migration (`--profile`), over its max-bandwidth.
    pub fn predicted(&self, link_bits: f64, total_s: f64, downtime_s: f64, converges: bool) {
        let (m, ll) = (&self.metrics, link(&self.labels, link_bits));
        m.predicted_total.get_or_create(&ll).set(total_s);
        m.predicted_downtime.get_or_create(&ll).set(downtime_s);
        m.predicted_converges
            .get_or_create(&ll)
            .set(i64::from(converges));
    }
}

/// A target's labels with a migration status.
fn status(l: &TargetLabels, s: &str) -> StatusLabels {
    StatusLabels {
        pid: l.pid.clone(),
        comm: l.comm.clone(),
        guest: l.guest.clone(),
        status: s.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::{EndedBy, Tracker};

    /// A reply with the auto-converge throttle at 20 %.
    fn info(status: &str, t_ms: u64, syncs: u64, transferred: u64) -> MigrationInfo {
        MigrationInfo {
            cpu_throttle_percentage: Some(20),
            ..crate::passes::tests::info(status, t_ms, syncs, transferred)
        }
    }

    /// The value of the one sample of `name` (any labels, or those in `labels`).
    fn sample(text: &str, name: &str, labels: &str) -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {name} {labels} in {text}"))
            .to_string()
    }

    /// Live replies, then the final report: the histograms hold exactly the report's passes.
    #[test]
    fn the_histograms_end_with_one_observation_per_pass() {
        let m = Arc::new(Metrics::new());
        let mut feed = PassFeed::new(m.clone(), TargetLabels::default());
        let mut t = Tracker::new();
        let mut end = info("completed", 1800, 4, 9000);
        end.downtime = Some(100);
        for (i, r) in [
            info("active", 20, 1, 100),
            info("active", 1000, 2, 5000),
            info("active", 1500, 3, 7000),
            end,
        ]
        .iter()
        .enumerate()
        {
            t.observe(r, 100.0 + i as f64);
            feed.reply(r);
            feed.closed(t.closed());
        }
        let live = m.openmetrics();
        let status = "migtrace_migration_status";
        assert_eq!(
            sample(&live, status, "status=\"active\""),
            "1",
            "until finish"
        );
        assert_eq!(
            sample(&live, "migtrace_pass_duration_seconds_count", ""),
            "2"
        );
        assert_eq!(
            sample(&live, "migtrace_migration_cpu_throttle_ratio", ""),
            "0.2"
        );
        feed.predicted(128.0 * 8.0 * 1048576.0, 2.5, 0.02, true);
        let p = m.openmetrics();
        let link = "link_bits=\"1073741824\"";
        assert_eq!(
            sample(&p, "migtrace_predicted_total_time_seconds", link),
            "2.5"
        );
        assert_eq!(sample(&p, "migtrace_predicted_converges", link), "1");
        let (passes, s) = t.finish(EndedBy::Migration);
        feed.finish(&passes, &s);
        let text = m.openmetrics();
        assert_eq!(s.passes, 4);
        assert_eq!(
            sample(&text, "migtrace_pass_duration_seconds_count", ""),
            "4"
        );
        assert_eq!(sample(&text, "migtrace_pass_sent_bytes_count", ""), "4");
        assert_eq!(sample(&text, status, "status=\"completed\""), "1");
        assert_eq!(sample(&text, status, "status=\"active\""), "0");
        let sent = "migtrace_migration_transferred_bytes_total";
        assert_eq!(sample(&text, sent, ""), "9000");
        assert_eq!(
            sample(&text, "migtrace_migration_downtime_seconds", ""),
            "0.1"
        );
    }
}
