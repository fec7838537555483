//! The send path, the link side of the pre-copy race: loads the send-path kernel programs
//! (`net_dev_xmit`, `sock_send_length` in `migtrace-ebpf`) and reads their counters.
//!
//! - Interface: bytes and packets the interface handed to its driver (`net/net_dev_xmit`,
//!   filtered by device name in the kernel: the event carries the name, not the ifindex),
//!   for every process on the machine: the traffic a migration would compete with.
//! - Process: bytes its socket sends returned (`sock_send_length`), per CPU and per thread.
//!   QEMU's migration threads (`live_migration`, `multifdsend_N` on QEMU 7.2; `mig/src/*`
//!   on newer QEMU) are recognised by name, so their bytes are the migration stream's.
//!
//! API for other commands (e.g. a pass timer driven by QMP):
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use migtrace::probe::send::{SendOptions, SendProbe};
//! let mut p = SendProbe::attach(Some(1234), &SendOptions::default())?;
//! // ... later, once per pass or interval:
//! for t in p.take_thread_bytes()? {
//!     println!("{} {} sent {} bytes (migration: {})", t.tid, t.comm, t.bytes, t.migration);
//! }
//! # Ok(()) }
//! ```
//! Each hook fails soft: one that cannot attach is left out and [`SendProbe::notes`] says so.
use std::{collections::HashMap as StdMap, path::Path};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray},
    Ebpf,
};
use migtrace_common::{
    send_counter, SendConfig, SendState, ThreadSend, SEND_FLAG_IFACE, SEND_FLAG_PROCESS,
};

use super::{
    attach_raw, attach_tracepoint, ensure_tracefs, map, parse_format, take, MapSizes, TRACEFS,
};

/// Options for [`SendProbe::attach`].
#[derive(Clone, Debug)]
pub struct SendOptions {
    /// Count this interface's transmitted bytes (`net_dev_xmit`).
    pub iface: Option<String>,
    /// Size of the per-thread map (threads of the target that ever sent).
    pub max_threads: u32,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            iface: None,
            max_threads: 4096,
        }
    }
}

/// Counters over one interval (deltas).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendDeltas {
    /// Bytes the interface transmitted (skb lengths: L2 headers included).
    pub if_bytes: u64,
    /// Packets (skbs) it transmitted; a GSO/TSO skb counts once.
    pub if_packets: u64,
    /// Bytes the target's socket sends returned (payload).
    pub send_bytes: u64,
    pub send_calls: u64,
    pub send_errors: u64,
    /// Of `send_bytes`, those sent by QEMU migration threads.
    pub migration_bytes: u64,
    /// Sends not attributed to a thread because the thread map was full.
    pub thread_map_full: u64,
}

/// One thread's sends since the previous [`SendProbe::take_thread_bytes`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadBytes {
    pub tid: u32,
    pub comm: String,
    pub bytes: u64,
    pub calls: u64,
    /// The thread is one of QEMU's migration threads (by name).
    pub migration: bool,
}

/// True for the names QEMU gives its migration sender threads: `live_migration` and
/// `multifdsend_N` (QEMU 7.2 to 9.x), `mig/src/main` and `mig/src/send_N` (QEMU 10+).
pub fn is_migration_thread(comm: &str) -> bool {
    comm == "live_migration" || comm.starts_with("multifdsend_") || comm.starts_with("mig/src/")
}

/// The kernel config for `net_dev_xmit` on `iface`: offsets from the event's format file,
/// the name and the mask of its bytes.
fn iface_config(cfg: &mut SendConfig, iface: &str) -> Result<()> {
    if iface.is_empty() || iface.len() > 15 {
        return Err(anyhow!("interface name {iface:?} is not 1 to 15 bytes"));
    }
    let path = Path::new(TRACEFS).join("events/net/net_dev_xmit/format");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let f = parse_format(&text);
    let get = |k: &str, size: u32| match f.get(k) {
        Some(&(off, s)) if s == size => Ok(off),
        _ => Err(anyhow!("{}: no {size}-byte field {k}", path.display())),
    };
    cfg.len_off = get("len", 4)?;
    cfg.rc_off = get("rc", 4)?;
    cfg.name_off = get("name", 4)?;
    let mut name = [0u8; 16];
    let mut mask = [0u8; 16];
    name[..iface.len()].copy_from_slice(iface.as_bytes());
    mask[..=iface.len()].fill(0xff);
    let word = |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap());
    cfg.name = [word(&name, 0), word(&name, 1)];
    cfg.name_mask = [word(&mask, 0), word(&mask, 1)];
    cfg.name_len = iface.len() as u32 + 1;
    cfg.flags |= SEND_FLAG_IFACE;
    Ok(())
}

