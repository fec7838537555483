//! Loads the kernel programs built into this binary, attaches them to the target, and reads
//! their maps. The only place that knows map names; the ABI types come from
//! `migtrace-common`.
use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf},
    programs::RawTracePoint,
    Ebpf, EbpfLoader,
};
use migtrace_common::{counter, Config, CpuState, Hll, FLAG_RANGE, FLAG_RECORD_PAGES};

use crate::{
    error::Error,
    record::{Drops, FaultCounts},
};

#[cfg(migtrace_has_ebpf)]
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/migtrace.bpf.o"));
#[cfg(not(migtrace_has_ebpf))]
pub(crate) static OBJECT: &[u8] = &[];

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

/// The loaded, attached fault program and its maps.
pub struct FaultProbe {
    // Keeps the program attached; dropping detaches it.
    _bpf: Ebpf,
    config: Array<MapData, Config>,
    cfg: Config,
    state: PerCpuArray<MapData, CpuState>,
    hll: PerCpuArray<MapData, Hll>,
    threads: HashMap<MapData, u32, u64>,
    events: Option<RingBuf<MapData>>,
    ncpus: usize,
    /// Counters at the last [`FaultProbe::take_deltas`].
    last: Counters,
}

/// Monotonic kernel counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters([u64; counter::SLOTS as usize]);

impl Counters {
    fn get(&self, slot: u32) -> u64 {
        self.0[slot as usize]
    }
    fn delta(&self, earlier: &Counters) -> Counters {
        let mut d = [0u64; counter::SLOTS as usize];
        for (i, v) in d.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(earlier.0[i]);
        }
        Counters(d)
    }
}

/// Options for [`FaultProbe::attach`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ProbeOptions {
    pub tgid: u32,
    pub range: Option<(u64, u64)>,
    /// Send every write fault's page to the ring buffer (size in bytes, a power of two
    /// multiple of the page size).
    pub record_pages: Option<u32>,
}

/// Turns a load or attach failure into an error: EPERM (found by errno in the error's
/// causes, not by its text) is a missing privilege the user must fix; anything else is a
/// runtime failure.
pub(crate) fn load_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    if crate::error::os_errno(&e) == Some(libc::EPERM) {
        Error::Privilege(format!(
            "the kernel refused to load the eBPF program ({e}): run as root or with CAP_BPF and CAP_PERFMON"
        ))
        .into()
    } else {
        anyhow::Error::new(e).context("loading the eBPF program failed")
    }
}

