//! `migtrace::qemu` against a real QEMU 7.2 TCG guest (Debian's 6.1 kernel, `migtrace writer`
//! inside; see `qemu_guest.rs`): the command-line parser and RAM finder on the live process,
//! QMP's memory and vCPU replies against what /proc says, `calc-dirty-rate` against the
//! writer's rate, and a QEMU that stops answering or dies mid-call.
//!
//! Run: `cargo test -p migtrace-e2e --test qemu` (root; builds the guest image itself).
use std::time::{Duration, Instant};

use migtrace::qemu::qmp::{MigrateParameters, Qmp, QmpError};
use migtrace::qemu::ram::{self, Exclusion};
use migtrace::qemu::{self as q, cmdline::BackendKind, vcpu};
use migtrace_e2e::qemu_guest::{GuestOptions, QemuGuest, RamBackend};

const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

fn boot(opts: GuestOptions) -> Option<QemuGuest> {
    migtrace_e2e::require_root();
    QemuGuest::boot(&opts)
}

/// The finder on the live process: exactly 512 MiB in one block, with what else QEMU maps
/// listed and explained; QMP's view (query-memdev) picks the same mapping.
async fn check_ram(g: &QemuGuest, shared: bool, kind: BackendKind) -> ram::GuestRam {
    let found = q::guest_ram_of(g.pid(), None).unwrap_or_else(|e| {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", g.pid())).unwrap_or_default();
        panic!("guest RAM from cmdline + maps: {e:#}\n--- maps ---\n{maps}")
    });
    let mut qmp = Qmp::connect(&g.qmp_socket, TIMEOUT).await.unwrap();
    let memdevs = qmp.query_memdev().await.unwrap();
    let via_qmp = q::guest_ram_of(g.pid(), Some(&memdevs)).unwrap();
    eprintln!("guest RAM: {:#x?}\nmemdevs: {memdevs:?}", found.blocks);
    for e in &found.excluded {
        if e.region.len() >= MIB {
            eprintln!("excluded: {} -- {}", e.region, e.reason);
        }
    }
    assert_eq!(found.size_bytes, 512 * MIB);
    assert_eq!(found.blocks.len(), 1);
    assert_eq!(found.blocks[0].shared, shared);
    assert_eq!(found.blocks[0].kind, kind);
    assert_eq!(via_qmp.blocks, found.blocks);
    // TCG's 1 GiB translation buffer: one region less a guard page with one vCPU, one
    // region per 64 MiB, each less a guard page, with multi-threaded TCG.
    let tcg = found.excluded_bytes(Exclusion::TcgCodeBuffer);
    assert!(
        (1023 * MIB..1024 * MIB).contains(&tcg),
        "TCG buffer {tcg} bytes"
    );
    assert!(found.excluded_bytes(Exclusion::Heap) > 0);
    assert!(found
        .excluded
        .iter()
        .any(|e| e.reason == Exclusion::SmallRamBlock));
    found
}

#[tokio::test]
async fn default_ram_is_one_private_thp_block_and_qmp_agrees() {
    let opts = GuestOptions {
        smp: 2,
        ..GuestOptions::default()
    };
    let Some(g) = boot(opts) else { return };
    let c = q::read_cmdline(g.pid()).unwrap();
    assert!(c.is_qemu_system && c.debug_threads);
    assert_eq!((c.ram_bytes(), c.cpus()), (512 * MIB, 2));
    let found = check_ram(&g, false, BackendKind::Ram).await;
    assert_eq!(found.blocks[0].name, "pc.ram");

    // THP: QEMU madvises guest RAM (MADV_HUGEPAGE), so with THP on `madvise` or `always`
    // the touched part of it is huge pages.
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", g.pid())).unwrap();
    let start = found.blocks[0].start;
    let (rss, huge) = (
        ram::smaps_field(&smaps, start, "Rss").unwrap(),
        ram::smaps_field(&smaps, start, "AnonHugePages").unwrap(),
    );
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap();
    eprintln!(
        "guest RAM: Rss {} MiB, AnonHugePages {} MiB; THP {}",
        rss / MIB,
        huge / MIB,
        thp.trim()
    );
    if !thp.contains("[never]") {
        assert!(
            huge >= 128 * MIB,
            "the writer's 128 MiB at least should be huge pages"
        );
    }

    let mut qmp = Qmp::connect(&g.qmp_socket, TIMEOUT).await.unwrap();
    assert_eq!(qmp.version().major, 7);
    assert!(qmp.query_status().await.unwrap().running);
    let sum = qmp.query_memory_size_summary().await.unwrap();
    assert_eq!(sum.base_memory, 512 * MIB);
    let cpus = qmp.query_cpus_fast().await.unwrap();
    let named = vcpu::vcpu_threads(g.pid()).unwrap();
    eprintln!("query-cpus-fast: {cpus:?}\nby name: {named:?}");
    assert_eq!(named.len(), 2);
    assert!(named.iter().all(|v| v.accel == "TCG"));
    let by_qmp: Vec<(u32, u32)> = cpus.iter().map(|c| (c.cpu_index, c.thread_id)).collect();
    let by_name: Vec<(u32, u32)> = named.iter().map(|v| (v.index, v.tid)).collect();
    assert_eq!(by_qmp, by_name);
}