/// The loaded send-path programs and their maps. Dropping it detaches them.
pub struct SendProbe {
    _bpf: Ebpf,
    pid: Option<u32>,
    state: PerCpuArray<MapData, SendState>,
    threads: HashMap<MapData, u32, ThreadSend>,
    /// Counters at the last [`SendProbe::take_deltas`].
    last: [u64; send_counter::SLOTS as usize],
    /// Per-thread totals at the last `take_deltas` (for the migration bytes) and at the last
    /// `take_thread_bytes`.
    last_mig: StdMap<u32, ThreadSend>,
    last_threads: StdMap<u32, ThreadSend>,
    /// Thread names, read once when a thread is first seen (it may exit later).
    comms: StdMap<u32, String>,
    iface_on: bool,
    process_on: bool,
    notes: Vec<String>,
}

impl SendProbe {
    /// Loads the send-path programs: `net_dev_xmit` when `opts.iface` is set, and
    /// `sock_send_length` for the sends of `pid`. A hook that cannot attach is left out and
    /// noted (see [`SendProbe::notes`]); an error only when neither works.
    pub fn attach(pid: Option<u32>, opts: &SendOptions) -> Result<SendProbe> {
        let mut bpf = super::load(MapSizes {
            send_threads: Some(opts.max_threads),
            ..MapSizes::default()
        })?;
        let mut cfg = SendConfig {
            tgid: pid.unwrap_or(0),
            ..Default::default()
        };
        let mut notes = Vec::new();
        let iface_on = match &opts.iface {
            Some(i) => match attach_xmit(&mut bpf, &mut cfg, i) {
                Ok(()) => true,
                Err(e) => {
                    notes.push(format!("interface {i}: tracepoint net/net_dev_xmit unavailable ({e:#}): no interface tx"));
                    false
                }
            },
            None => false,
        };
        let process_on = pid.is_some() && attach_send(&mut bpf, &mut notes);
        if process_on {
            cfg.flags |= SEND_FLAG_PROCESS;
        }
        if !iface_on && !process_on {
            return Err(anyhow!(
                "no send-path tracepoint could be attached: {}",
                notes.join("; ")
            ));
        }
        let mut config: Array<MapData, SendConfig> =
            Array::try_from(take(&mut bpf, map::SEND_CONFIG)?)?;
        config
            .set(0, cfg, 0)
            .context("writing the send-path config")?;
        let state = PerCpuArray::try_from(take(&mut bpf, map::SEND_STATE)?)?;
        let threads = HashMap::try_from(take(&mut bpf, map::SEND_THREADS)?)?;
        let mut p = SendProbe {
            _bpf: bpf,
            pid,
            state,
            threads,
            last: [0; send_counter::SLOTS as usize],
            last_mig: StdMap::new(),
            last_threads: StdMap::new(),
            comms: StdMap::new(),
            iface_on,
            process_on,
            notes,
        };
        p.last = p.counters()?;
        Ok(p)
    }

    /// What could not be attached, in words (empty when everything works).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Whether the interface counters and the process counters are live.
    pub fn coverage(&self) -> (bool, bool) {
        (self.iface_on, self.process_on)
    }

    /// Counter deltas since the last call (or since attaching), with the migration threads'
    /// share of the process's sends.
    pub fn take_deltas(&mut self) -> Result<SendDeltas> {
        let now = self.counters()?;
        let d = |s: u32| now[s as usize].saturating_sub(self.last[s as usize]);
        let mut out = SendDeltas {
            if_bytes: d(send_counter::IF_BYTES),
            if_packets: d(send_counter::IF_PACKETS),
            send_bytes: d(send_counter::SEND_BYTES),
            send_calls: d(send_counter::SEND_CALLS),
            send_errors: d(send_counter::SEND_ERRORS),
            thread_map_full: d(send_counter::THREAD_MAP_FULL),
            migration_bytes: 0,
        };
        self.last = now;
        let totals = self.thread_totals()?;
        let mut last = std::mem::take(&mut self.last_mig);
        for t in self.diff(&totals, &mut last) {
            if t.migration {
                out.migration_bytes += t.bytes;
            }
        }
        self.last_mig = last;
        Ok(out)
    }