impl FaultProbe {
    /// Loads the program and attaches it to `page_fault_user`.
    pub fn attach(opts: ProbeOptions) -> Result<FaultProbe> {
        require()?;
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
        let rl = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: setrlimit with a valid struct; failure only matters on old kernels.
        unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) };

        let mut loader = EbpfLoader::new();
        // The ring buffer is only needed for exact page identities; keep it tiny otherwise.
        let rb = opts.record_pages.unwrap_or(4096).max(4096);
        loader.map_max_entries("EVENTS", rb);
        let mut bpf = loader.load(OBJECT).map_err(load_error)?;

        let ncpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut config: Array<MapData, Config> = Array::try_from(take(&mut bpf, "CONFIG")?)?;
        let mut cfg = Config {
            tgid: opts.tgid,
            ..Default::default()
        };
        if let Some((lo, hi)) = opts.range {
            cfg.flags |= FLAG_RANGE;
            cfg.addr_lo = lo;
            cfg.addr_hi = hi;
        }
        if opts.record_pages.is_some() {
            cfg.flags |= FLAG_RECORD_PAGES;
        }
        config.set(0, cfg, 0).context("writing the eBPF config")?;
        let state = PerCpuArray::try_from(take(&mut bpf, "STATE")?)?;
        let hll = PerCpuArray::try_from(take(&mut bpf, "HLL")?)?;
        let threads = HashMap::try_from(take(&mut bpf, "THREADS")?)?;
        let events = if opts.record_pages.is_some() {
            Some(RingBuf::try_from(take(&mut bpf, "EVENTS")?)?)
        } else {
            None
        };

        for tp in ["page_fault_user", "page_fault_kernel"] {
            let prog: &mut RawTracePoint = bpf
                .program_mut(tp)
                .ok_or_else(|| anyhow!("program {tp} missing from the eBPF object"))?
                .try_into()?;
            prog.load().map_err(load_error)?;
            prog.attach(tp)
                .map_err(|e| anyhow!("attaching to raw tracepoint {tp}: {e}"))?;
        }

        let mut probe = FaultProbe {
            _bpf: bpf,
            config,
            cfg,
            state,
            hll,
            threads,
            events,
            ncpus,
            last: Counters::default(),
        };
        probe.last = probe.counters()?;
        Ok(probe)
    }

    /// Fault counts and drops since the last call (or since attaching).
    pub fn take_deltas(&mut self) -> Result<(FaultCounts, Drops)> {
        let now = self.counters()?;
        let d = now.delta(&self.last);
        self.last = now;
        Ok((
            FaultCounts {
                write_not_present: d.get(counter::WRITE_NOT_PRESENT),
                write_protect: d.get(counter::WRITE_PROTECT),
                read: d.get(counter::READ),
                out_of_range: d.get(counter::OUT_OF_RANGE),
            },
            Drops {
                thread_map_full: d.get(counter::THREAD_MAP_FULL),
                ringbuf_full: d.get(counter::RINGBUF_FULL),
                sample_misses: 0,
            },
        ))
    }

    /// Reads the counters (summed over CPUs).
    fn counters(&self) -> Result<Counters> {
        let mut c = Counters::default();
        for cpu in self.state.get(&0, 0)?.iter() {
            for (sum, v) in c.0.iter_mut().zip(cpu.counters.iter()) {
                *sum += v;
            }
        }
        Ok(c)
    }

    /// Flips the HyperLogLog epoch and returns the merged sketch of the epoch that just
    /// ended (then clears it for reuse). A fault already inside the program on another CPU
    /// when the epoch flips may update the old buffer after it was read: if before the clear,
    /// that page is lost from the sketches; if after, it is counted two epochs late. The
    /// window is the program's run time (well under a microsecond), so at most a few pages per
    /// epoch are affected; the exact fault counters are not.
    pub fn take_epoch_sketch(&mut self) -> Result<Hll> {
        let old = self.cfg.hll_epoch & 1;
        self.cfg.hll_epoch = old ^ 1;
        self.config.set(0, self.cfg, 0)?;
        let vals = self.hll.get(&old, 0)?;
        let mut merged = Hll::default();
        for v in vals.iter() {
            crate::estimate::hll_merge(&mut merged, v);
        }
        let zero = PerCpuValues::try_from(vec![Hll::default(); self.ncpus])?;
        self.hll.set(old, zero, 0)?;
        Ok(merged)
    }

    /// Stops counting: the programs stay attached but match no process. Reading the thread
    /// counts after this cannot race with a flush from a run cache into the map.
    pub fn stop(&mut self) -> Result<()> {
        self.cfg.tgid = 0;
        self.config.set(0, self.cfg, 0)?;
        Ok(())
    }

    /// Write faults per thread so far (flushed counts plus the per-CPU run caches). Exact
    /// after [`FaultProbe::stop`]; while counting, a flush between the two reads can be missed.
    pub fn thread_counts(&self) -> Result<Vec<(u32, u64)>> {
        let mut m: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
        for kv in self.threads.iter() {
            let (tid, n) = kv?;
            *m.entry(tid).or_default() += n;
        }
        for cpu in self.state.get(&0, 0)?.iter() {
            if cpu.run.count > 0 {
                *m.entry(cpu.run.tid).or_default() += cpu.run.count;
            }
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(v)
    }

    /// The page-event ring buffer, when recording pages.
    pub fn events(&mut self) -> Option<&mut RingBuf<MapData>> {
        self.events.as_mut()
    }
}

fn take(bpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    bpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}