#[tokio::test]
async fn memfd_share_on_is_one_shared_block() {
    let opts = GuestOptions {
        ram: RamBackend::Memfd,
        ..GuestOptions::default()
    };
    let Some(g) = boot(opts) else { return };
    let found = check_ram(&g, true, BackendKind::Memfd).await;
    assert_eq!(found.blocks[0].backend_id.as_deref(), Some("ram0"));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", g.pid())).unwrap();
    let line = maps
        .lines()
        .find(|l| l.starts_with(&format!("{:x}-", found.blocks[0].start)))
        .unwrap();
    assert!(line.contains("/memfd:"), "{line}");
}

/// The writer rewrites random pages of 128 MiB at 40 MiB/s: in 1 s it dirties about
/// 128 * (1 - e^(-40/128)) = 35 MiB of distinct pages (docs/platform.md saw 36 MB/s).
#[tokio::test]
async fn calc_dirty_rate_sees_the_writer() {
    let Some(g) = boot(GuestOptions::default()) else {
        return;
    };
    let mut qmp = Qmp::connect(&g.qmp_socket, TIMEOUT).await.unwrap();
    let mut rates = Vec::new();
    for _ in 0..3 {
        let info = qmp
            .measure_dirty_rate(Duration::from_secs(1), Some(4096))
            .await
            .unwrap();
        assert_eq!(info.mode.as_deref(), Some("page-sampling"));
        rates.push(info.dirty_rate.unwrap());
    }
    rates.sort_unstable();
    let median = rates[1];
    eprintln!("calc-dirty-rate (page-sampling, 1 s, 4096 pages/GiB): {rates:?} MiB/s");
    assert!(
        (15..=60).contains(&median),
        "median {median} MiB/s is not near the writer's ~35 MiB/s of distinct pages"
    );
    // A second calc-dirty-rate while one runs is refused with a typed error.
    qmp.calc_dirty_rate(Duration::from_secs(2), None)
        .await
        .unwrap();
    let again = qmp.calc_dirty_rate(Duration::from_secs(2), None).await;
    if let Err(e) = again {
        let qe = e.downcast_ref::<QmpError>().expect("a QMP error reply");
        eprintln!("second calc-dirty-rate: {qe}");
    }
}

