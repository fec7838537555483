//! The send path with real eBPF: a known number of bytes sent over a loopback TCP
//! connection, seen by the `SendProbe` API and by `watch --iface lo --link 1g`.
//!
//! The target is this test process itself (a sender thread writing to a listener thread),
//! so the tests hold one lock: their sends must not mix, not even with the QMP client of the
//! QEMU tests, which sends from this process too.
use std::{
    io::{BufRead, Read, Write},
    net::{TcpListener, TcpStream},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use migtrace::probe::send::{SendOptions, SendProbe};
use migtrace_e2e::{migration::wait_completed, require_root, run, Watch};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Sends `n` bytes over a fresh loopback TCP connection at about `rate` bytes/s, in 64 KiB
/// writes, from a new thread. Returns that thread's tid once everything is sent and read.
fn send_loopback(n: usize, rate: f64) -> u32 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let rx = thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            match c.read(&mut buf).unwrap() {
                0 => return got,
                k => got += k,
            }
        }
    });
    let tx = thread::Builder::new()
        .name("mt-sender".into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() } as u32;
            let mut s = TcpStream::connect(addr).unwrap();
            let chunk = vec![0x5au8; 64 << 10];
            let t0 = Instant::now();
            let mut sent = 0;
            while sent < n {
                let k = chunk.len().min(n - sent);
                s.write_all(&chunk[..k]).unwrap();
                sent += k;
                let due = Duration::from_secs_f64(sent as f64 / rate);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    thread::sleep(wait);
                }
            }
            tid
        });
    let tid = tx.unwrap().join().unwrap();
    assert_eq!(rx.join().unwrap(), n);
    tid
}

#[test]
fn probe_counts_the_process_sends_exactly() {
    require_root();
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let opts = SendOptions {
        iface: Some("lo".into()),
        ..SendOptions::default()
    };
    let lo_tx = || -> u64 {
        let s = std::fs::read_to_string("/sys/class/net/lo/statistics/tx_bytes").unwrap();
        s.trim().parse().unwrap()
    };
    let sys_before = lo_tx();
    let mut p = SendProbe::attach(Some(std::process::id()), &opts).expect("attach");
    assert!(p.notes().is_empty(), "{:?}", p.notes());
    const N: usize = 24 << 20;
    let tid = send_loopback(N, 200e6);
    let d = p.take_deltas().unwrap();
    let threads = p.take_thread_bytes().unwrap();
    let sys = lo_tx() - sys_before;
    eprintln!("deltas {d:?}; lo tx_bytes (sysfs, a wider window) {sys}; threads {threads:?}");
    // The eBPF window lies inside the sysfs one. net_dev_xmit's skb length includes the
    // 14-byte Ethernet header; loopback counts its tx bytes after removing it.
    let wire_less_eth = d.if_bytes - 14 * d.if_packets;
    assert!(wire_less_eth <= sys, "{wire_less_eth} > {sys}");
    // sock_send_length reports what each sendmsg returned: write_all's bytes, exactly.
    assert_eq!(d.send_bytes, N as u64);
    assert_eq!(d.send_errors, 0);
    assert_eq!(d.thread_map_full, 0);
    assert!(d.send_calls >= (N >> 16) as u64, "{d:?}");
    // lo carries the payload plus headers, the ACKs and whatever else runs on lo.
    assert!(d.if_bytes >= N as u64, "{d:?}");
    assert!(d.if_packets > 0);
    let t = threads
        .iter()
        .find(|t| t.tid == tid)
        .expect("the sender thread");
    assert_eq!(t.bytes, N as u64);
    // Named by the kernel at its first send, though the thread has exited by now.
    assert_eq!(t.comm, "mt-sender", "{t:?}");
    assert!(!t.migration);
    // Taken: nothing new since.
    assert!(p.take_thread_bytes().unwrap().is_empty());
    assert_eq!(p.take_deltas().unwrap().send_bytes, 0);
}

