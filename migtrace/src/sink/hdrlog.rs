//! `--hdr-log FILE`: the per-interval dirty rate as an HdrHistogram interval log (the
//! standard format: V2 histograms, deflate-compressed, base64, one line per interval), as
//! written by the `hdrhistogram` crate and read by HdrHistogram's tools in any language.
//!
//! `watch --hdr-log`: one entry per measured interval, tagged `dirty_rate`, holding that
//! interval's rate in bytes per second (a histogram of one value: a watch has one rate per
//! interval). The log writer borrows its file, so it lives in a thread of its own that the
//! sink feeds; the summary (or dropping the sink) ends it and flushes the file.
//!
//! `passes --hdr-log`: one entry per pass, tagged `pass_duration`, at the pass's start and
//! for its length, holding its duration in microseconds; the log starts when the
//! migration started. Both are written by [`write_log`] and read by the same reader.
use std::{
    fs::File,
    io::{BufWriter, Write},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use hdrhistogram::{
    serialization::{
        interval_log::{IntervalLogWriterBuilder, Tag},
        V2DeflateSerializer,
    },
    Histogram,
};

use super::Sink;
use crate::record::{Interval, Start, Summary};

/// The tag of the dirty-rate entries.
pub const RATE_TAG: &str = "dirty_rate";
/// The tag of the pass-duration entries (microseconds).
pub const PASS_TAG: &str = "pass_duration";

/// One entry: start since the log's start time, length, value (bytes per second).
type Entry = (Duration, Duration, u64);

/// Writes the interval log from a background thread.
pub struct HdrLogSink {
    tx: Option<mpsc::Sender<Entry>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// Why the log could not be written, once the thread has ended.
    failed: Option<String>,
}

impl HdrLogSink {
    /// Starts the log in `file` (already created, so a bad path fails before the watch).
    pub fn new(file: File) -> HdrLogSink {
        let (tx, rx) = mpsc::channel::<Entry>();
        let started = SystemTime::now();
        let thread = std::thread::Builder::new()
            .name("hdr-log".into())
            .spawn(move || {
                let head = Head {
                    comment: "migtrace watch: per-interval dirty rate, bytes per second",
                    tag: RATE_TAG,
                    divisor: 1.0,
                };
                write_log(file, started, &head, rx)
            })
            .ok();
        HdrLogSink {
            tx: Some(tx),
            thread,
            failed: None,
        }
    }

    /// Ends the log: the thread writes what is left and flushes.
    fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.failed = Some(format!("{e:#}")),
                Err(_) => self.failed = Some("the writer thread panicked".into()),
            }
        }
    }
}

impl Drop for HdrLogSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// What a log says about itself: a comment, the tag of its entries, and the divisor of
/// the max column (1e6: microseconds read as seconds).
struct Head {
    comment: &'static str,
    tag: &'static str,
    divisor: f64,
}

/// A header, then one histogram of one value per entry.
fn write_log(
    file: impl Write,
    started: SystemTime,
    head: &Head,
    entries: impl IntoIterator<Item = Entry>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::new(file);
    let mut ser = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment(head.comment)
        .with_start_time(started)
        .with_base_time(started)
        .with_max_value_divisor(head.divisor)
        .begin_log_with(&mut out, &mut ser)?;
    let tag = Tag::new(head.tag).ok_or_else(|| anyhow::anyhow!("bad tag {}", head.tag))?;
    for (start, len, value) in entries {
        let mut h = Histogram::<u64>::new(3)?;
        h.record(value)?;
        w.write_histogram(&h, start, len, Some(tag))
            .map_err(|e| anyhow::anyhow!("writing an interval: {e:?}"))?;
    }
    drop(w);
    out.flush()?;
    Ok(())
}

/// `passes --hdr-log`: every pass's duration (microseconds) at its start and for its length;
/// the log starts at `started_wall_s` (the migration's start, seconds since the epoch).
pub fn write_passes(
    file: impl Write,
    passes: &[crate::passes::PassRecord],
    started_wall_s: Option<f64>,
) -> anyhow::Result<()> {
    let started = started_wall_s
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or_else(SystemTime::now, |s| {
            SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s)
        });
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    let entries = passes.iter().map(|p| {
        let us = (p.duration_s.max(0.0) * 1e6).round() as u64;
        (secs(p.start_s), secs(p.duration_s), us)
    });
    let head = Head {
        comment: "migtrace passes: pre-copy pass durations, microseconds",
        tag: PASS_TAG,
        divisor: 1e6,
    };
    write_log(file, started, &head, entries)
}

