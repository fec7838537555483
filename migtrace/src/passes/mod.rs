//! The passes of a real QEMU migration, timed from QMP (`migtrace passes`). Pure: it is fed
//! `query-migrate` replies and `MIGRATION_PASS` events with their times, and returns the
//! per-pass records and the summary. No I/O here; `commands/passes.rs` polls QEMU.
//!
//! A pass is the time between two dirty-bitmap syncs. QEMU counts a sync in
//! `ram.dirty-sync-count` and, with the `events` capability, sends `MIGRATION_PASS` with
//! `pass` = the new count. Pass n starts at sync n and ends at sync n+1, so a migration that
//! ends with dirty-sync-count N has exactly N passes here:
//! - pass 1 starts at the sync QEMU 7.2 makes during setup (`ram_init_bitmaps`), and is
//!   timed from the end of setup (`setup-time`), when sending starts;
//! - passes 2..N-1 start when `ram_save_pending` finds fewer dirty bytes than
//!   bandwidth x downtime-limit and syncs (QEMU syncs *before* a round is empty);
//! - pass N of a completed migration is the stop-and-copy: QEMU syncs once more after it
//!   stopped the guest (`ram_save_complete`), so it spans the downtime, `total-time -
//!   downtime` to `total-time`.
//!
//! Times are QEMU's own: `total-time` (ms since the migration started) of each reply, or the
//! event's timestamp mapped onto it. See `docs/passes.md`.
use serde::Serialize;

use crate::qemu::qmp::MigrationInfo;

/// One pass as measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassRecord {
    /// = the dirty-sync-count that started it.
    pub index: u64,
    pub start_s: f64,
    pub end_s: f64,
    pub duration_s: f64,
    /// `ram.transferred` delta over the pass (the migration stream's bytes, as QEMU counts).
    pub bytes: u64,
    /// `ram.remaining` first seen in the pass: what was dirty just after its sync.
    pub remaining_bytes_at_start: Option<u64>,
    /// QEMU's `dirty-pages-rate` (pages/s, recomputed at a sync at most once a second)
    /// times the pass's duration: pages the guest dirtied during the pass.
    pub dirty_pages: Option<f64>,
    pub dirty_pages_rate: Option<u64>,
    /// Largest `cpu-throttle-percentage` seen during the pass (auto-converge).
    pub throttle_pct: u64,
    /// The last pass of a completed migration: the guest is stopped.
    pub stop_copy: bool,
    /// How the start was timed: `event` (MIGRATION_PASS), `poll` (the first reply that
    /// showed the new count), `setup` (pass 1), `downtime` (stop-and-copy) or `unseen`
    /// (two syncs between two replies: zero length at the later reply).
    pub timed_by: &'static str,
    /// Bytes the migration threads sent in the pass, from eBPF on the send path (`passes
    /// --pid`); `None` where it was not measured, never estimated.
    pub wire_bytes_ebpf: Option<u64>,
}

/// How the watch of the migration ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndedBy {
    /// QEMU reported `completed`, `failed` or `cancelled`.
    Migration,
    Signal(String),
    Timeout,
    /// The QMP connection failed (QEMU exited or hung).
    QemuGone(String),
    /// A reply no QEMU sends: counters that went back or jumped beyond what a migration can
    /// do ([`Tracker::broken`]). The report ends at the last plausible reply, partial.
    Implausible(String),
}

/// The summary of a migration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassSummary {
    /// QEMU's last status: `completed`, `failed`, `cancelled`, or `active` etc. when the
    /// report is partial.
    pub status: String,
    /// True when the migration had not ended when the report was written.
    pub partial: bool,
    pub ended_by: EndedBy,
    pub passes: u64,
    /// QEMU's `total-time` (last seen when partial).
    pub total_time_s: f64,
    pub setup_time_s: Option<f64>,
    pub downtime_s: Option<f64>,
    /// `ram.transferred` at the end.
    pub bytes: u64,
    pub peak_throttle_pct: u64,
    pub error_desc: Option<String>,
    /// `MIGRATION_PASS` events received (0 when the `events` capability was off).
    pub pass_events: u64,
    /// QMP events the client dropped (too long, or too many waiting): a broken or hostile
    /// peer; 0 from a real QEMU.
    pub events_dropped: u64,
}

/// A pass being built.
#[derive(Clone, Debug)]
struct Open {
    index: u64,
    start_s: f64,
    start_bytes: u64,
    remaining: Option<u64>,
    rate: Option<u64>,
    throttle: u64,
    timed_by: &'static str,
    /// The migration threads' eBPF send bytes when the pass opened.
    start_wire: Option<u64>,
}

