//! Human output: a header naming the backend and why, one line per interval, and a summary.
use std::io::Write;

use super::Sink;
use crate::record::{
    GuestInfo, Interval, LinkInterval, LinkSummary, MappingGroup, QemuRate, Start, Summary,
};
use crate::units::clean;
use crate::units::fmt_bytes as bytes;

pub struct TerminalSink<W: Write> {
    out: W,
    lines: u64,
    /// Caveats already shown in the header: the summary adds only new ones.
    shown: Vec<String>,
}

impl<W: Write> TerminalSink<W> {
    pub fn new(out: W) -> Self {
        TerminalSink {
            out,
            lines: 0,
            shown: Vec::new(),
        }
    }
}

/// An integer with thousands separators.
pub fn count(n: f64) -> String {
    let s = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl<W: Write> Sink for TerminalSink<W> {
    fn start(&mut self, s: &Start) {
        let o = &mut self.out;
        let _ = writeln!(
            o,
            "migtrace: watching pid {} ({}), RSS {}, writable {}",
            s.pid,
            clean(&s.comm),
            bytes(s.target_rss_bytes as f64),
            writable(s.writable_bytes, s.shared_writable_bytes)
        );
        if let Some(g) = &s.guest {
            let _ = guest_lines(o, g);
        }
        if !s.mappings.is_empty() {
            let _ = writeln!(o, "  measuring: {}", mappings(&s.mappings));
        }
        let _ = writeln!(o, "backend: {} ({})", s.backend, clean(&s.reason));
        for c in &s.caveats {
            let _ = writeln!(o, "  note: {}", clean(c));
        }
        self.shown = s.caveats.clone();
        for w in &s.warnings {
            let _ = writeln!(o, "  warning: {}", clean(w));
        }
        let _ = o.flush();
    }

    fn interval(&mut self, i: &Interval) {
        let o = &mut self.out;
        if self.lines.is_multiple_of(20) {
            let _ = writeln!(
                o,
                "{:>7} {:>12} {:>12} {:>10} {:>22} {:>6}",
                "time", "dirty pg/s", "dirty/s", "±95%", "faults new/cow/read", "drops"
            );
        }
        self.lines += 1;
        let ci = match i.ci95_bytes_per_sec {
            Some([lo, hi]) if i.dirty_bytes_per_sec > 0.0 => {
                format!("{:.1}%", (hi - lo) / 2.0 / i.dirty_bytes_per_sec * 100.0)
            }
            Some([_, hi]) => format!("<{}", bytes(hi)),
            None => "-".into(),
        };
        let faults = match &i.faults {
            Some(f) => format!(
                "{}/{}/{}",
                count(f.write_not_present as f64),
                count(f.write_protect as f64),
                count(f.read as f64)
            ),
            None => "-".into(),
        };
        let _ = writeln!(
            o,
            "{:>6.1}s {:>12} {:>10}/s {:>10} {:>22} {:>6}{}",
            i.t_s,
            count(i.dirty_pages_per_sec),
            bytes(i.dirty_bytes_per_sec),
            ci,
            faults,
            i.drops.total(),
            if i.warmup {
                "  warm-up: sample grown, not in summary"
            } else if i.partial {
                "  partial interval"
            } else {
                ""
            }
        );
        if let Some(n) = &i.note {
            let _ = writeln!(o, "  note: {}", clean(n));
        }
        let _ = o.flush();
    }

    fn qemu(&mut self, r: &QemuRate) {
        let _ = writeln!(
            self.out,
            "  qemu calc-dirty-rate: {}/s over {:.0} s (page-sampling, {} pages/GiB)",
            bytes(r.bytes_per_sec),
            r.calc_time_s,
            r.sample_pages
        );
        let _ = self.out.flush();
    }

    fn link(&mut self, l: &LinkInterval) {
        let _ = writeln!(self.out, "{}", link_line(l));
        let _ = self.out.flush();
    }

    fn summary(&mut self, s: &Summary) {
        let o = &mut self.out;
        let _ = summary_rates(o, s)
            .and_then(|()| summary_link(o, s.link.as_ref()))
            .and_then(|()| summary_target(o, s))
            .and_then(|()| summary_growth(o, s))
            .and_then(|()| summary_threads(o, s))
            .and_then(|()| summary_guest(o, s))
            .and_then(|()| summary_backend(o, s));
        for c in s.caveats.iter().filter(|c| !self.shown.contains(c)) {
            let _ = writeln!(o, "  note: {}", clean(c));
        }
        let _ = o.flush();
    }
}

/// What was found of the guest: its RAM, what of QEMU was left out, its vCPUs.
fn guest_lines(o: &mut impl Write, g: &GuestInfo) -> std::io::Result<()> {
    let blocks: Vec<String> = g
        .blocks
        .iter()
        .map(|b| {
            let kind = if b.shared { "shared" } else { "private" };
            format!(
                "{} {} ({kind})",
                clean(&b.name),
                bytes((b.end - b.start) as f64)
            )
        })
        .collect();
    writeln!(
        o,
        "  guest: QEMU {}({}), {} of RAM: {}; {} vCPU(s); found from the {}",
        g.name
            .as_deref()
            .map(|n| format!("'{}' ", clean(n)))
            .unwrap_or_default(),
        clean(&g.accel),
        bytes(g.ram_bytes as f64),
        blocks.join(", "),
        g.vcpus.len(),
        g.found_from
    )?;
    let left: Vec<String> = g
        .excluded
        .iter()
        .map(|e| format!("{} {}", bytes(e.bytes as f64), e.reason))
        .collect();
    if !left.is_empty() {
        writeln!(o, "  not guest RAM, left out: {}", left.join("; "))?;
    }
    Ok(())
}

/// The guest's vCPUs and QEMU's own rate, when there are.
fn summary_guest(o: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    if let Some(g) = &s.guest {
        let busy: Vec<String> = g
            .vcpus
            .iter()
            .map(|v| match v.busy_share {
                Some(b) => format!("{} {:.0}%", v.index, b * 100.0),
                None => format!("{} ?", v.index),
            })
            .collect();
        writeln!(
            o,
            "  guest          {} of RAM measured; vCPUs on CPU: {}",
            bytes(g.ram_bytes as f64),
            busy.join(", ")
        )?;
    }
    if let Some(q) = &s.qemu_dirty_rate {
        writeln!(o, "  qemu says      {}", qemu_says(q))?;
    }
    Ok(())
}

/// QEMU's own measurement over the watch: "no measurement" when it gave none.
fn qemu_says(q: &crate::record::QemuRateSummary) -> String {
    let err = q
        .error
        .as_deref()
        .map(|e| format!(" (stopped: {})", clean(e)))
        .unwrap_or_default();
    let rate = q
        .mean_bytes_per_sec
        .map_or("no measurement".into(), |m| format!("{}/s", bytes(m)));
    format!(
        "{rate} (calc-dirty-rate, mean of {} measurement(s), {} pages/GiB){err}",
        q.measurements, q.sample_pages
    )
}

/// Writable bytes, with the shared part when there is one.
fn writable(total: u64, shared: u64) -> String {
    if shared > 0 {
        format!(
            "{} ({} of it shared)",
            bytes(total as f64),
            bytes(shared as f64)
        )
    } else {
        bytes(total as f64)
    }
}

/// The largest measured mapping groups, in a few words.
fn mappings(groups: &[MappingGroup]) -> String {
    const SHOWN: usize = 4;
    let mut parts: Vec<String> = groups
        .iter()
        .take(SHOWN)
        .map(|g| {
            let kind = if g.shared { "shared" } else { "private" };
            let n = if g.mappings > 1 {
                format!(" x{}", g.mappings)
            } else {
                String::new()
            };
            format!("{} {kind} {}{n}", bytes(g.bytes as f64), clean(&g.name))
        })
        .collect();
    if groups.len() > SHOWN {
        let rest: u64 = groups[SHOWN..].iter().map(|g| g.bytes).sum();
        parts.push(format!(
            "{} in {} more",
            bytes(rest as f64),
            groups.len() - SHOWN
        ));
    }
    parts.join(", ")
}

/// The summary's head: how it ended, the mean rate with its interval, the distribution.
fn summary_rates(o: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    writeln!(
        o,
        "\nsummary: pid {} ({}), backend {}, ended by {}",
        s.pid,
        clean(&s.comm),
        s.backend,
        s.end_reason
    )?;
    let ci = match s.ci95_bytes_per_sec {
        Some([lo, hi]) => format!(" (95% CI {}/s .. {}/s)", bytes(lo), bytes(hi)),
        None => String::new(),
    };
    writeln!(
        o,
        "  dirty rate     {}/s, {} pages/s{}  over {:.1} s in {} intervals",
        bytes(s.dirty_bytes_per_sec),
        count(s.dirty_pages_per_sec),
        ci,
        s.duration_s,
        s.intervals
    )?;
    match &s.rate_percentiles {
        Some(r) if s.intervals > 1 => writeln!(
            o,
            "  interval rates p50 {}/s, p90 {}/s, p99 {}/s, max {}/s",
            bytes(r.p50_bytes_per_sec),
            bytes(r.p90_bytes_per_sec),
            bytes(r.p99_bytes_per_sec),
            bytes(r.max_bytes_per_sec)
        )?,
        _ => writeln!(o, "  peak interval  {}/s", bytes(s.peak_bytes_per_sec))?,
    }
    if let Some(u) = s.unique_pages_total {
        writeln!(
            o,
            "  unique pages   {} ({}) over the whole watch",
            count(u),
            bytes(u * s.page_size as f64)
        )?;
    }
    Ok(())
}

/// The target's memory, the fault counts, everything dropped, zero pages and busy share.
fn summary_target(o: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    writeln!(
        o,
        "  target         RSS {}, writable {}",
        bytes(s.target_rss_bytes as f64),
        writable(s.writable_bytes, s.shared_writable_bytes)
    )?;
    if let Some(f) = &s.faults {
        writeln!(
            o,
            "  write faults   {} first-touch, {} copy-on-write/protect; {} read faults; {} outside range",
            count(f.write_not_present as f64),
            count(f.write_protect as f64),
            count(f.read as f64),
            count(f.out_of_range as f64)
        )?;
    }
    writeln!(
        o,
        "  dropped        {} (thread map full {}, ring buffer full {}, sampling misses {})",
        s.dropped_events, s.drops.thread_map_full, s.drops.ringbuf_full, s.drops.sample_misses
    )?;
    if let Some(z) = s.zero_page_share {
        writeln!(
            o,
            "  zero pages     {:.1}% of sampled writable pages",
            z * 100.0
        )?;
    }
    if let Some(b) = s.busy_share {
        writeln!(
            o,
            "  busy share     {:.1}% on CPU (mean over dirtying threads)",
            b * 100.0
        )?;
    }
    Ok(())
}

/// The dirty-set growth curve, one line per window length.
fn summary_growth(o: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    if s.growth.is_empty() {
        return Ok(());
    }
    writeln!(o, "  dirty-set growth U(window):")?;
    for g in &s.growth {
        writeln!(
            o,
            "    {:>9.2} s  {:>12} pages  {:>10}  ({} windows)",
            g.window_s,
            count(g.unique_pages),
            bytes(g.unique_pages * s.page_size as f64),
            g.windows
        )?;
    }
    Ok(())
}

/// The ten busiest writer threads.
fn summary_threads(o: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    if s.threads.is_empty() {
        return Ok(());
    }
    writeln!(o, "  threads (write faults):")?;
    for t in s.threads.iter().take(10) {
        let busy = t
            .busy_share
            .map(|b| format!(", on CPU {:.0}%", b * 100.0))
            .unwrap_or_default();
        writeln!(
            o,
            "    {:>8} {:<16} {:>12} {:>5.1}%{}",
            t.tid,
            clean(&t.comm),
            count(t.write_faults as f64),
            t.share * 100.0,
            busy
        )?;
    }
    if s.threads.len() > 10 {
        writeln!(o, "    ... {} more threads", s.threads.len() - 10)?;
    }
    Ok(())
}

/// The backend's own figures, and where the profile went.
fn summary_backend(o: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    // Every figure of the backend's stats, by field name.
    let stats = s.backend_stats.as_ref().map(serde_json::to_value);
    if let Some(Ok(serde_json::Value::Object(m))) = &stats {
        writeln!(o, "  {} backend:", s.backend)?;
        for (k, v) in m {
            writeln!(o, "    {k:<32} {v}")?;
        }
    }
    if let Some(p) = &s.profile_out {
        writeln!(o, "  profile        written to {}", clean(p))?;
    }
    Ok(())
}

/// A bytes-per-second figure or `-`.
fn rate_or_dash(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{}/s", bytes(r)))
}

/// One interval's link line: tx beside the link, headroom, dirty/headroom.
fn link_line(l: &LinkInterval) -> String {
    let iface = l.iface.as_deref().map(clean).unwrap_or_default();
    let link = l.link_bits.map_or("link ?".into(), |b| {
        format!("of {}", crate::units::fmt_link(b))
    });
    let ratio = l.dirty_to_headroom.map_or("-".into(), |r| {
        format!(
            "{r:.2}{}",
            if r > 1.0 {
                " (> 1: cannot converge unthrottled)"
            } else {
                ""
            }
        )
    });
    let mut s = format!(
        "  link {iface}: tx {} {link}, headroom {}, dirty/headroom {ratio}, sends {}",
        rate_or_dash(l.tx_bytes_per_sec),
        rate_or_dash(l.headroom_bytes_per_sec),
        rate_or_dash(l.send_bytes_per_sec),
    );
    if l.migration_bytes > 0 {
        s.push_str(&format!(", migration {}", bytes(l.migration_bytes as f64)));
    }
    if l.thread_map_full > 0 {
        s.push_str(&format!(
            ", {} sends unattributed (thread map full)",
            l.thread_map_full
        ));
    }
    s
}

/// The summary's link section (`--iface`).
fn summary_link(o: &mut impl Write, l: Option<&LinkSummary>) -> std::io::Result<()> {
    let Some(l) = l else { return Ok(()) };
    let iface = l.iface.as_deref().map(clean).unwrap_or_default();
    let link = match (l.link_bits, &l.link_from) {
        (Some(b), Some(f)) => format!("{} ({})", crate::units::fmt_link(b), clean(f)),
        _ => "unknown (give --link)".into(),
    };
    writeln!(
        o,
        "  link {iface}: {link}, efficiency {:.2}; tx mean {} (peak {}), {} in all",
        l.efficiency,
        rate_or_dash(l.tx_bytes_per_sec),
        rate_or_dash(l.tx_peak_bytes_per_sec),
        bytes(l.tx_bytes as f64)
    )?;
    let ratio = l
        .dirty_to_headroom
        .map_or("-".into(), |r| format!("{r:.2}"));
    writeln!(
        o,
        "  headroom {} (lowest interval {}), dirty/headroom {ratio}",
        rate_or_dash(l.headroom_bytes_per_sec),
        rate_or_dash(l.headroom_min_bytes_per_sec)
    )?;
    writeln!(
        o,
        "  target sends: {} in {} calls ({} errors), migration threads {}, drops {}",
        bytes(l.send_bytes as f64),
        count(l.send_calls as f64),
        l.send_errors,
        bytes(l.migration_bytes as f64),
        l.thread_map_full
    )?;
    for t in l.threads.iter().take(8) {
        writeln!(
            o,
            "    tid {:>7} {:<16} {}{}",
            t.tid,
            clean(&t.comm),
            bytes(t.bytes as f64),
            if t.migration { " (migration)" } else { "" }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_without_a_measurement_says_so() {
        let q = crate::record::QemuRateSummary {
            mean_bytes_per_sec: None,
            measurements: 0,
            sample_pages: 512,
            error: Some("QEMU did not answer".into()),
        };
        let line = qemu_says(&q);
        assert!(line.starts_with("no measurement"), "{line}");
        assert!(!line.contains("0 B/s"), "{line}");
    }
}
