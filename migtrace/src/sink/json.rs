//! JSON lines on stdout: `{"type":"start",...}`, one `{"type":"interval",...}` per interval,
//! and a final `{"type":"summary",...}`. Field names are stable; new fields may be added.
use std::io::Write;

use serde::Serialize;

use super::Sink;
use crate::record::{Interval, LinkInterval, QemuRate, Start, Summary};

pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink { out }
    }

    fn emit<T: Serialize>(&mut self, kind: &str, v: &T) {
        #[derive(Serialize)]
        struct Tagged<'a, T> {
            r#type: &'a str,
            #[serde(flatten)]
            v: &'a T,
        }
        // A closed stdout (e.g. `| head`) must not kill the watch before its summary.
        let _ = serde_json::to_writer(&mut self.out, &Tagged { r#type: kind, v });
        let _ = self.out.write_all(b"\n");
        let _ = self.out.flush();
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn start(&mut self, s: &Start) {
        self.emit("start", s)
    }
    fn interval(&mut self, i: &Interval) {
        self.emit("interval", i)
    }
    fn summary(&mut self, s: &Summary) {
        self.emit("summary", s)
    }
    fn qemu(&mut self, r: &QemuRate) {
        self.emit("qemu_dirty_rate", r)
    }
    fn link(&mut self, l: &LinkInterval) {
        self.emit("link", l)
    }
}
