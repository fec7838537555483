//! Sinks: where `watch` results go. The records ([`crate::record`]) are what every sink renders; the
//! terminal sink ([`terminal`]) writes lines for people, the JSON sink ([`json`]) one JSON
//! object per line for programs.
pub mod demo_out;
pub mod hdrlog;
pub mod json;
pub mod passes_out;
pub mod plot;
pub mod predict_out;
pub mod prometheus;
pub mod terminal;

use crate::record::{Interval, LinkInterval, QemuRate, Start, Summary};

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

/// A destination for watch results.
pub trait Sink {
    fn start(&mut self, s: &Start);
    fn interval(&mut self, i: &Interval);
    fn summary(&mut self, s: &Summary);
    /// QEMU's own `calc-dirty-rate` measurement, beside ours (`--qmp`).
    fn qemu(&mut self, _r: &QemuRate) {}
    /// The link side of the interval just shown (`--iface`).
    fn link(&mut self, _l: &LinkInterval) {}
}

/// Hands every record to several sinks in turn (`watch --listen`, `--hdr-log`).
pub struct FanOut<'a>(pub Vec<&'a mut dyn Sink>);

impl Sink for FanOut<'_> {
    fn start(&mut self, s: &Start) {
        self.0.iter_mut().for_each(|k| k.start(s))
    }
    fn interval(&mut self, i: &Interval) {
        self.0.iter_mut().for_each(|k| k.interval(i))
    }
    fn summary(&mut self, s: &Summary) {
        self.0.iter_mut().for_each(|k| k.summary(s))
    }
    fn qemu(&mut self, r: &QemuRate) {
        self.0.iter_mut().for_each(|k| k.qemu(r))
    }
    fn link(&mut self, l: &LinkInterval) {
        self.0.iter_mut().for_each(|k| k.link(l))
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

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