/// A stopped QEMU times out; a QEMU killed while a call waits ends that call at once.
#[tokio::test]
async fn a_stopped_or_killed_qemu_errors_without_hanging() {
    let opts = GuestOptions {
        writer: None,
        ..GuestOptions::default()
    };
    let Some(mut g) = boot(opts) else { return };
    let mut qmp = Qmp::connect(&g.qmp_socket, Duration::from_secs(1))
        .await
        .unwrap();
    // Events come between a command and its reply: `stop` emits STOP before returning.
    qmp.execute_raw("stop", None).await.unwrap();
    let stop = qmp.wait_event("STOP", TIMEOUT).await.unwrap();
    assert_eq!(qmp.query_status().await.unwrap().status, "paused");
    qmp.execute_raw("cont", None).await.unwrap();
    qmp.wait_event("RESUME", TIMEOUT).await.unwrap();
    eprintln!("events: {stop:?}, RESUME; left: {:?}", qmp.take_events());
    let bad = qmp.execute_raw("no-such-command", None).await.unwrap_err();
    let qe = bad.downcast_ref::<QmpError>().expect("a typed QMP error");
    assert_eq!(qe.class, "CommandNotFound");
    g.signal(libc::SIGSTOP);
    let t = Instant::now();
    let e = qmp.query_status().await.unwrap_err();
    eprintln!("stopped QEMU: {e:#} after {:?}", t.elapsed());
    assert!(format!("{e:#}").contains("did not answer"), "{e:#}");
    assert!(t.elapsed() < Duration::from_secs(3));

    qmp.set_timeout(Duration::from_secs(60));
    let pid = g.pid();
    let call = tokio::spawn(async move { qmp.query_memdev().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    migtrace_e2e::signal(pid, libc::SIGKILL);
    let res = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call must end when QEMU dies, long before its 60 s timeout")
        .unwrap();
    let e = res.unwrap_err();
    eprintln!("killed QEMU: {e:#} after {:?}", t.elapsed());
    assert!(
        format!("{e:#}").contains("closed the QMP connection"),
        "{e:#}"
    );
    g.kill();
    let e = Qmp::connect(&g.qmp_socket, TIMEOUT)
        .await
        .err()
        .expect("no QEMU to connect to");
    eprintln!("connect after death: {e:#}");
    let e = q::guest_ram_of(pid, None).unwrap_err();
    assert!(
        e.downcast_ref::<migtrace::error::Error>().is_some(),
        "{e:#}"
    );
}

/// The migration commands on a real pre-copy: a bandwidth too low to converge (32 MiB/s
/// against a 40 MiB/s writer, docs/platform.md) runs pass after pass until cancelled; a
/// high one completes and the destination runs the guest.
#[tokio::test]
async fn migrate_cancel_then_complete_on_loopback() {
    let Some(src) = boot(GuestOptions::default()) else {
        return;
    };
    let mut qmp = Qmp::connect(&src.qmp_socket, TIMEOUT).await.unwrap();
    qmp.migrate_set_capabilities(&[("events", true)])
        .await
        .unwrap();
    let slow = MigrateParameters {
        max_bandwidth: Some(32 * MIB),
        downtime_limit: Some(50),
        ..MigrateParameters::default()
    };
    qmp.migrate_set_parameters(&slow).await.unwrap();
    let (_dst1, uri) = src.boot_destination();
    qmp.migrate(&uri).await.unwrap();
    let info = poll_migrate(&mut qmp, |i| {
        i.ram.as_ref().is_some_and(|r| r.dirty_sync_count >= 2)
    })
    .await;
    eprintln!("slow migration after 2 syncs: {info:?}");
    assert_eq!(info.status.as_deref(), Some("active"));
    assert!(info.ram.as_ref().unwrap().transferred > 0);
    qmp.migrate_cancel().await.unwrap();
    let info = poll_migrate(&mut qmp, |i| i.status.as_deref() == Some("cancelled")).await;
    assert_eq!(info.status.as_deref(), Some("cancelled"));
    let statuses: Vec<String> = qmp
        .take_events()
        .iter()
        .filter(|e| e.event == "MIGRATION")
        .map(|e| e.data["status"].as_str().unwrap_or("?").to_string())
        .collect();
    eprintln!("MIGRATION events: {statuses:?}");
    assert!(statuses.iter().any(|s| s == "active"), "{statuses:?}");

    let fast = MigrateParameters {
        max_bandwidth: Some(512 * MIB),
        downtime_limit: Some(300),
        ..MigrateParameters::default()
    };
    qmp.migrate_set_parameters(&fast).await.unwrap();
    let (dst2, uri) = src.boot_destination();
    qmp.migrate(&uri).await.unwrap();
    let info = poll_migrate(&mut qmp, |i| i.status.as_deref() == Some("completed")).await;
    eprintln!("first completed reply: {info:?}");
    // The first `completed` reply may say total-time 0 and downtime 0 (seen in QEMU 7.2):
    // it comes before QEMU fills them in, so ask again a moment later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let info = qmp.query_migrate().await.unwrap();
    eprintln!("half a second later: {info:?}");
    assert!(info.total_time.is_some_and(|t| t > 0), "{info:?}");
    let ram = info.ram.clone().unwrap();
    eprintln!(
        "completed: {} ms, {} syncs, {} MiB sent, downtime {:?} ms",
        info.total_time.unwrap_or(0),
        ram.dirty_sync_count,
        ram.transferred / MIB,
        info.downtime
    );
    assert!(ram.dirty_sync_count >= 1 && ram.remaining == 0);
    let mut dq = Qmp::connect(&dst2.qmp_socket, TIMEOUT).await.unwrap();
    let st = dq.query_status().await.unwrap();
    assert!(st.running, "the destination runs the guest: {st:?}");
}

/// Polls `query-migrate` every 200 ms until `done` (at most 60 s; failing on `failed`).
async fn poll_migrate(
    qmp: &mut Qmp,
    done: impl Fn(&migtrace::qemu::qmp::MigrationInfo) -> bool,
) -> migtrace::qemu::qmp::MigrationInfo {
    let start = Instant::now();
    loop {
        let info = qmp.query_migrate().await.unwrap();
        if done(&info) {
            return info;
        }
        assert_ne!(info.status.as_deref(), Some("failed"), "{info:?}");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no progress: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
