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
//! Anything else, including a bare number, is an error naming what was expected. Values
//! must be finite and positive (zero is allowed only for the dirty rate and durations).
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
    /// Anything else: empty, not a number, an unknown, ambiguous or misspelled unit.
    #[error("{0}")]
    Invalid(String),
}

impl From<UnitError> for crate::error::Error {
    fn from(e: UnitError) -> Self {
        crate::error::Error::Usage(e.to_string())
    }
}

/// The value of a bare zero (`0`, `0.0`), which needs no unit.
fn bare_zero(t: &str) -> Option<f64> {
    let v: f64 = t.parse().ok()?;
    (v == 0.0 && t.chars().all(|c| c.is_ascii_digit() || c == '.')).then_some(0.0)
}

/// Parses a duration such as `1s`, `250ms`, `1m30s`. A bare number is rejected because it
/// is ambiguous (seconds? milliseconds?).
/// A bare zero is zero seconds.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(UnitError::Invalid("empty duration".into()));
    }
    if bare_zero(t).is_some() {
        return Ok(Duration::ZERO);
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(UnitError::NoUnit(format!(
            "duration {t:?} has no unit: write e.g. {t}s or {t}ms"
        )));
    }
    humantime::parse_duration(t).map_err(|e| {
        UnitError::Invalid(format!(
            "bad duration {t:?}: {e} (examples: 1s, 250ms, 1m30s)"
        ))
    })
}

/// Splits `"1.5GB/s"` into `(1.5, "GB/s")`. The number is plain decimal (no sign, no
/// exponent), so `-1g`, `1e3g` and `nan` are rejected here.
fn split_number(t: &str) -> Result<(f64, &str), UnitError> {
    let end = t
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_digit() || c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(t.len());
    let (num, rest) = t.split_at(end);
    let not_a_number = || UnitError::Invalid(format!("{t:?} does not start with a number"));
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return Err(not_a_number());
    }
    let v: f64 = num.parse().map_err(|_| not_a_number())?;
    if !v.is_finite() {
        return Err(UnitError::Invalid(format!("{t:?} is not a finite number")));
    }
    Ok((v, rest.trim_start()))
}

/// Decimal (SI) multiplier for a prefix letter, case-insensitive.
fn si(prefix: char) -> Option<f64> {
    match prefix.to_ascii_lowercase() {
        'k' => Some(1e3),
        'm' => Some(1e6),
        'g' => Some(1e9),
        't' => Some(1e12),
        _ => None,
    }
}

/// Binary (IEC) multiplier for a prefix letter, case-insensitive.
fn iec(prefix: char) -> Option<f64> {
    match prefix.to_ascii_lowercase() {
        'k' => Some(1024.0),
        'm' => Some(1024.0 * 1024.0),
        'g' => Some(1024.0 * 1024.0 * 1024.0),
        't' => Some(1024.0 * 1024.0 * 1024.0 * 1024.0),
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
        if unit.len() > suffix.len() && unit.to_ascii_lowercase().ends_with(suffix) {
            return (&unit[..unit.len() - suffix.len()], true);
        }
    }
    (unit, false)
}

/// A link rate in bits per second, from `10g`, `40gbit`, `25GbE`, `100Gb/s`, `400Gbps`,
/// `1000m`, or in bytes with a capital B: `1.25GB/s`, `1GiB/s`.
pub fn parse_link(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let hint = "examples: 10g, 40gbit, 25GbE, 100Gb/s, 1.25GB/s";
    let zero = || UnitError::NotPositive(format!("link rate {t:?} must be more than zero"));
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty link rate ({hint})")));
    }
    let (v, unit) =
        split_number(t).map_err(|e| UnitError::Invalid(format!("bad link rate: {e} ({hint})")))?;
    if v == 0.0 {
        // Zero bits is no link in any unit; say so rather than suggest a unit.
        return Err(zero());
    }
    if unit.is_empty() {
        return Err(UnitError::NoUnit(format!(
            "link rate {t:?} has no unit: write e.g. {t}g for {t} Gbit/s ({hint})"
        )));
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
                "link rate {t:?}: unknown or ambiguous unit {unit:?} ({hint})"
            )))
        }
    };
    if bits <= 0.0 {
        return Err(zero());
    }
    Ok(bits)
}