/// Fed replies and events in order; [`Tracker::finish`] gives the report.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    done: Vec<PassRecord>,
    open: Option<Open>,
    last: Option<MigrationInfo>,
    last_t: f64,
    /// Wall-clock seconds minus QEMU time, from the replies (smallest seen).
    wall_offset: Option<f64>,
    event_times: Vec<(u64, f64)>,
    peak_throttle: u64,
    /// `ram.transferred` of the last reply that was not `completed`.
    active_bytes: u64,
    /// (QEMU time, `ram.transferred`) of every reply before `completed`.
    samples: Vec<(f64, u64)>,
    /// Bytes the migration threads sent so far, counted by the eBPF send path (`--pid`).
    wire: Option<u64>,
    /// Why a reply was refused as no QEMU's; nothing is recorded after it.
    broken: Option<String>,
    /// Attached while the migration ran: the passes under way then were sent partly before
    /// the send path counted, so their `wire_bytes_ebpf` is not measured.
    attached_late: bool,
}

/// The longest `total-time` a real migration reports: ten years, in ms.
const MAX_TOTAL_MS: u64 = 10 * 365 * 24 * 3600 * 1000;
/// The fastest stream any link carries, bytes per second (8 Tbit/s): `transferred` beyond
/// this times the migration's age is no QEMU's.
const MAX_STREAM_BYTES_PER_SEC: f64 = 1e12;
/// Syncs a migration can make between two replies: each reads the dirty bitmap of all guest
/// RAM, so a few per millisecond at the very most; this many plus one per ms between them.
const MAX_SYNCS_BETWEEN_REPLIES: u64 = 16;

