//! The fault probe: the `page_fault_user` and `page_fault_kernel` programs, which count the
//! target's write faults (first touch and write-protect) per CPU and thread, feed an
//! in-kernel HyperLogLog of the pages, and can send each page to a ring buffer.
use anyhow::{anyhow, Context, Result};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues, RingBuf};
use aya::Ebpf;
use migtrace_common::{counter, Config, CpuState, Hll, FLAG_RANGE, FLAG_RECORD_PAGES};

use super::{attach_raw, map, take, MapSizes};
use crate::record::{Drops, FaultCounts};

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

impl FaultProbe {
    /// Loads the program and attaches it to `page_fault_user`.
    pub fn attach(opts: ProbeOptions) -> Result<FaultProbe> {
        // The ring buffer is only needed for exact page identities; keep it tiny otherwise.
        let mut bpf = super::load(MapSizes {
            events: opts.record_pages.unwrap_or(4096),
            threads: None,
            send_threads: Some(1),
        })?;

        let ncpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        let mut config: Array<MapData, Config> = Array::try_from(take(&mut bpf, map::CONFIG)?)?;
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
        let state = PerCpuArray::try_from(take(&mut bpf, map::STATE)?)?;
        let hll = PerCpuArray::try_from(take(&mut bpf, map::HLL)?)?;
        let threads = HashMap::try_from(take(&mut bpf, map::THREADS)?)?;
        let events = if opts.record_pages.is_some() {
            Some(RingBuf::try_from(take(&mut bpf, map::EVENTS)?)?)
        } else {
            None
        };

        for tp in ["page_fault_user", "page_fault_kernel"] {
            attach_raw(&mut bpf, tp)?;
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
