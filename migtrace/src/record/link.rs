//! The link side of a watch (`--iface`): the interface's traffic, the headroom a migration
//! would get, the dirty rate against it, and the target's sends per thread.
use serde::{Deserialize, Serialize};

/// The link side of one interval (`watch --iface`): the interface's traffic, the headroom a
/// migration would get, and the dirty rate against it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkInterval {
    /// Seconds since the start, at the end of this interval.
    pub t_s: f64,
    pub iface: Option<String>,
    /// Interface tx, bytes per second (skb lengths: headers included), all processes.
    pub tx_bytes_per_sec: Option<f64>,
    pub tx_packets_per_sec: Option<f64>,
    /// The nominal link, bits per second (`--link`, else the interface's speed).
    pub link_bits: Option<f64>,
    /// link x efficiency - tx, bytes per second (never below 0).
    pub headroom_bytes_per_sec: Option<f64>,
    /// The interval's dirty rate divided by the headroom: above 1 a pre-copy cannot
    /// converge without throttling.
    pub dirty_to_headroom: Option<f64>,
    /// The target's socket sends, bytes per second (payload).
    pub send_bytes_per_sec: Option<f64>,
    /// Bytes the target's QEMU migration threads sent in this interval.
    pub migration_bytes: u64,
    /// Sends not attributed to a thread (thread map full).
    pub thread_map_full: u64,
}

/// The link side over the whole watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkSummary {
    pub iface: Option<String>,
    pub link_bits: Option<f64>,
    /// Where `link_bits` came from: `--link` or `/sys/class/net/IF/speed`.
    pub link_from: Option<String>,
    pub efficiency: f64,
    /// Mean and peak interface tx over the intervals, bytes per second.
    pub tx_bytes_per_sec: Option<f64>,
    pub tx_peak_bytes_per_sec: Option<f64>,
    /// link x efficiency - mean tx, bytes per second (the headroom `predict` uses).
    pub headroom_bytes_per_sec: Option<f64>,
    /// The smallest interval headroom.
    pub headroom_min_bytes_per_sec: Option<f64>,
    /// The summary's dirty rate divided by the mean headroom.
    pub dirty_to_headroom: Option<f64>,
    /// Total bytes the target's socket sends returned, and how many sends.
    pub send_bytes: u64,
    pub send_calls: u64,
    pub send_errors: u64,
    /// Total bytes of the target's QEMU migration threads.
    pub migration_bytes: u64,
    /// Total bytes the interface transmitted.
    pub tx_bytes: u64,
    /// Sends not attributed to a thread (thread map full).
    pub thread_map_full: u64,
    /// Per thread of the target: bytes sent, largest first.
    pub threads: Vec<SendThread>,
    /// What could not be measured, in words.
    pub notes: Vec<String>,
}

/// One thread's sends over the watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendThread {
    pub tid: u32,
    pub comm: String,
    pub bytes: u64,
    pub calls: u64,
    pub migration: bool,
}
