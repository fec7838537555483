//! A small async QMP client over a unix socket (tokio + serde).
//!
//! QMP is JSON lines: QEMU greets (`{"QMP": {...}}`), the client sends
//! `qmp_capabilities`, then each command (`{"execute": ..., "arguments": ..., "id": N}`) gets
//! one reply (`{"return": ...}` or `{"error": {"class", "desc"}}`) carrying the same id.
//! Asynchronous events (`{"event": ..., "data": ..., "timestamp": ...}`) may arrive at any
//! time, also between a command and its reply: they are kept in a queue
//! ([`Qmp::take_events`], [`Qmp::wait_event`]). Every wait has a timeout, and a QEMU that
//! exits mid-call closes the socket: both give an error, never a hang. A late reply to a
//! call that timed out is recognised by its id and dropped; a timeout in the middle of a
//! line loses that line, so after a timeout error reconnect rather than go on.
//!
//! A peer is not trusted to be QEMU (issue 17: a socket anyone can bind, a QEMU that is
//! broken): a call's timeout is one deadline for its reply, however many events arrive
//! meanwhile (a peer that sent one event a second and never answered kept `passes` alive
//! past its `--timeout`); a line is read up to [`MAX_LINE`] bytes, and a longer one ends the
//! connection (a peer that streamed bytes without a newline took `passes` to 2 GB); what a
//! peer sent is echoed in errors cut to [`ECHO`] characters.
//!
//! No crate was used: `qapi` (the one maintained QMP crate) generates the whole QAPI schema
//! of one QEMU version, far more than the dozen commands migtrace needs.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// The longest QMP line read: 1 MiB. The longest replies migtrace asks for
/// (`query-migrate`, `query-memdev`, `query-cpus-fast` of a large guest) are a few KiB;
/// QEMU's largest, `query-qmp-schema`, is about 200 KiB and is not asked for.
pub const MAX_LINE: u64 = 1 << 20;

/// Events kept until taken; older ones are dropped beyond it and counted
/// ([`Qmp::events_dropped`]). With [`MAX_EVENT_LINE`] that bounds the queue to 16 MiB of
/// lines (a count alone let 1,024 lines of 1 MiB, about ten times that once parsed, wait in
/// a `watch --qmp`, which never takes its events).
pub const MAX_EVENTS: usize = 256;

/// The longest event line kept: 64 KiB (QEMU's events are under 1 KiB); a longer one is
/// dropped and counted.
pub const MAX_EVENT_LINE: usize = 64 << 10;

/// Characters of a peer's line echoed in an error message.
pub const ECHO: usize = 200;

/// `s` cut to [`ECHO`] characters for an error message.
fn echo(s: &str) -> String {
    crate::units::cut(s, ECHO)
}

/// An error reply from QEMU: `{"error": {"class": ..., "desc": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("QEMU refused {command}: {desc} ({class})")]
pub struct QmpError {
    pub command: String,
    pub class: String,
    pub desc: String,
}

/// An asynchronous event.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QmpEvent {
    pub event: String,
    #[serde(default)]
    pub data: Value,
    /// `{"seconds", "microseconds"}` as QEMU sent it.
    #[serde(default)]
    pub timestamp: Value,
}

/// The greeting's version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

/// A QMP connection.
pub struct Qmp {
    path: PathBuf,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    events: VecDeque<QmpEvent>,
    events_dropped: u64,
    timeout: Duration,
    next_id: u64,
    version: QemuVersion,
    package: String,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities. `timeout` bounds every
    /// later call too ([`Qmp::set_timeout`]).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| anyhow!("connecting to QMP socket {} timed out", path.display()))?
            .with_context(|| format!("connecting to QMP socket {}", path.display()))?;
        let (r, w) = stream.into_split();
        let mut q = Qmp {
            path: path.to_path_buf(),
            reader: BufReader::new(r),
            writer: w,
            events: VecDeque::new(),
            events_dropped: 0,
            timeout,
            next_id: 1,
            version: QemuVersion {
                major: 0,
                minor: 0,
                micro: 0,
            },
            package: String::new(),
        };
        let greeting = q.read_message("the QMP greeting").await?;
        let v = greeting.get("QMP").with_context(|| {
            format!(
                "{} is not a QMP socket: it said {}",
                path.display(),
                echo(&greeting.to_string())
            )
        })?;
        q.version = serde_json::from_value(v["version"]["qemu"].clone())
            .context("QMP greeting without a QEMU version")?;
        q.package = v["version"]["package"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        q.execute_raw("qmp_capabilities", None).await?;
        Ok(q)
    }

    pub fn version(&self) -> &QemuVersion {
        &self.version
    }

    /// The distribution's package string, e.g. `Debian 1:7.2+dfsg-7+deb12u18+b3`.
    pub fn package(&self) -> &str {
        &self.package
    }

    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs a command and deserializes its `return` value into `R`.
    pub async fn execute<R: DeserializeOwned>(
        &mut self,
        command: &str,
        args: Option<Value>,
    ) -> Result<R> {
        let v = self.execute_raw(command, args).await?;
        serde_json::from_value(v.clone())
            .with_context(|| format!("unexpected reply to {command}: {v}"))
    }

