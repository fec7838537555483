//! Benchmark of `migtrace predict`'s work: a grid of 4 links x 4 downtimes from a profile,
//! with the throttle recommendation searched for every cell (the target is < 50 ms). The
//! profile is parsed from JSON inside the timed loop, as `--profile` does (minus the file
//! read).
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

use migtrace::model::recommend::{candidates, SettingsContext};
use migtrace::model::sim::{Limits, Policy, Throttle};
use migtrace::model::workload::Workload;
use migtrace::model::{grid, GridInput};
use migtrace::{
    profile::{DirtyRate, Profile, TargetInfo, ThreadShare, FORMAT, VERSION},
    record::GrowthPoint,
};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A 64 GiB guest, 8 vCPUs, dirtying ~1.5 GiB/s saturating at 24 GiB, each vCPU on CPU
/// `busy` of the time: 10g does not converge, so the recommendation search runs there.
fn profile(busy: f64) -> Profile {
    let pages_per_gib = GIB / 4096.0;
    let growth = (0..48)
        .map(|i| {
            let t = 0.05 * 1.25f64.powi(i);
            GrowthPoint {
                window_s: t,
                unique_pages: 24.0 * pages_per_gib * (1.0 - (-1.5 * t / 24.0).exp()),
                windows: 100,
            }
        })
        .collect();
    Profile {
        format: FORMAT.into(),
        version: VERSION,
        tool_version: "bench".into(),
        created_unix_s: 0,
        target: TargetInfo {
            pid: 1,
            comm: "qemu-system-x86".into(),
            rss_bytes: 48 << 30,
            writable_bytes: 64 << 30,
            shared_writable_bytes: 0,
            page_size: 4096,
        },
        backend: "fault".into(),
        caveats: vec![],
        duration_s: 600.0,
        interval_s: 0.05,
        dirty: DirtyRate {
            bytes_per_sec: 1.5 * GIB,
            pages_per_sec: 1.5 * pages_per_gib,
            ci95_bytes_per_sec: None,
            peak_bytes_per_sec: 2.0 * GIB,
        },
        growth,
        threads: (0..8)
            .map(|i| ThreadShare {
                tid: 100 + i,
                comm: format!("CPU {i}/KVM"),
                pages: 1000,
                share: 0.125,
                busy_share: Some(busy),
            })
            .collect(),
        thread_counts: Default::default(),
        busy_share: Some(busy),
        zero_page_share: Some(0.2),
        guest: None,
        link: None,
    }
}

fn bench(c: &mut Criterion) {
    // Busy vCPUs: auto-converge rescues the slow links. Paced vCPUs (1 % busy): auto-converge
    // fails at every level, so the search goes on to dirty-limit -- the worst case.
    for (name, busy) in [("busy vCPUs", 0.6), ("paced vCPUs", 0.01)] {
        one(c, name, busy);
    }
}

fn one(c: &mut Criterion, name: &str, busy: f64) {
    let json = serde_json::to_string(&profile(busy)).unwrap();
    let input = GridInput {
        links_bits: vec![10e9, 25e9, 40e9, 100e9],
        stop_copy_bits: None,
        downtimes_s: vec![0.1, 0.3, 0.5, 1.0],
        efficiency: 0.94,
        policy: Policy::Qemu,
        throttle: Throttle::None,
        recommend_kinds: candidates(Policy::Qemu).to_vec(),
        limits: Limits::default(),
        settings: SettingsContext {
            vcpus: 8,
            ..SettingsContext::default()
        },
    };
    // Print the shape of the work once, so the number can be read in context.
    {
        let p = Profile::parse(&json, "bench").unwrap();
        let w = Workload::from_profile(&p, None, None, None, None);
        let cells = grid(&w, &input);
        let conv = cells.iter().filter(|c| c.outcome.converges).count();
        let passes: usize = cells.iter().map(|c| c.outcome.passes.len()).sum();
        eprintln!(
            "{name}: {} cells, {} converge without a throttle, {} passes simulated in the main runs, recommendations: {:?}",
            cells.len(),
            conv,
            passes,
            cells
                .iter()
                .map(|c| format!("{}{}", c.recommendation.kind.as_str(), c.recommendation.level.map(|l| format!(" {l}")).unwrap_or_default()))
                .collect::<Vec<_>>()
        );
    }
    let id = format!("predict grid 4 links x 4 downtimes from a profile, {name}");
    c.bench_function(&id, |b| {
        b.iter(|| {
            let p = Profile::parse(black_box(&json), "bench").unwrap();
            let w = Workload::from_profile(&p, None, None, None, None);
            black_box(grid(&w, black_box(&input)))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