/// A memory size in bytes, from `128GiB`, `128g` (binary, as QEMU's `-m 128G`), `512MiB`,
/// `128GB` (SI).
pub fn parse_mem(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let hint = "examples: 128GiB, 128g, 512MiB, 64GB";
    let zero = || UnitError::NotPositive(format!("memory size {t:?} must be more than zero"));
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty memory size ({hint})")));
    }
    let (v, unit) = split_number(t)
        .map_err(|e| UnitError::Invalid(format!("bad memory size: {e} ({hint})")))?;
    if v == 0.0 {
        // Zero bytes is no size in any unit; say so rather than suggest a unit.
        return Err(zero());
    }
    if unit.is_empty() {
        return Err(UnitError::NoUnit(format!(
            "memory size {t:?} has no unit: write e.g. {t}GiB or {t}MiB ({hint})"
        )));
    }
    let (prefix, rest) = split_prefix(unit);
    let bytes = match (prefix, rest) {
        (Some(p), "") | (Some(p), "iB") | (Some(p), "ib") => v * iec(p).unwrap_or(1.0),
        (Some(p), "B") => v * si(p).unwrap_or(1.0),
        (None, "B") => v,
        (Some(_), "b") | (Some(_), "bit") => {
            return Err(UnitError::Invalid(format!(
                "memory size {t:?} is in bits (lowercase b): write {v}GiB or {v}GB ({hint})"
            )))
        }
        _ => {
            return Err(UnitError::Invalid(format!(
                "memory size {t:?}: unknown unit {unit:?} ({hint})"
            )))
        }
    };
    if bytes <= 0.0 {
        return Err(zero());
    }
    Ok(bytes)
}

/// A byte rate in bytes per second, from `1.5GB/s`, `800MiB/s`, `1.5GiBps`, `0B/s` or a
/// bare `0`. The unit must name bytes (capital `B`) and time.
pub fn parse_byte_rate(s: &str) -> Result<f64, UnitError> {
    let t = s.trim();
    let hint = "examples: 1.5GB/s, 800MiB/s, 200MB/s";
    if t.is_empty() {
        return Err(UnitError::Invalid(format!("empty rate ({hint})")));
    }
    if let Some(z) = bare_zero(t) {
        return Ok(z);
    }
    let (v, unit) =
        split_number(t).map_err(|e| UnitError::Invalid(format!("bad rate: {e} ({hint})")))?;
    let (body, per_s) = strip_per_second(unit);
    if !per_s {
        let e = format!("rate {t:?} needs bytes per second: write e.g. {v}GB/s ({hint})");
        return Err(if unit.is_empty() {
            UnitError::NoUnit(e)
        } else {
            UnitError::Invalid(e)
        });
    }
    let (prefix, rest) = split_prefix(body);
    let bytes = match (prefix, rest) {
        (Some(p), "B") => v * si(p).unwrap_or(1.0),
        (Some(p), "iB") => v * iec(p).unwrap_or(1.0),
        (None, "B") => v,
        _ => {
            return Err(UnitError::Invalid(format!(
            "rate {t:?}: ambiguous or unknown unit {body:?}, say bytes with a capital B ({hint})"
        )))
        }
    };
    Ok(bytes)
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
            "128", "128Gb", "128gbit", "128x", "GiB", "0GiB", "1e3GiB", "128GiB/s",
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

    #[test]
    fn formatting() {
        assert_eq!(fmt_bytes(1.5 * GIB), "1.50 GiB");
        assert_eq!(fmt_link(40e9), "40 Gbit/s");
        assert_eq!(fmt_secs(0.3), "300 ms");
    }
}
