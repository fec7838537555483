//! The `/metrics` endpoint against clients that misbehave (issue 17), in one process with
//! the server, as any local user could: idle connections past the descriptor limit, a client
//! that pipelines thousands of requests and never reads, a huge request head, a client that
//! never finishes its head. Every other scrape must still be answered, promptly.
//! Each of these stopped or bloated the tiny_http server used before (the numbers:
//! a panic at ~1,100 connections with nofile 1024, 8 of 8 scrapes timed out behind a
//! pipelining client, 647 MB for one 600 MB header).
use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use migtrace::sink::prometheus::{
    bind, serve,
    server::{CONNECTION_TIME, HEAD_TIMEOUT, MAX_CONNECTIONS},
    Metrics, TargetLabels,
};

/// The tests run one at a time: one of them lowers the process's descriptor limit.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A server whose registry holds 300 targets' histograms, about 500 KB a scrape, as an
/// exporter of many VMs serves: the answers to a pipelining client fill its socket buffers.
fn start() -> u16 {
    let l = bind("127.0.0.1:0", false).unwrap();
    let port = l.local_addr().unwrap().port();
    let m = Metrics::new();
    for i in 0..300 {
        let t = TargetLabels {
            pid: i.to_string().into(),
            comm: "qemu-system-x86".into(),
            guest: format!("vm-{i}").into(),
        };
        m.dirty_rate.get_or_create(&t).set(1e6);
        m.dirty_rate_hist.get_or_create(&t).observe(1e6);
        m.interval_pages_hist.get_or_create(&t).observe(100.0);
    }
    serve(l, Arc::new(m)).unwrap();
    port
}

/// One scrape on a fresh connection: the status line, within `limit`.
fn scrape(port: u16, limit: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).to_string();
    if !text.contains("migtrace_targets") {
        return Err(format!("no metrics in {:?}", &text[..text.len().min(200)]));
    }
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn resident_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4
}

/// 1,100 idle connections (more than systemd's default nofile of 1024 with the server's own),
/// and then connections while the process has no descriptor left, so that the server's
/// accepts fail with EMFILE: the server goes on, and answers once descriptors are free again.
#[test]
fn idle_connections_and_emfile_do_not_stop_the_server() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = start();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        idle.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
    }
    assert!(idle.len() > MAX_CONNECTIONS);
    let t = Instant::now();
    let status = scrape(port, Duration::from_secs(5)).unwrap();
    assert!(status.contains("200"), "{status}");
    eprintln!(
        "scrape beside 1,100 idle connections: {status} in {:?}",
        t.elapsed()
    );
    drop(idle);
    // Out of descriptors: a shell in a child connects 50 times while this process (and so
    // the server) has no descriptor left, so each accept of those fails with EMFILE.
    let mut clients = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "sleep 0.5; for i in $(seq 3 52); do eval \"exec $i<>/dev/tcp/127.0.0.1/{port}\"; done; sleep 2"
        ))
        .spawn()
        .unwrap();
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    let saved = rl;
    // A new descriptor takes the lowest free number, and the limit bounds that number: set
    // the limit to it, so that no descriptor can be had.
    let lowest = {
        use std::os::fd::AsRawFd;
        std::fs::File::open("/dev/null").unwrap().as_raw_fd() as u64
    };
    rl.rlim_cur = lowest;
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    std::thread::sleep(Duration::from_millis(1500));
    let starved = TcpStream::connect(("127.0.0.1", port)).is_err();
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
    assert!(
        starved,
        "the process still had descriptors: the test proves nothing"
    );
    let status = scrape(port, Duration::from_secs(5)).unwrap();
    assert!(status.contains("200"), "{status}");
    let _ = clients.wait();
    eprintln!("after accepts failed with EMFILE: {status}");
}

/// A client pipelines 5,000 GETs and never reads: eight other scrapes are each answered
/// within 2 s (all eight timed out behind such a client before).
#[test]
fn a_pipelining_client_that_never_reads_blocks_no_one() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = start();
    let mut hog = TcpStream::connect(("127.0.0.1", port)).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let one = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut sent = 0;
    for _ in 0..5000 {
        if hog.write_all(one).is_err() {
            break; // the socket's buffers are full: it is not reading
        }
        sent += 1;
    }
    for i in 0..8 {
        let t = Instant::now();
        let status = scrape(port, Duration::from_secs(2)).unwrap_or_else(|e| {
            panic!("scrape {i} behind a client that sent {sent} requests: {e}")
        });
        assert!(status.contains("200"), "{status}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    drop(hog);
}

/// A 64 MiB request head is refused after at most 16 KiB of it: 431 or a closed connection,
/// and the server's memory does not grow by the head's size (a 600 MB head took 647 MB).
#[test]
fn a_huge_request_head_is_refused_without_reading_it() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = start();
    let before = resident_kb();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ")
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut written = 0usize;
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break;
        }
        written += chunk.len();
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = String::from_utf8_lossy(&out);
    let grew = resident_kb().saturating_sub(before);
    eprintln!(
        "sent {} MiB of head: answer {:?}, resident +{grew} kB",
        written >> 20,
        head.lines().next()
    );
    assert!(out.is_empty() || head.starts_with("HTTP/1.1 431"), "{head}");
    assert!(grew < 32 * 1024, "resident memory grew by {grew} kB");
    assert!(scrape(port, Duration::from_secs(2))
        .unwrap()
        .contains("200"));
}

/// A client that sends half a request head and waits is cut after the head timeout (5 s),
/// and a connection lives no longer than the connection time (30 s) whatever it does.
#[test]
fn a_slow_client_is_cut_after_the_head_timeout() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let port = start();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost:").unwrap();
    s.set_read_timeout(Some(HEAD_TIMEOUT + Duration::from_secs(5)))
        .unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    let took = t.elapsed();
    eprintln!("slow client: {r:?} after {took:?}, {} bytes", out.len());
    assert!(r.is_ok(), "not closed by the server: {r:?}");
    assert!(took >= HEAD_TIMEOUT - Duration::from_millis(100) && took < CONNECTION_TIME);
}
