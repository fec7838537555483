//! Parsing of the units people type: durations (`1s`, `300ms`, `15m`), link rates (`10g`,
//! `40gbit`, `25GbE`), memory sizes (`128GiB`, `128g`) and byte rates (`1.5GB/s`).
//!
//! Parsing is strict and context-aware, and hand-written on purpose: general-purpose size
//! crates (bytesize, byte-unit, ...) read `10g` as 10 GB *bytes* and accept `10gb` either
//! way, while here the same letters mean different things by context, as people use them:
//!
//! - a **link** is in bits per second, decimal: `10g` = `10gbit` = `10GbE` = `10Gb/s` =
//!   10 x 10^9 bit/s. Bytes must be spelled with a capital `B` (`1.25GB/s`).
//! - a **memory size** is in bytes, and a bare prefix is binary as in QEMU's `-m 128G`:
//!   `128g` = `128GiB` = 128 x 2^30 bytes; `128GB` is SI (128 x 10^9). A lowercase `b`
//!   (`128Gb`) reads as bits and is rejected as a likely typo.
//! - a **byte rate** (dirty rate) must say bytes and per second: `1.5GB/s`, `800MiB/s`,
//!   `1.5GiBps`; `1.5g/s` and `1.5Gb/s` are ambiguous (bits or bytes?) and rejected.
//!
//! Anything else, including a bare number, is an error naming what was expected. A number
//! is plain decimal with an optional exponent (`1e3GiB`); no sign, no `nan` or `inf`. Each
//! quantity has a plausible [`Range`] ([`LINK`], [`MEM`], [`RATE`], [`DIRTY_LIMIT`],
//! [`DOWNTIME`], [`DEADLINE`]); outside it the error is [`UnitError::OutOfRange`] and states
//! the range (`docs/reliability.md`). Zero is allowed only where the range starts at zero.
//!
//! A bare zero is the one number that needs no unit: zero is zero in bits, bytes or
//! seconds. It is read as zero and then judged like a zero with a unit, so `--dirty-rate 0`
//! is accepted like `0B/s`, and `--mem 0` is rejected like `0GiB`, as "must be more than
//! zero". The "has no unit: write e.g. ..." hint is given only for non-zero numbers, so it
//! never suggests a spelling that is then rejected.
//!
//! Errors are [`UnitError`]s, which become [`crate::error::Error::Usage`].
use std::time::Duration;

/// Why a value could not be read. The message names what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// A non-zero number without the unit that decides its meaning (`--link 10`).
    #[error("{0}")]
    NoUnit(String),
    /// A zero or negative value where only more than zero makes sense (`--mem 0`).
    #[error("{0}")]
    NotPositive(String),
    /// A well-formed value outside the plausible range of what it measures (`--link 1e27g`,
    /// `--mem 0.1B`, `--downtime 1ns`). The message states the range.
    #[error("{0}")]
    OutOfRange(String),
    /// Anything else: empty, not a number, an unknown, ambiguous or misspelled unit.
    #[error("{0}")]
    Invalid(String),
}

impl From<UnitError> for crate::error::Error {
    fn from(e: UnitError) -> Self {
        crate::error::Error::Usage(e.to_string())
    }
}

const KIB: f64 = 1024.0;
const MIB: f64 = KIB * KIB;
const PIB: f64 = MIB * MIB * MIB / KIB;

/// The plausible values of one kind of quantity, in its base unit (bit/s, bytes, bytes/s,
/// seconds), and how the error message states them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// What is measured, for the message ("link rate").
    pub what: &'static str,
    pub lo: f64,
    pub hi: f64,
    /// The range in words, as the error message gives it.
    pub words: &'static str,
}

impl Range {
    /// Whether `v` is in the range (never for NaN).
    pub fn contains(&self, v: f64) -> bool {
        v >= self.lo && v <= self.hi
    }

    /// `v` if in range, else the error naming the value as typed and the range.
    fn check(&self, typed: &str, v: f64) -> Result<f64, UnitError> {
        if self.contains(v) {
            Ok(v)
        } else {
            Err(UnitError::OutOfRange(format!(
                "{} {} is out of range: {}",
                self.what,
                quote(typed),
                self.words
            )))
        }
    }
}