/// True for the statuses after which QEMU does no more.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled")
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// The passes closed so far (timed by the replies; [`Tracker::finish`] may still move a
    /// boundary to an event's time or the downtime).
    pub fn closed(&self) -> &[PassRecord] {
        &self.done
    }

    /// Wall-clock seconds since the epoch of QEMU's time zero (the migration's start), from
    /// the replies seen so far.
    pub fn wall_start(&self) -> Option<f64> {
        self.wall_offset
    }

    /// True once a migration has been seen running.
    pub fn started(&self) -> bool {
        self.last.is_some()
    }

    /// The migration was already running when `passes` attached ([`Tracker::attached_late`]).
    pub fn attached_while_running(&mut self) {
        self.attached_late = true;
    }

    /// Why the peer's replies were refused, once one was: no reply is recorded after it, and
    /// the follow should end with [`EndedBy::Implausible`].
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// What makes `info` a reply no QEMU sends, given the replies before it.
    fn implausible(&self, info: &MigrationInfo) -> Option<String> {
        let status = info.status.as_deref().unwrap_or("none");
        let ms = info.total_time.unwrap_or(0);
        if ms > MAX_TOTAL_MS {
            return Some(format!("total-time {ms} ms is more than ten years"));
        }
        // A `completed` reply may say total-time 0 (docs/qemu.md): its time is not checked.
        let t = if status == "completed" || info.total_time.is_none() {
            self.last_t
        } else {
            ms as f64 / 1000.0
        };
        if self.last.is_some() && t < self.last_t {
            return Some(format!(
                "total-time went back from {:.3} s to {t:.3} s",
                self.last_t
            ));
        }
        let ram = info.ram.as_ref()?;
        if ram.transferred as f64 > MAX_STREAM_BYTES_PER_SEC * t.max(1.0) {
            return Some(format!(
                "transferred {} bytes in {t:.3} s is more than any link carries",
                ram.transferred
            ));
        }
        let prev = self.last.as_ref().and_then(|l| l.ram.as_ref());
        let (syncs, bytes) = prev.map_or((0, 0), |p| (p.dirty_sync_count, p.transferred));
        if ram.dirty_sync_count < syncs || ram.transferred < bytes {
            return Some(format!(
                "the counters went back: dirty-sync-count {syncs} -> {}, transferred {bytes} -> {}",
                ram.dirty_sync_count, ram.transferred
            ));
        }
        let since_ms = if prev.is_some() { t - self.last_t } else { t } * 1000.0;
        let most = MAX_SYNCS_BETWEEN_REPLIES + since_ms as u64;
        if ram.dirty_sync_count - syncs > most {
            return Some(format!(
                "dirty-sync-count jumped from {syncs} to {} in {since_ms:.0} ms",
                ram.dirty_sync_count
            ));
        }
        None
    }

    /// A `query-migrate` reply received at wall-clock `wall_s` (seconds since the epoch). A
    /// reply no QEMU sends is not recorded, nor anything after it ([`Tracker::broken`]).
    pub fn observe(&mut self, info: &MigrationInfo, wall_s: f64) {
        let status = info.status.as_deref().unwrap_or("none");
        if self.broken.is_some() || status == "none" || (self.last.is_none() && is_terminal(status))
        {
            return; // broken already, no migration yet, or the end of an earlier one
        }
        if let Some(why) = self.implausible(info) {
            self.broken = Some(why);
            return;
        }
        let t = match (status, info.total_time) {
            ("completed", _) | (_, None) => self.last_t,
            (_, Some(ms)) => ms as f64 / 1000.0,
        };
        if status != "completed" && info.total_time.is_some() {
            let off = wall_s - t;
            self.wall_offset = Some(self.wall_offset.map_or(off, |o: f64| o.min(off)));
        }
        self.last_t = self.last_t.max(t);
        let throttle = info.cpu_throttle_percentage.unwrap_or(0);
        self.peak_throttle = self.peak_throttle.max(throttle);
        if let Some(ram) = &info.ram {
            if status != "completed" {
                self.active_bytes = ram.transferred;
                self.samples.push((t, ram.transferred));
                self.advance(ram.dirty_sync_count, ram.transferred, t, info);
            }
        }
        if let Some(o) = &mut self.open {
            o.throttle = o.throttle.max(throttle);
        }
        self.last = Some(info.clone());
    }

    /// Opens every pass up to `count` at time `t`.
    fn advance(&mut self, count: u64, transferred: u64, t: f64, info: &MigrationInfo) {
        let cur = self.open.as_ref().map_or(0, |o| o.index);
        for n in cur + 1..=count {
            let timed_by = match (cur, n) {
                (0, 1) => "setup",
                _ if n == count => "poll",
                _ => "unseen",
            };
            self.close(t, transferred);
            let start_s = if timed_by == "setup" {
                info.setup_time.map_or(t, |ms| (ms as f64 / 1000.0).min(t))
            } else {
                t
            };
            self.open = Some(Open {
                index: n,
                start_s,
                start_bytes: if n == 1 { 0 } else { transferred },
                remaining: None,
                rate: None,
                throttle: 0,
                timed_by,
                // The first pass counts from the start, as its bytes do (the probe attaches
                // before the migration when `passes` is started first). Passes already under
                // way at a late attach are not measured: part of them went unseen.
                start_wire: if self.attached_late && self.last.is_none() {
                    None
                } else if n == 1 {
                    self.wire.map(|_| 0)
                } else {
                    self.wire
                },
            });
        }
        if let (Some(o), Some(ram)) = (&mut self.open, &info.ram) {
            if o.index == count {
                o.remaining.get_or_insert(ram.remaining);
                o.rate = Some(ram.dirty_pages_rate);
            }
        }
    }

    fn close(&mut self, end_s: f64, transferred: u64) {
        if let Some(o) = self.open.take() {
            let duration = (end_s - o.start_s).max(0.0);
            self.done.push(PassRecord {
                index: o.index,
                start_s: o.start_s,
                end_s,
                duration_s: duration,
                bytes: transferred.saturating_sub(o.start_bytes),
                remaining_bytes_at_start: o.remaining,
                dirty_pages: o.rate.map(|r| r as f64 * duration),
                dirty_pages_rate: o.rate,
                throttle_pct: o.throttle,
                stop_copy: false,
                timed_by: o.timed_by,
                wire_bytes_ebpf: self.wire.zip(o.start_wire).map(|(now, then)| now - then),
            });
        }
    }

    /// Bytes the migration threads sent since the last call (eBPF send path), before the
    /// reply they precede is observed.
    pub fn add_wire(&mut self, bytes: u64) {
        *self.wire.get_or_insert(0) += bytes;
    }

    /// A `MIGRATION_PASS` event: sync number `pass` at wall-clock `wall_s`.
    pub fn pass_event(&mut self, pass: u64, wall_s: f64) {
        self.event_times.push((pass, wall_s));
    }
}