/// Reads a JSON watch to its end: (link lines, summary).
fn finish(w: Watch) -> (Vec<Value>, Value) {
    let mut w = w;
    let (mut links, mut summary) = (Vec::new(), Value::Null);
    for line in w.out.by_ref().lines() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        match v["type"].as_str() {
            Some("link") => links.push(v),
            Some("summary") => summary = v,
            _ => {}
        }
    }
    assert!(w.child.wait().unwrap().success());
    (links, summary)
}

#[test]
fn watch_iface_lo_shows_tx_headroom_and_ratio_and_the_profile_carries_them() {
    require_root();
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = std::env::temp_dir().join(format!("migtrace-sendpath-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prof = dir.join("p.json");
    let pid = std::process::id().to_string();
    let w = Watch::start(&[
        "--pid",
        &pid,
        "--iface",
        "lo",
        "--link",
        "1g",
        "--interval",
        "500ms",
        "--duration",
        "4s",
        "--backend",
        "sample",
        "--profile-out",
        prof.to_str().unwrap(),
    ]);
    const N: usize = 16 << 20;
    send_loopback(N, 8e6);
    let (links, s) = finish(w);
    assert!(links.len() >= 6, "{links:?}");
    for l in &links {
        assert_eq!(l["iface"], "lo");
        assert_eq!(l["link_bits"], 1e9);
        for f in [
            "tx_bytes_per_sec",
            "headroom_bytes_per_sec",
            "send_bytes_per_sec",
        ] {
            assert!(l[f].is_f64(), "{f} in {l}");
        }
    }
    let busy = links
        .iter()
        .map(|l| l["tx_bytes_per_sec"].as_f64().unwrap());
    assert!(busy.fold(0.0, f64::max) > 4e6, "{links:?}");
    assert!(links.iter().any(|l| l["dirty_to_headroom"].is_f64()));
    let l = &s["link"];
    assert_eq!(l["send_bytes"], N as u64, "{l}");
    assert!(l["tx_bytes"].as_u64().unwrap() >= N as u64, "{l}");
    assert_eq!(l["thread_map_full"], 0);
    let head = l["headroom_bytes_per_sec"].as_f64().unwrap();
    let tx = l["tx_bytes_per_sec"].as_f64().unwrap();
    assert!((head - (1e9 / 8.0 * 0.94 - tx)).abs() < 1.0, "{l}");

    let p: Value = serde_json::from_slice(&std::fs::read(&prof).unwrap()).unwrap();
    assert_eq!(p["link"]["iface"], "lo");
    assert_eq!(p["link"]["headroom_bytes_per_sec"].as_f64(), Some(head));
    // This test process dirties next to nothing, and the sampled growth curve of so little
    // can come out non-monotone, which predict refuses (a matter of the sample backend, not
    // of the link): predict from the same profile without its curve.
    let mut p = p;
    p["growth"] = serde_json::json!([]);
    let prof2 = dir.join("p2.json");
    std::fs::write(&prof2, serde_json::to_vec(&p).unwrap()).unwrap();
    let out = run(&[
        "predict",
        "--profile",
        prof2.to_str().unwrap(),
        "--mem",
        "1GiB",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("no --link: the link is the profile's measured headroom on lo"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn watch_terminal_prints_the_link_line() {
    require_root();
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id().to_string();
    let out = run(&[
        "watch",
        "--pid",
        &pid,
        "--iface",
        "lo",
        "--link",
        "1g",
        "--interval",
        "500ms",
        "--duration",
        "1s",
        "--backend",
        "sample",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("link lo: tx "), "{text}");
    assert!(text.contains("of 1 Gbit/s, headroom "), "{text}");
    assert!(text.contains("dirty/headroom "), "{text}");
    assert!(text.contains("target sends: "), "{text}");
}

#[test]
fn loopback_without_link_says_so_and_bad_flags_are_usage_errors() {
    require_root();
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id().to_string();
    let w = Watch::start(&[
        "--pid",
        &pid,
        "--iface",
        "lo",
        "--interval",
        "200ms",
        "--duration",
        "400ms",
        "--backend",
        "sample",
    ]);
    let warn = w.start["warnings"].to_string();
    assert!(warn.contains("lo reports no link speed"), "{warn}");
    let (links, s) = finish(w);
    assert!(links.iter().all(|l| l["headroom_bytes_per_sec"].is_null()));
    assert!(s["link"]["link_bits"].is_null());
    for args in [
        vec!["--link", "1g"],
        vec!["--iface", "nosuchif0"],
        vec!["--iface", "lo", "--link", "fast"],
    ] {
        let mut a = vec!["watch", "--pid", &pid, "--duration", "1s"];
        a.extend(args.iter().copied());
        let out = run(&a);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{a:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A real QEMU 7.2 migration on loopback: the bytes of QEMU's migration threads, as the
/// kernel counted their sends, against QMP's `transferred`.
#[test]
fn qemu_migration_threads_send_what_qmp_says_it_transferred() {
    migrate_and_compare(None);
}

/// The same with multifd (2 channels): the `multifdsend_N` threads carry the pages.
#[test]
fn qemu_multifd_threads_send_what_qmp_says_it_transferred() {
    migrate_and_compare(Some(2));
}

/// A migration of `src` at 64 MiB/s, with `channels` multifd channels when given.
async fn start_migration(
    src: &migtrace_e2e::qemu_guest::QemuGuest,
    channels: Option<u8>,
) -> (
    migtrace_e2e::qemu_guest::QemuGuest,
    migtrace::qemu::qmp::Qmp,
) {
    let params = migtrace::qemu::qmp::MigrateParameters {
        max_bandwidth: Some(64 << 20),
        downtime_limit: Some(300),
        multifd_channels: channels,
        ..Default::default()
    };
    migtrace_e2e::migration::start_migration(src, &params).await
}

/// Runs [`migrate_and_compare_async`] holding the test lock: its QMP client sends from this
/// process, which the other tests count.
fn migrate_and_compare(channels: Option<u8>) {
    let _g = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(migrate_and_compare_async(channels));
}

async fn migrate_and_compare_async(channels: Option<u8>) {
    use migtrace_e2e::qemu_guest::{GuestOptions, QemuGuest};
    require_root();
    let Some(src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let opts = SendOptions {
        iface: Some("lo".into()),
        ..SendOptions::default()
    };
    let mut p = SendProbe::attach(Some(src.pid()), &opts).expect("attach");
    let (_dst, mut qmp) = start_migration(&src, channels).await;
    let ram = wait_completed(&mut qmp, Duration::from_secs(300)).await;
    let d = p.take_deltas().unwrap();
    let threads = p.take_thread_bytes().unwrap();
    let mig: u64 = threads
        .iter()
        .filter(|t| t.migration)
        .map(|t| t.bytes)
        .sum();
    eprintln!(
        "multifd {channels:?}: QMP transferred {}; migration threads {mig}; all sends {}; lo tx {}; threads {threads:?}",
        ram.transferred, d.send_bytes, d.if_bytes
    );
    assert_eq!(d.migration_bytes, mig);
    assert_eq!(d.thread_map_full, 0);
    assert!(
        threads.iter().any(|t| t.comm == "live_migration"),
        "{threads:?}"
    );
    if channels.is_some() {
        let n = threads
            .iter()
            .filter(|t| t.comm.starts_with("multifdsend_"))
            .count();
        assert!(n >= 1, "{threads:?}");
    }
    let err = (mig as f64 - ram.transferred as f64).abs() / ram.transferred as f64;
    assert!(
        err <= 0.03,
        "migration threads {mig} vs QMP transferred {}",
        ram.transferred
    );
    assert!(d.if_bytes >= mig);
}