/// Links: 1 kbit/s to 10 Tbit/s. Past either end the numbers are typos: QMP's
/// `max-bandwidth` is a u64 of bytes/s, and no NIC runs at 10 Tbit/s.
pub const LINK: Range = Range {
    what: "link rate",
    lo: 1e3,
    hi: 1e13,
    words: "a link goes from 1 kbit/s to 10 Tbit/s",
};
/// Memory: at least one 4 KiB page, at most 64 PiB (x86-64 addresses at most 4 PiB of
/// physical memory; the output prints sizes up to PiB, and what it prints is accepted).
pub const MEM: Range = Range {
    what: "memory size",
    lo: 4096.0,
    hi: 64.0 * PIB,
    words: "memory is at least one page (4 KiB) and at most 64 PiB",
};
/// Dirty rates: 0 to 10 TB/s, above the memory bandwidth of any machine.
pub const RATE: Range = Range {
    what: "rate",
    lo: 0.0,
    hi: 1e13,
    words: "a dirty rate goes from 0 to 10 TB/s",
};
/// QEMU's `vcpu-dirty-limit` counts whole MB/s (MB = 2^20): 1 MiB/s is its smallest.
pub const DIRTY_LIMIT: Range = Range {
    what: "dirty limit",
    lo: MIB,
    hi: 1e13,
    words: "a per-vCPU dirty limit goes from 1 MiB/s (QEMU counts whole MB/s) to 10 TB/s",
};
/// QEMU's `downtime-limit` is in whole milliseconds, at most 2000 s
/// (`MAX_MIGRATE_DOWNTIME_SECONDS` in `migration/options.c`).
pub const DOWNTIME: Range = Range {
    what: "downtime limit",
    lo: 0.001,
    hi: 2000.0,
    words: "a downtime limit goes from 1 ms to 2000 s, as QEMU's downtime-limit in ms",
};
/// A completion deadline: 1 s to 30 days (the simulation gives up after one simulated day).
pub const DEADLINE: Range = Range {
    what: "deadline",
    lo: 1.0,
    hi: 30.0 * 86400.0,
    words: "a deadline goes from 1 s to 30 days",
};

/// The text as typed, quoted and escaped for a one-line message, cut after 40 characters.
pub fn quote(t: &str) -> String {
    format!("{:?}", cut(t, 40))
}

/// `t` cut after `n` characters, with `…` where it was cut: what a message echoes of text
/// it does not control.
pub fn cut(t: &str, n: usize) -> String {
    let mut out: String = t.chars().take(n).collect();
    if out.len() < t.len() {
        out.push('…');
    }
    out
}

/// The value of a bare zero (`0`, `0.0`), which needs no unit.
fn bare_zero(t: &str) -> Option<f64> {
    let v: f64 = t.parse().ok()?;
    (v == 0.0 && t.chars().all(|c| c.is_ascii_digit() || c == '.')).then_some(0.0)
}

/// Longest spelling a hint suggests: the message stays short whatever was typed.
const HINT_MAX: usize = 24;

/// The "has no unit" error, suggesting only the spellings (`candidates`) that `ok` accepts
/// and that are short enough to read.
fn no_unit(
    head: String,
    candidates: &[String],
    ok: impl Fn(&str) -> bool,
    tail: &str,
) -> UnitError {
    let good: Vec<&str> = candidates
        .iter()
        .map(String::as_str)
        .filter(|c| c.len() <= HINT_MAX && ok(c))
        .collect();
    UnitError::NoUnit(if good.is_empty() {
        format!("{head}: give it a unit ({tail})")
    } else {
        format!("{head}: write e.g. {} ({tail})", good.join(" or "))
    })
}

/// The longest duration any flag takes: ten years. Longer ones overflowed a deadline
/// (`passes --timeout 18446744073709551615s` panicked adding it to the clock); a watch or a
/// timeout meant to be endless is spelled by leaving the flag out.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 366 * 86_400);