impl Tracker {
    /// The report: every pass and the summary. `ended_by` says why the watch stopped.
    pub fn finish(mut self, ended_by: EndedBy) -> (Vec<PassRecord>, PassSummary) {
        let last = self.last.clone().unwrap_or_default();
        let status = last.status.clone().unwrap_or_else(|| "none".into());
        let ram = last.ram.clone().unwrap_or_default();
        let prev_bytes = self.last_active_bytes();
        let completed = status == "completed";
        let total = if completed {
            last.total_time.map_or(self.last_t, |ms| ms as f64 / 1000.0)
        } else {
            self.last_t
        };
        if completed && ram.dirty_sync_count > self.open.as_ref().map_or(0, |o| o.index) {
            let stop_start = last.downtime.map_or(total, |ms| total - ms as f64 / 1000.0);
            let info = MigrationInfo::default();
            let before = ram.dirty_sync_count - 1;
            self.advance(before, prev_bytes, self.last_t.min(stop_start), &info);
            self.advance(ram.dirty_sync_count, prev_bytes, stop_start, &info);
            if let Some(o) = &mut self.open {
                o.timed_by = "downtime";
            }
        }
        self.close(total, ram.transferred.max(prev_bytes));
        if completed {
            if let Some(p) = self.done.last_mut() {
                p.stop_copy = true;
            }
        }
        self.apply_events();
        if completed {
            self.time_stop_copy(last.downtime.map(|ms| total - ms as f64 / 1000.0));
        }
        self.recount_bytes(ram.transferred.max(prev_bytes));
        let summary = PassSummary {
            partial: !is_terminal(&status) || self.broken.is_some(),
            status,
            ended_by,
            passes: self.done.len() as u64,
            total_time_s: total,
            setup_time_s: last.setup_time.map(|ms| ms as f64 / 1000.0),
            downtime_s: last
                .downtime
                .filter(|_| completed)
                .map(|ms| ms as f64 / 1000.0),
            bytes: ram.transferred.max(prev_bytes),
            peak_throttle_pct: self.peak_throttle,
            error_desc: last.error_desc.clone(),
            pass_events: self.event_times.len() as u64,
            events_dropped: 0,
        };
        (self.done, summary)
    }

    /// `ram.transferred` of the last reply that was not `completed`.
    fn last_active_bytes(&self) -> u64 {
        self.active_bytes
    }

    /// The stop-and-copy starts when the guest stopped (`total-time - downtime`), even when
    /// a reply showed its sync before QEMU said `completed`.
    fn time_stop_copy(&mut self, stop_start: Option<f64>) {
        let (Some(t), n) = (stop_start, self.done.len()) else {
            return;
        };
        if n >= 2 {
            let t = t.max(self.done[n - 2].start_s);
            self.done[n - 2].end_s = t;
            self.done[n - 2].duration_s = t - self.done[n - 2].start_s;
            self.done[n - 1].start_s = t;
            self.done[n - 1].duration_s = self.done[n - 1].end_s - t;
            self.done[n - 1].timed_by = "downtime";
        }
    }

    /// Bytes of each pass from the replies: `transferred` at its end minus at its start
    /// (the last reply at or before each time; 0 before the first pass, `final_bytes` at the
    /// end of the last), so the passes add up to the total exactly.
    fn recount_bytes(&mut self, final_bytes: u64) {
        let at = |t: f64| {
            self.samples
                .iter()
                .take_while(|s| s.0 <= t + 1e-9)
                .last()
                .map_or(0, |s| s.1)
        };
        let n = self.done.len();
        let mut bytes = Vec::with_capacity(n);
        for (i, p) in self.done.iter().enumerate() {
            let start = if i == 0 { 0 } else { at(p.start_s) };
            let end = if i + 1 == n { final_bytes } else { at(p.end_s) };
            bytes.push(end.saturating_sub(start));
        }
        for (p, b) in self.done.iter_mut().zip(bytes) {
            p.bytes = b;
        }
    }

    /// Moves each pass start (from 2 on, not the stop-and-copy) to its `MIGRATION_PASS`
    /// event's time when that falls between its neighbours' known times.
    fn apply_events(&mut self) {
        let Some(off) = self.wall_offset else { return };
        for i in 1..self.done.len() {
            let (lo, hi) = (self.done[i - 1].start_s, self.done[i].end_s);
            let p = &self.done[i];
            if p.stop_copy {
                continue;
            }
            let Some(&(_, wall)) = self.event_times.iter().find(|(n, _)| *n == p.index) else {
                continue;
            };
            let t = wall - off;
            if t >= lo && t <= hi {
                self.done[i].start_s = t;
                self.done[i].timed_by = "event";
                self.done[i].duration_s = hi - t;
                self.done[i - 1].end_s = t;
                self.done[i - 1].duration_s = t - lo;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