impl Sink for HdrLogSink {
    fn start(&mut self, _s: &Start) {}

    fn interval(&mut self, i: &Interval) {
        if i.partial || !i.dirty_bytes_per_sec.is_finite() || i.dirty_bytes_per_sec < 0.0 {
            return;
        }
        let start = Duration::from_secs_f64((i.t_s - i.duration_s).max(0.0));
        let len = Duration::from_secs_f64(i.duration_s.max(0.0));
        if let Some(tx) = &self.tx {
            let _ = tx.send((start, len, i.dirty_bytes_per_sec.round() as u64));
        }
    }

    fn summary(&mut self, _s: &Summary) {
        self.close();
    }

    fn failure(&mut self) -> Option<String> {
        self.close();
        self.failed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Drops;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    fn interval(t_s: f64, rate: f64, partial: bool) -> Interval {
        Interval {
            t_s,
            duration_s: 1.0,
            dirty_pages: rate / 4096.0,
            dirty_pages_per_sec: rate / 4096.0,
            dirty_bytes_per_sec: rate,
            ci95_bytes_per_sec: None,
            faults: None,
            drops: Drops::default(),
            sample: None,
            warmup: false,
            partial,
            note: None,
        }
    }

    #[test]
    fn one_entry_per_full_interval_with_its_rate() {
        let path = std::env::temp_dir().join(format!("migtrace-hdr-{}.hlog", std::process::id()));
        let mut sink = HdrLogSink::new(File::create(&path).unwrap());
        sink.interval(&interval(1.0, 32e6, false));
        sink.interval(&interval(2.0, 64e6, false));
        sink.interval(&interval(2.3, 99e6, true));
        drop(sink);
        let text = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let entries: Vec<(f64, f64)> = IntervalLogIterator::new(&text)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(h) => Some((h.start_timestamp().as_secs_f64(), h.max())),
                _ => None,
            })
            .collect();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0].0, 0.0);
        assert!((entries[1].1 - 64e6).abs() / 64e6 < 1e-3, "{entries:?}");
    }

    #[test]
    fn pass_durations_read_back_in_microseconds() {
        let path = std::env::temp_dir().join(format!("migtrace-pass-{}.hlog", std::process::id()));
        let pass = |index, start_s, duration_s| crate::passes::PassRecord {
            index,
            start_s,
            end_s: start_s + duration_s,
            duration_s,
            bytes: 1,
            remaining_bytes_at_start: None,
            dirty_pages: None,
            dirty_pages_rate: None,
            throttle_pct: 0,
            stop_copy: false,
            timed_by: "poll",
            wire_bytes_ebpf: None,
        };
        let passes = [pass(1, 0.01, 2.5), pass(2, 2.51, 0.25), pass(3, 2.76, 0.02)];
        write_passes(File::create(&path).unwrap(), &passes, Some(1.7e9)).unwrap();
        let text = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let got: Vec<(f64, f64, Option<String>)> = IntervalLogIterator::new(&text)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(h) => Some((
                    h.start_timestamp().as_secs_f64(),
                    h.max(),
                    h.tag().map(|t| t.as_str().to_string()),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            (got[1].0 - 2.51).abs() < 1e-3 && (got[1].1 - 0.25).abs() < 1e-3,
            "{got:?}"
        );
        assert_eq!(got[0].2.as_deref(), Some(PASS_TAG));
    }

    /// Issue 17: a log that cannot be written (`/dev/full`) is the watch's failure, not a
    /// warning: the sink says why once the watch has ended.
    #[test]
    fn a_log_that_cannot_be_written_is_a_failure() {
        let Ok(full) = File::options().write(true).open("/dev/full") else {
            eprintln!("skipped: this machine has no /dev/full to write to");
            return;
        };
        let mut sink = HdrLogSink::new(full);
        sink.interval(&interval(1.0, 1e6, false));
        let why = sink.failure().expect("a failure");
        assert!(why.contains("space"), "{why}");
    }
}