/// Parses a duration such as `1s`, `250ms`, `1m30s`, at most [`MAX_DURATION`]. A bare number
/// is rejected because it is ambiguous (seconds? milliseconds?).
/// A bare zero is zero seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Invalid("empty duration".into()));
    }
    if bare_zero(t).is_some() {
        return Ok(Duration::ZERO);
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') && t.parse::<f64>().is_ok() {
        return Err(UnitError::NoUnit(if t.len() + 2 <= HINT_MAX {
            format!(
                "duration {} has no unit: write e.g. {t}s or {t}ms",
                quote(t)
            )
        } else {
            format!("duration {} has no unit (e.g. 1s, 250ms)", quote(t))
        }));
    }
    let d = humantime::parse_duration(t).map_err(|e| {
        UnitError::Invalid(format!(
            "bad duration {}: {e} (examples: 1s, 250ms, 1m30s)",
            quote(t)
        ))
    })?;
    if d > MAX_DURATION {
        return Err(UnitError::Invalid(format!(
            "duration {} is longer than ten years (leave the flag out for no limit)",
            quote(t)
        )));
    }
    Ok(d)
}

/// Seconds in one of a duration unit, for a single number and unit (`1.5e3ms`).
fn time_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86400.0,
        _ => return None,
    })
}

/// A duration in seconds within `range` (`--downtime`, `--deadline`): one number with a unit
/// (`300ms`, `1.5s`, `2e3ms`) or humantime's compound form (`1m30s`). Zero is "must be more
/// than zero"; a bare non-zero number gets the "no unit" hint with spellings in range.
pub fn parse_secs_in(s: &str, range: &Range) -> Result<f64, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty {}", range.what)));
    }
    let v = if bare_zero(t).is_some() {
        0.0
    } else {
        match split_number(t) {
            // A zero in any spelling (`0e0`) needs no unit.
            Ok((n, "")) if n.value == 0.0 => 0.0,
            Ok((_, "")) => {
                return Err(no_unit(
                    format!("{} {} has no unit", range.what, quote(t)),
                    &[format!("{t}s"), format!("{t}ms")],
                    |c| parse_secs_in(c, range).is_ok(),
                    range.words,
                ))
            }
            Ok((n, unit)) if time_unit(unit).is_some() => n.value * time_unit(unit).unwrap_or(1.0),
            Ok(_) => parse_duration(t)?.as_secs_f64(),
            Err(e) => {
                return Err(UnitError::Invalid(format!(
                    "bad {}: {e} (examples: 300ms, 1s, 1m30s)",
                    range.what
                )))
            }
        }
    };
    if v == 0.0 {
        return Err(UnitError::NotPositive(format!(
            "must be more than zero, not {} ({})",
            quote(t),
            range.words
        )));
    }
    range.check(t, v)
}

/// A number as typed: plain decimal with an optional exponent (`1.5`, `2e3`, `1E-2`).
struct Number<'a> {
    /// Its value: infinite when too large for f64 (then out of any range); the smallest
    /// positive f64 when a non-zero number is too small for it (so it is not read as zero).
    value: f64,
    /// The number's own text.
    text: &'a str,
}

/// Splits `"1.5GB/s"` into the number `1.5` and `"GB/s"`. No sign (`-1g` is rejected here),
/// no `nan` or `inf`; an exponent is part of the number (`1e400g` is a number, out of range).
fn split_number(t: &str) -> Result<(Number<'_>, &str), UnitError> {
    let b = t.as_bytes();
    let digits = |mut i: usize, dot: bool| {
        while i < b.len() && (b[i].is_ascii_digit() || (dot && b[i] == b'.')) {
            i += 1;
        }
        i
    };
    let mantissa_end = digits(0, true);
    let mantissa = &t[..mantissa_end];
    let not_a_number = || UnitError::Invalid(format!("{} does not start with a number", quote(t)));
    if mantissa.is_empty() || mantissa == "." || mantissa.matches('.').count() > 1 {
        return Err(not_a_number());
    }
    let mut end = mantissa_end;
    if end < b.len() && (b[end] == b'e' || b[end] == b'E') {
        let sign = usize::from(end + 1 < b.len() && (b[end + 1] == b'+' || b[end + 1] == b'-'));
        let exp_end = digits(end + 1 + sign, false);
        if exp_end > end + 1 + sign {
            end = exp_end;
        }
    }
    let text = &t[..end];
    let mut value: f64 = text.parse().map_err(|_| not_a_number())?;
    if value == 0.0 && mantissa.bytes().any(|c| (b'1'..=b'9').contains(&c)) {
        value = f64::MIN_POSITIVE;
    }
    Ok((Number { value, text }, t[end..].trim_start()))
}