    /// Runs a command and returns its raw `return` value. Events that arrive before the
    /// reply are queued.
    pub async fn execute_raw(&mut self, command: &str, args: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = serde_json::to_vec(&msg)?;
        line.push(b'\n');
        tokio::time::timeout(self.timeout, self.writer.write_all(&line))
            .await
            .map_err(|_| anyhow!("sending {command} to QEMU timed out"))?
            .with_context(|| {
                format!(
                    "sending {command} to QEMU ({}): did it exit?",
                    self.path.display()
                )
            })?;
        // One deadline for the reply, whatever arrives before it.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (reply, len) = self
                .read_message_within(command, left, self.timeout)
                .await?;
            if reply.get("event").is_some() {
                self.queue(serde_json::from_value(reply)?, len);
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                continue; // a reply to an earlier call that timed out
            }
            if let Some(e) = reply.get("error") {
                return Err(QmpError {
                    command: command.to_string(),
                    class: echo(e["class"].as_str().unwrap_or("?")),
                    desc: echo(e["desc"].as_str().unwrap_or("?")),
                }
                .into());
            }
            return reply.get("return").cloned().with_context(|| {
                format!(
                    "reply to {command} has neither return nor error: {}",
                    echo(&reply.to_string())
                )
            });
        }
    }

    /// Reads one JSON message, within the timeout.
    async fn read_message(&mut self, waiting_for: &str) -> Result<Value> {
        let (msg, _) = self
            .read_message_within(waiting_for, self.timeout, self.timeout)
            .await?;
        Ok(msg)
    }

    /// Reads one JSON message within `left`, the rest of a wait of `total` (named in the
    /// error), and the length of its line. With nothing left it fails at once, even if a
    /// line is ready (a flooding peer must not outlast the deadline).
    async fn read_message_within(
        &mut self,
        waiting_for: &str,
        left: Duration,
        total: Duration,
    ) -> Result<(Value, usize)> {
        use tokio::io::AsyncReadExt;
        let late = || {
            anyhow!(
                "QEMU did not answer {waiting_for} within {:.1} s (QMP socket {}): is it stopped or hung?",
                total.as_secs_f64(),
                self.path.display()
            )
        };
        if left.is_zero() {
            return Err(late());
        }
        let mut line = String::new();
        let mut limited = (&mut self.reader).take(MAX_LINE);
        let n = tokio::time::timeout(left, limited.read_line(&mut line))
            .await
            .map_err(|_| late())?
            .or_else(|e| match e.kind() {
                // A QEMU killed with unread input resets the connection instead of closing it.
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Ok(0),
                _ => Err(e),
            })
            .with_context(|| format!("reading QMP ({waiting_for})"))?;
        if n == 0 {
            bail!(
                "QEMU closed the QMP connection while waiting for {waiting_for} (socket {}): did it exit?",
                self.path.display()
            );
        }
        if !line.ends_with('\n') && n as u64 >= MAX_LINE {
            bail!(
                "QEMU sent a line longer than {} MiB while we waited for {waiting_for} (socket {}): not read further",
                MAX_LINE >> 20,
                self.path.display()
            );
        }
        let msg = serde_json::from_str(&line)
            .with_context(|| format!("QEMU sent a line that is not JSON: {:?}", echo(&line)))?;
        Ok((msg, n))
    }

    /// Queues an event that came as a line of `len` bytes, dropping it beyond
    /// [`MAX_EVENT_LINE`] and the oldest beyond [`MAX_EVENTS`].
    fn queue(&mut self, e: QmpEvent, len: usize) {
        if len > MAX_EVENT_LINE {
            self.events_dropped += 1;
            return;
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    /// Events dropped: longer than [`MAX_EVENT_LINE`], or more than [`MAX_EVENTS`] waiting.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Events received so far, oldest first; the queue is emptied.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        self.events.drain(..).collect()
    }

    /// Waits (up to `timeout`) for an event named `name`, queued or new. Other events stay
    /// queued.
    pub async fn wait_event(&mut self, name: &str, timeout: Duration) -> Result<QmpEvent> {
        if let Some(i) = self.events.iter().position(|e| e.event == name) {
            return Ok(self.events.remove(i).expect("index exists"));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("no {name} event within {:.1} s", timeout.as_secs_f64());
            }
            let (msg, len) = self.read_message_within(name, left, timeout).await?;
            if msg.get("event").is_some() {
                let e: QmpEvent = serde_json::from_value(msg)?;
                if e.event == name {
                    return Ok(e);
                }
                self.queue(e, len);
            }
        }
    }
}

#[cfg(test)]
mod tests;

mod commands;
mod params;
pub use commands::*;
pub use params::*;
