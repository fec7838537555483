//! The one place that loads the kernel programs built into this binary: it checks that they
//! can run here, sizes and names the maps, attaches programs, and mounts tracefs. The probes
//! on top of it each drive some of the programs and read their maps:
//! - [`fault`]: the user and kernel page-fault programs (`fault`, `softdirty`, `sample+fault`);
//! - [`send`]: the send path (`net_dev_xmit`, `sock_send_length`; `watch --iface`, `passes`);
//! - [`kvm`]: `kvm:kvm_page_fault`, a KVM guest's vCPU faults (`softdirty+kvm`).
//!
//! One object holds all five programs and all their maps, so every probe loads the whole
//! object and shrinks the maps it does not use ([`MapSizes`]). Map and program names are
//! written here and in `migtrace-ebpf` only; the ABI types come from `migtrace-common`.
pub mod fault;
pub mod kvm;
pub mod send;
mod tracefs;

use anyhow::{anyhow, Result};
use aya::{
    programs::{RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};

use crate::error::Error;
pub use tracefs::{ensure_tracefs, parse_format, TRACEFS};

#[cfg(migtrace_has_ebpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/migtrace.bpf.o"));
#[cfg(not(migtrace_has_ebpf))]
static OBJECT: &[u8] = &[];

/// The maps' names in the object.
pub(crate) mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const CONFIG: &str = "CONFIG";
    pub const STATE: &str = "STATE";
    pub const HLL: &str = "HLL";
    pub const THREADS: &str = "THREADS";
    pub const SEND_CONFIG: &str = "SEND_CONFIG";
    pub const SEND_STATE: &str = "SEND_STATE";
    pub const SEND_THREADS: &str = "SEND_THREADS";
    pub const KVM_CONFIG: &str = "KVM_CONFIG";
    pub const KVM_STATE: &str = "KVM_STATE";
    pub const KVM_VCPUS: &str = "KVM_VCPUS";
}

/// True when this binary was built with its kernel programs.
pub fn built_in() -> bool {
    !OBJECT.is_empty()
}

/// Why the eBPF backends cannot run here, if they cannot.
pub fn availability() -> std::result::Result<(), Error> {
    if !built_in() {
        return Err(Error::Unsupported("this migtrace was built without its eBPF programs (build with `cargo xtask build`); the `sample` backend remains".into()));
    }
    if let Some(why) = crate::target::missing_bpf_privileges() {
        return Err(Error::Privilege(why));
    }
    // The kernel programs filter by the tgid of the initial pid namespace; inside a nested
    // pid namespace (a container) the pids we see are not those.
    let nspid = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .ok()
        .and_then(|s| s.nspid);
    if let Some(ns) = nspid {
        if ns.len() > 1 {
            return Err(Error::Unsupported("migtrace runs in a nested pid namespace, where the pids it sees are not the kernel's: run it in the host pid namespace (e.g. docker --pid=host) for the eBPF backends".into()));
        }
    }
    Ok(())
}

/// [`availability`] as a usage error, for an explicitly requested eBPF backend.
pub fn require() -> Result<()> {
    availability().map_err(Into::into)
}

/// Turns a load or attach failure into an error: EPERM (found by errno in the error's
/// causes, not by its text) is a missing privilege the user must fix; anything else is a
/// runtime failure.
fn load_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    if crate::error::os_errno(&e) == Some(libc::EPERM) {
        Error::Privilege(format!(
            "the kernel refused to load the eBPF program ({e}): run as root or with CAP_BPF and CAP_PERFMON"
        ))
        .into()
    } else {
        anyhow::Error::new(e).context("loading the eBPF program failed")
    }
}

/// The sizes of the maps whose size a probe chooses. A probe keeps the maps of the programs
/// it does not run at their minimum, since they come with the object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MapSizes {
    /// The fault program's page ring buffer, in bytes (a power-of-two multiple of a page).
    pub events: u32,
    /// The fault program's per-thread counts (`None`: the object's size, 16,384).
    pub threads: Option<u32>,
    /// The send path's per-thread counts (`None`: the object's size, 4,096).
    pub send_threads: Option<u32>,
}

impl Default for MapSizes {
    /// Every sizable map at its minimum.
    fn default() -> Self {
        MapSizes {
            events: 4096,
            threads: Some(1),
            send_threads: Some(1),
        }
    }
}

/// Checks that the programs can run here and loads the object with these map sizes.
pub(crate) fn load(sizes: MapSizes) -> Result<Ebpf> {
    require()?;
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
    let rl = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid struct; failure only matters on old kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) };
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(map::EVENTS, sizes.events.max(4096));
    if let Some(n) = sizes.threads {
        loader.map_max_entries(map::THREADS, n.max(1));
    }
    if let Some(n) = sizes.send_threads {
        loader.map_max_entries(map::SEND_THREADS, n.max(1));
    }
    loader.load(OBJECT).map_err(load_error)
}

/// Takes a map out of the loaded object, to own it.
pub(crate) fn take(bpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    bpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

/// Loads the raw-tracepoint program `name` and attaches it to the raw tracepoint of the
/// same name.
pub(crate) fn attach_raw(bpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut RawTracePoint = bpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()?;
    prog.load().map_err(load_error)?;
    prog.attach(name)
        .map_err(|e| anyhow!("attaching to raw tracepoint {name}: {e}"))?;
    Ok(())
}

/// Loads the tracepoint program `name` and attaches it to `category:name`.
pub(crate) fn attach_tracepoint(bpf: &mut Ebpf, category: &str, name: &str) -> Result<()> {
    let prog: &mut TracePoint = bpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?
        .try_into()?;
    prog.load().map_err(load_error)?;
    prog.attach(category, name)
        .map_err(|e| anyhow!("attaching to tracepoint {category}:{name}: {e}"))?;
    Ok(())
}

/// Counters of a per-CPU state map, summed over CPUs.
pub(crate) fn sum_counters<const N: usize>(per_cpu: impl Iterator<Item = [u64; N]>) -> [u64; N] {
    let mut c = [0u64; N];
    for cpu in per_cpu {
        for (sum, v) in c.iter_mut().zip(cpu.iter()) {
            *sum += v;
        }
    }
    c
}