/// Decimal (SI) multiplier for a prefix letter, case-insensitive.
fn si(prefix: char) -> Option<f64> {
    match prefix.to_ascii_lowercase() {
        'k' => Some(1e3),
        'm' => Some(1e6),
        'g' => Some(1e9),
        't' => Some(1e12),
        'p' => Some(1e15),
        _ => None,
    }
}

/// Binary (IEC) multiplier for a prefix letter, case-insensitive.
fn iec(prefix: char) -> Option<f64> {
    match prefix.to_ascii_lowercase() {
        'k' => Some(KIB),
        'm' => Some(MIB),
        'g' => Some(MIB * KIB),
        't' => Some(MIB * MIB),
        'p' => Some(PIB),
        _ => None,
    }
}

/// Splits a unit such as `GiB` into its prefix letter and the rest (`('G', "iB")`), or
/// `(None, unit)` when it has no prefix.
fn split_prefix(unit: &str) -> (Option<char>, &str) {
    match unit.chars().next() {
        Some(c) if si(c).is_some() => (Some(c), &unit[c.len_utf8()..]),
        _ => (None, unit),
    }
}

/// Strips a per-second suffix (`/s`, `ps`, `/sec`) and says whether there was one.
fn strip_per_second(unit: &str) -> (&str, bool) {
    for suffix in ["/sec", "/s", "ps"] {
        if unit.len() > suffix.len()
            && unit.is_char_boundary(unit.len() - suffix.len())
            && unit[unit.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        {
            return (&unit[..unit.len() - suffix.len()], true);
        }
    }
    (unit, false)
}

/// A link rate in bits per second, from `10g`, `40gbit`, `25GbE`, `100Gb/s`, `400Gbps`,
/// `1000m`, or in bytes with a capital B: `1.25GB/s`, `1GiB/s`. Within [`LINK`].
pub fn parse_link(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let hint = "examples: 10g, 40gbit, 25GbE, 100Gb/s, 1.25GB/s";
    let zero = || UnitError::NotPositive(format!("link rate {} must be more than zero", quote(t)));
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty link rate ({hint})")));
    }
    let (n, unit) =
        split_number(t).map_err(|e| UnitError::Invalid(format!("bad link rate: {e} ({hint})")))?;
    let v = n.value;
    if v == 0.0 {
        // Zero bits is no link in any unit; say so rather than suggest a unit.
        return Err(zero());
    }
    if unit.is_empty() {
        return Err(no_unit(
            format!("link rate {} has no unit", quote(t)),
            &[format!("{t}g"), format!("{t}m"), format!("{t}k")],
            |c| parse_link(c).is_ok(),
            &format!("g = Gbit/s; {}; {hint}", LINK.words),
        ));
    }
    let (body, per_s) = strip_per_second(unit);
    let (prefix, rest) = split_prefix(body);
    let bits = match (prefix, rest) {
        // Bits: the norm for links. Bare prefix, `bit`, `bits`, `b`, `bE` (Ethernet).
        (Some(p), r)
            if r.is_empty()
                || r.eq_ignore_ascii_case("bit")
                || r.eq_ignore_ascii_case("bits")
                || r == "b"
                || r.eq_ignore_ascii_case("be") =>
        {
            v * si(p).unwrap_or(1.0)
        }
        (None, r) if r.eq_ignore_ascii_case("bit") || r.eq_ignore_ascii_case("bits") => v,
        // Bytes, with a capital B, per second.
        (Some(p), "B") if per_s => v * si(p).unwrap_or(1.0) * 8.0,
        (Some(p), "iB") if per_s => v * iec(p).unwrap_or(1.0) * 8.0,
        _ => {
            return Err(UnitError::Invalid(format!(
                "link rate {}: unknown or ambiguous unit {} ({hint})",
                quote(t),
                quote(unit)
            )))
        }
    };
    LINK.check(t, bits)
}

