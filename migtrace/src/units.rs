//! Parsing of the units people type: durations (`1s`, `300ms`, `15m`), sizes and rates.
//! Parsing is strict: anything ambiguous is an error naming what was expected.
use std::time::Duration;

/// Parses a duration such as `1s`, `250ms`, `1m30s`. A bare number is rejected because it
/// is ambiguous (seconds? milliseconds?).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "duration {t:?} has no unit: write e.g. {t}s or {t}ms"
        ));
    }
    humantime::parse_duration(t)
        .map_err(|e| format!("bad duration {t:?}: {e} (examples: 1s, 250ms, 1m30s)"))
}