    /// Bytes each thread sent since the previous call (or since attaching), largest first;
    /// threads that sent nothing meanwhile are left out. Independent of `take_deltas`.
    pub fn take_thread_bytes(&mut self) -> Result<Vec<ThreadBytes>> {
        let totals = self.thread_totals()?;
        let mut last = std::mem::take(&mut self.last_threads);
        let v = self.diff(&totals, &mut last);
        self.last_threads = last;
        Ok(v)
    }

    /// Per-thread totals since attaching, as the kernel has them.
    pub fn thread_totals(&self) -> Result<StdMap<u32, ThreadSend>> {
        let mut m = StdMap::new();
        for kv in self.threads.iter() {
            let (tid, v) = kv?;
            m.insert(tid, v);
        }
        Ok(m)
    }

    /// Differences between `totals` and `last` (then updated), named.
    fn diff(
        &mut self,
        totals: &StdMap<u32, ThreadSend>,
        last: &mut StdMap<u32, ThreadSend>,
    ) -> Vec<ThreadBytes> {
        let mut v = Vec::new();
        for (&tid, t) in totals {
            let before = last.insert(tid, *t).unwrap_or_default();
            let bytes = t.bytes.saturating_sub(before.bytes);
            if bytes == 0 {
                continue;
            }
            let comm = self.comm(tid, &t.comm);
            v.push(ThreadBytes {
                tid,
                migration: is_migration_thread(&comm),
                comm,
                bytes,
                calls: t.calls.saturating_sub(before.calls),
            });
        }
        v.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.tid.cmp(&b.tid)));
        v
    }

    /// The thread's name: as the kernel saw it at its first send, else from /proc; cached.
    fn comm(&mut self, tid: u32, kernel: &[u8; 16]) -> String {
        let pid = self.pid.unwrap_or(0);
        self.comms
            .entry(tid)
            .or_insert_with(|| {
                let n = kernel.iter().position(|&b| b == 0).unwrap_or(16);
                if n > 0 {
                    return String::from_utf8_lossy(&kernel[..n]).into_owned();
                }
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                    .map(|s| s.trim_end().to_string())
                    .unwrap_or_else(|_| "?".into())
            })
            .clone()
    }

    /// The counters, summed over CPUs.
    fn counters(&self) -> Result<[u64; send_counter::SLOTS as usize]> {
        Ok(super::sum_counters(
            self.state.get(&0, 0)?.iter().map(|c| c.counters),
        ))
    }
}

/// Loads and attaches `net_dev_xmit` for `iface`.
fn attach_xmit(bpf: &mut Ebpf, cfg: &mut SendConfig, iface: &str) -> Result<()> {
    ensure_tracefs()?;
    iface_config(cfg, iface)?;
    attach_tracepoint(bpf, "net", "net_dev_xmit")
}

/// Loads and attaches `sock_send_length`; false (with a note) when it cannot.
fn attach_send(bpf: &mut Ebpf, notes: &mut Vec<String>) -> bool {
    let r = attach_raw(bpf, "sock_send_length");
    if let Err(e) = &r {
        notes.push(format!(
            "raw tracepoint sock_send_length unavailable ({e:#}): no per-process sends"
        ));
    }
    r.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_threads() {
        for c in [
            "live_migration",
            "multifdsend_0",
            "multifdsend_15",
            "mig/src/main",
            "mig/src/send_3",
        ] {
            assert!(is_migration_thread(c), "{c}");
        }
        for c in [
            "qemu-system-x86",
            "CPU 0/TCG",
            "multifdrecv_0",
            "mig/dst/main",
        ] {
            assert!(!is_migration_thread(c), "{c}");
        }
    }

    #[test]
    fn iface_name_words() {
        let mut c = SendConfig::default();
        if iface_config(&mut c, "lo").is_ok() {
            assert_eq!(c.name_len, 3);
            assert_eq!(c.name[0], u64::from_le_bytes(*b"lo\0\0\0\0\0\0"));
            assert_eq!(c.name_mask[0], 0x00ff_ffff);
            assert_eq!(c.name_mask[1], 0);
        }
    }
}