/// A memory size in bytes, from `128GiB`, `128g` (binary, as QEMU's `-m 128G`), `512MiB`,
/// `128GB` (SI), `16PiB`. Within [`MEM`].
pub fn parse_mem(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let hint = "examples: 128GiB, 128g, 512MiB, 64GB";
    let zero =
        || UnitError::NotPositive(format!("memory size {} must be more than zero", quote(t)));
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty memory size ({hint})")));
    }
    let (n, unit) = split_number(t)
        .map_err(|e| UnitError::Invalid(format!("bad memory size: {e} ({hint})")))?;
    let v = n.value;
    if v == 0.0 {
        // Zero bytes is no size in any unit; say so rather than suggest a unit.
        return Err(zero());
    }
    if unit.is_empty() {
        return Err(no_unit(
            format!("memory size {} has no unit", quote(t)),
            &[format!("{t}GiB"), format!("{t}MiB")],
            |c| parse_mem(c).is_ok(),
            &format!("{}; {hint}", MEM.words),
        ));
    }
    let (prefix, rest) = split_prefix(unit);
    let bytes = match (prefix, rest) {
        (Some(p), "") | (Some(p), "iB") | (Some(p), "ib") => v * iec(p).unwrap_or(1.0),
        (Some(p), "B") => v * si(p).unwrap_or(1.0),
        (None, "B") => v,
        (Some(p), "b") | (Some(p), "bit") => {
            let p = p.to_ascii_uppercase();
            let good: Vec<String> = [format!("{}{p}iB", n.text), format!("{}{p}B", n.text)]
                .into_iter()
                .filter(|c| c.len() <= HINT_MAX && parse_mem(c).is_ok())
                .collect();
            let fix = if good.is_empty() {
                MEM.words.to_string()
            } else {
                format!("write {}", good.join(" or "))
            };
            return Err(UnitError::Invalid(format!(
                "memory size {} is in bits (lowercase b): {fix} ({hint})",
                quote(t)
            )));
        }
        _ => {
            return Err(UnitError::Invalid(format!(
                "memory size {}: unknown unit {} ({hint})",
                quote(t),
                quote(unit)
            )))
        }
    };
    MEM.check(t, bytes)
}

/// A byte rate in bytes per second, from `1.5GB/s`, `800MiB/s`, `1.5GiBps`, `0B/s` or a
/// bare `0`. The unit must name bytes (capital `B`) and time. Within [`RATE`].
pub fn parse_byte_rate(s: &str) -> Result<f64, UnitError> {
    parse_byte_rate_in(s, &RATE)
}

/// A byte rate within `range` (a bare zero is zero, then judged by the range).
pub fn parse_byte_rate_in(s: &str, range: &Range) -> Result<f64, UnitError> {
    let t = s.trim();
    let hint = "examples: 1.5GB/s, 800MiB/s, 200MB/s";
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty {} ({hint})", range.what)));
    }
    if let Some(z) = bare_zero(t) {
        return range.check(t, z);
    }
    let (n, unit) = split_number(t)
        .map_err(|e| UnitError::Invalid(format!("bad {}: {e} ({hint})", range.what)))?;
    if n.value == 0.0 && unit.is_empty() {
        // A zero in any spelling (`0e0`) needs no unit.
        return range.check(t, 0.0);
    }
    let (body, per_s) = strip_per_second(unit);
    if !per_s {
        let head = format!("{} {} needs bytes per second", range.what, quote(t));
        let cands = [format!("{}GB/s", n.text), format!("{}MB/s", n.text)];
        let ok = |c: &str| parse_byte_rate_in(c, range).is_ok();
        return Err(
            match no_unit(head, &cands, ok, &format!("{}; {hint}", range.words)) {
                UnitError::NoUnit(m) if !unit.is_empty() => UnitError::Invalid(m),
                e => e,
            },
        );
    }
    let (prefix, rest) = split_prefix(body);
    let bytes = match (prefix, rest) {
        (Some(p), "B") => n.value * si(p).unwrap_or(1.0),
        (Some(p), "iB") => n.value * iec(p).unwrap_or(1.0),
        (None, "B") => n.value,
        _ => {
            return Err(UnitError::Invalid(format!(
                "{} {}: ambiguous or unknown unit {}, say bytes with a capital B ({hint})",
                range.what,
                quote(t),
                quote(body)
            )))
        }
    };
    range.check(t, bytes)
}

/// Splits a comma-separated list (`10g,25g,40g`) and parses each item.
pub fn parse_list<T>(
    s: &str,
    f: impl Fn(&str) -> Result<T, UnitError>,
) -> Result<Vec<T>, UnitError> {
    s.split(',').map(|x| f(x.trim())).collect()
}

/// Formats bytes with a binary prefix: `1.50 GiB`.
pub fn fmt_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

/// Formats a link rate in bits per second: `40 Gbit/s`.
pub fn fmt_link(bits: f64) -> String {
    for (m, u) in [
        (1e12, "Tbit/s"),
        (1e9, "Gbit/s"),
        (1e6, "Mbit/s"),
        (1e3, "kbit/s"),
    ] {
        if bits >= m {
            let v = bits / m;
            return if (v - v.round()).abs() < 1e-9 {
                format!("{v:.0} {u}")
            } else {
                format!("{v:.2} {u}")
            };
        }
    }
    format!("{bits:.0} bit/s")
}

/// Formats seconds: `350 ms`, `2.40 s`, `15m 3s`.
pub fn fmt_secs(s: f64) -> String {
    if !s.is_finite() {
        "∞".into()
    } else if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.2} s")
    } else if s < 7200.0 {
        format!("{}m {:02}s", (s / 60.0).floor(), (s % 60.0).round() as u64)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Text that a target or an input file controls (process and thread names, paths, caveats
/// read from a profile), made safe for a terminal: control characters (ESC, newline,
/// carriage return, DEL, C1 controls ...) are written as escapes (`\u{1b}`, `\n`), so they
/// can neither clear the screen nor forge output lines. JSON output needs no such care:
/// serde escapes them.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn link_rates_are_bits_decimal() {
        for s in [
            "10g", "10G", "10gbit", "10Gbit/s", "10GbE", "10Gb/s", "10gbps", "10 g",
        ] {
            assert_eq!(parse_link(s).unwrap(), 10e9, "{s}");
        }
        assert_eq!(parse_link("40gbit").unwrap(), 40e9);
        assert_eq!(parse_link("25GbE").unwrap(), 25e9);
        assert_eq!(parse_link("1000m").unwrap(), 1e9);
        assert_eq!(parse_link("1.25GB/s").unwrap(), 10e9);
        assert_eq!(parse_link("1GiB/s").unwrap(), 8.0 * GIB);
    }

    #[test]
    fn bad_link_rates_are_rejected() {
        for s in [
            "", "10", "g", "10x", "-10g", "10gg", "1.2.3g", "10 GiB", "nan", "0g", "10gB",
        ] {
            assert!(parse_link(s).is_err(), "{s:?} should be rejected");
        }
        assert!(parse_link("10")
            .unwrap_err()
            .to_string()
            .contains("no unit"));
    }

    #[test]
    fn memory_sizes_are_bytes_binary_by_default() {
        assert_eq!(parse_mem("128GiB").unwrap(), 128.0 * GIB);
        assert_eq!(parse_mem("128g").unwrap(), 128.0 * GIB);
        assert_eq!(parse_mem("128G").unwrap(), 128.0 * GIB);
        assert_eq!(parse_mem("512MiB").unwrap(), 512.0 * 1024.0 * 1024.0);
        assert_eq!(parse_mem("128GB").unwrap(), 128e9);
        assert_eq!(parse_mem("4096B").unwrap(), 4096.0);
    }

    #[test]
    fn bad_memory_sizes_are_rejected() {
        for s in [
            "128", "128Gb", "128gbit", "128x", "GiB", "0GiB", "1e", "128GiB/s",
        ] {
            assert!(parse_mem(s).is_err(), "{s:?} should be rejected");
        }
        assert!(parse_mem("128Gb").unwrap_err().to_string().contains("bits"));
    }

    #[test]
    fn byte_rates_need_bytes_and_time() {
        assert_eq!(parse_byte_rate("1.5GB/s").unwrap(), 1.5e9);
        assert_eq!(
            parse_byte_rate("800MiB/s").unwrap(),
            800.0 * 1024.0 * 1024.0
        );
        assert_eq!(parse_byte_rate("1GiBps").unwrap(), GIB);
        assert_eq!(parse_byte_rate("0B/s").unwrap(), 0.0);
        for s in ["1.5GB", "1.5g/s", "1.5Gb/s", "1.5", "fast", "1.5 GB/h"] {
            assert!(parse_byte_rate(s).is_err(), "{s:?} should be rejected");
        }
    }

    #[test]
    fn durations_still_parse() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert!(parse_duration("300").is_err());
        assert_eq!(
            parse_duration("3650d").unwrap(),
            Duration::from_secs(3650 * 86_400)
        );
        for s in ["18446744073709551615s", "3661d", "1000y"] {
            let e = parse_duration(s).unwrap_err().to_string();
            assert!(e.contains("longer than ten years"), "{s}: {e}");
        }
    }

    #[test]
    fn lists_parse_each_item() {
        let v = parse_list("10g, 25g,40g", parse_link).unwrap();
        assert_eq!(v, vec![10e9, 25e9, 40e9]);
        assert!(parse_list("10g,,40g", parse_link).is_err());
    }

    /// A bare zero is read as zero and judged like a zero with a unit; the "no unit" hint
    /// is kept for non-zero numbers, and what it suggests parses.
    #[test]
    fn a_bare_zero_is_zero_in_any_unit() {
        for z in ["0", "0.0", "00", " 0 "] {
            assert_eq!(parse_byte_rate(z), Ok(0.0), "{z:?}");
            assert_eq!(parse_duration(z), Ok(Duration::ZERO), "{z:?}");
            assert!(
                matches!(parse_mem(z), Err(UnitError::NotPositive(_))),
                "{z:?}: {:?}",
                parse_mem(z)
            );
            assert!(
                matches!(parse_link(z), Err(UnitError::NotPositive(_))),
                "{z:?}: {:?}",
                parse_link(z)
            );
        }
        // The same as with a unit.
        assert_eq!(parse_byte_rate("0B/s"), Ok(0.0));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(matches!(parse_mem("0GiB"), Err(UnitError::NotPositive(_))));
        assert!(matches!(parse_mem("0Gb"), Err(UnitError::NotPositive(_))));
        assert!(matches!(parse_link("0g"), Err(UnitError::NotPositive(_))));
        assert!(parse_mem("0")
            .unwrap_err()
            .to_string()
            .contains("more than zero"));
    }

    #[test]
    fn no_unit_hints_suggest_spellings_that_parse() {
        for n in ["10", "0.5", "128", "1.25"] {
            let e = parse_link(n).unwrap_err();
            assert!(matches!(e, UnitError::NoUnit(_)), "{e:?}");
            assert!(parse_link(&format!("{n}g")).is_ok());
            let e = parse_mem(n).unwrap_err();
            assert!(matches!(e, UnitError::NoUnit(_)), "{e:?}");
            assert!(parse_mem(&format!("{n}GiB")).is_ok() && parse_mem(&format!("{n}MiB")).is_ok());
            let e = parse_byte_rate(n).unwrap_err();
            assert!(matches!(e, UnitError::NoUnit(_)), "{e:?}");
            assert!(parse_byte_rate(&format!("{n}GB/s")).is_ok());
            let e = parse_duration(n).unwrap_err();
            assert!(matches!(e, UnitError::NoUnit(_)), "{e:?}");
            assert!(parse_duration(&format!("{n}s")).is_ok());
        }
        // Bits for a memory size: the suggested byte spellings parse.
        let e = parse_mem("2Gb").unwrap_err().to_string();
        assert!(e.contains("write 2GiB or 2GB"), "{e}");
    }

    #[test]
    fn unit_errors_are_usage_errors() {
        let e: crate::error::Error = parse_link("10").unwrap_err().into();
        assert!(matches!(e, crate::error::Error::Usage(ref m) if m.contains("no unit")));
    }

    /// Exponents are part of the number: `1e3GiB` is 1000 GiB, and `1e400g` is a number too
    /// large for any link, not an unknown unit "e400g".
    #[test]
    fn exponents_are_numbers_and_huge_ones_are_out_of_range() {
        assert_eq!(parse_mem("1e3GiB"), Ok(1000.0 * GIB));
        assert_eq!(parse_link("2.5E1g"), Ok(25e9));
        assert_eq!(parse_byte_rate("1e-3GB/s"), Ok(1e6));
        for s in [
            "1e400g",
            "1e27g",
            "1e-400g",
            "99999999999999999999999999999999g",
        ] {
            let e = parse_link(s).unwrap_err();
            assert!(matches!(e, UnitError::OutOfRange(_)), "{s}: {e:?}");
            assert!(e.to_string().contains("out of range"), "{e}");
            assert!(!e.to_string().contains("unknown"), "{e}");
        }
        assert!(matches!(
            parse_mem("1e400GiB"),
            Err(UnitError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_byte_rate("1e400GB/s"),
            Err(UnitError::OutOfRange(_))
        ));
    }

    /// Every quantity has a plausible range, stated in the message.
    #[test]
    fn values_are_bounded_to_a_plausible_range() {
        assert!(
            matches!(parse_link("1e27g"), Err(UnitError::OutOfRange(ref m)) if m.contains("10 Tbit/s"))
        );
        assert!(matches!(parse_link("1bit"), Err(UnitError::OutOfRange(_))));
        assert_eq!(parse_link("10000g"), Ok(1e13));
        assert!(
            matches!(parse_mem("0.1B"), Err(UnitError::OutOfRange(ref m)) if m.contains("one page"))
        );
        assert!(matches!(parse_mem("4095B"), Err(UnitError::OutOfRange(_))));
        assert_eq!(parse_mem("4KiB"), Ok(4096.0));
        // What the output prints (PiB) is accepted, up to 64 PiB.
        assert_eq!(parse_mem("16PiB"), Ok(16.0 * PIB));
        assert_eq!(parse_mem("16.00 PiB"), Ok(16.0 * PIB));
        assert!(matches!(parse_mem("65PiB"), Err(UnitError::OutOfRange(_))));
        assert!(matches!(
            parse_byte_rate("1e20B/s"),
            Err(UnitError::OutOfRange(_))
        ));
        assert!(matches!(
            parse_byte_rate_in("0.5MiB/s", &DIRTY_LIMIT),
            Err(UnitError::OutOfRange(_))
        ));
    }

    #[test]
    fn bounded_durations() {
        assert_eq!(parse_secs_in("300ms", &DOWNTIME), Ok(0.3));
        assert_eq!(parse_secs_in("1.5s", &DOWNTIME), Ok(1.5));
        assert_eq!(parse_secs_in("1m30s", &DEADLINE), Ok(90.0));
        assert_eq!(parse_secs_in("2e3ms", &DOWNTIME), Ok(2.0));
        assert_eq!(parse_secs_in("2000s", &DOWNTIME), Ok(2000.0));
        for bad in ["1ns", "999us", "2001s", "1e400s", "1h"] {
            assert!(
                matches!(parse_secs_in(bad, &DOWNTIME), Err(UnitError::OutOfRange(_))),
                "{bad}: {:?}",
                parse_secs_in(bad, &DOWNTIME)
            );
        }
        for zero in ["0", "0s", "0ms"] {
            assert!(matches!(
                parse_secs_in(zero, &DEADLINE),
                Err(UnitError::NotPositive(_))
            ));
        }
        assert!(matches!(
            parse_secs_in("0.5s", &DEADLINE),
            Err(UnitError::OutOfRange(_))
        ));
        // The hint offers only spellings in range: 3000 is neither 3000 s nor... 3000 ms is.
        let e = parse_secs_in("3000", &DOWNTIME).unwrap_err().to_string();
        assert!(e.contains("3000ms") && !e.contains("3000s "), "{e}");
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_bytes(1.5 * GIB), "1.50 GiB");
        assert_eq!(fmt_link(40e9), "40 Gbit/s");
        assert_eq!(fmt_secs(0.3), "300 ms");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("bash"), "bash");
        assert_eq!(
            clean("\x1b[2J\x1b[31mX\nsumm"),
            "\\u{1b}[2J\\u{1b}[31mX\\nsumm"
        );
        assert_eq!(clean("a\rb\u{7f}c\u{9b}d"), "a\\rb\\u{7f}c\\u{9b}d");
        assert_eq!(clean("pâté 名前"), "pâté 名前");
    }
}
