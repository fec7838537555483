//! `migtrace passes` against a real migration: a QEMU 7.2 TCG guest (512 MiB, the writer
//! rewriting 128 MiB at random at 40 MiB/s) migrates over 127.0.0.1 to a fresh destination
//! at max-bandwidth 128 MiB/s. Truth is QEMU's own final `query-migrate`, read over the
//! second QMP socket: passes == dirty-sync-count exactly (a pass per sync, setup and
//! completion syncs included, docs/passes.md); total time within 5 % of `total-time`;
//! bytes within 2 % of `ram.transferred`, and the eBPF send bytes of the migration threads
//! within 3 % of it.

use migtrace_e2e::migration::{self, attach_passes, migrate_under_passes, Plan};
use migtrace_e2e::prom;
use migtrace_e2e::{
    qemu_guest::{GuestOptions, QemuGuest},
    require_root,
};

#[tokio::test]
async fn passes_match_qemus_own_counters() {
    require_root();
    let Some(src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let plan = Plan::unthrottled(128);
    let run = migrate_under_passes(&src, &plan).await;
    let (r, q) = (&run.report, &run.qemu);
    eprintln!("{}", serde_json::to_string_pretty(r).unwrap());
    let s = &r["summary"];
    let ram = q.ram.clone().unwrap();
    assert_eq!(q.status.as_deref(), Some("completed"), "{q:?}");
    assert_eq!(s["status"], "completed");
    assert_eq!(s["partial"], false);
    assert_eq!(s["passes"].as_u64(), Some(ram.dirty_sync_count), "{s}");
    assert_eq!(
        r["passes"].as_array().unwrap().len() as u64,
        ram.dirty_sync_count
    );
    let total = s["total_time_s"].as_f64().unwrap();
    let qemu_total = q.total_time.unwrap() as f64 / 1000.0;
    assert!(
        (total - qemu_total).abs() <= 0.05 * qemu_total,
        "{total} vs {qemu_total}"
    );
    let bytes = sum_passes(r, "bytes");
    let t = ram.transferred as f64;
    assert!((bytes - t).abs() <= 0.02 * t, "{bytes} vs {t}");
    let pass_time = sum_passes(r, "duration_s");
    let setup = s["setup_time_s"].as_f64().unwrap_or(0.0);
    assert!(
        (pass_time + setup - qemu_total).abs() <= 0.05 * qemu_total,
        "{pass_time} + {setup}"
    );
    // The migration threads' sends, counted by the eBPF send path per pass, add up to what
    // QEMU says it transferred (within 3 %: TCP payload against QEMU's stream bytes).
    let wire: u64 = r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["wire_bytes_ebpf"]
                .as_u64()
                .expect("eBPF send bytes per pass")
        })
        .sum();
    eprintln!("eBPF send bytes of the migration threads: {wire}, QEMU transferred {t}");
    assert!((wire as f64 - t).abs() <= 0.03 * t, "{wire} vs {t}");
    let last = r["passes"].as_array().unwrap().last().unwrap();
    assert_eq!(last["stop_copy"], true);
    assert!(s["downtime_s"].as_f64().unwrap() > 0.0);
    assert!(
        s["pass_events"].as_u64().unwrap() >= 2,
        "events were enabled: {s}"
    );
}

/// The sum of one field over the report's passes.
fn sum_passes(r: &serde_json::Value, field: &str) -> f64 {
    r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[field].as_f64().unwrap())
        .sum()
}

/// `passes` with `args`, stdout and stderr piped.
fn spawn_passes(g: &QemuGuest, args: &[&str]) -> std::process::Child {
    migration::passes_command(g, args)
        .spawn()
        .expect("start migtrace passes")
}

/// A migration that does not end (16 MiB/s): SIGINT still gives the whole report, marked
/// partial; a second `passes` attached mid-migration reports what it saw when QEMU is
/// killed under it.
#[tokio::test]
async fn a_signal_or_a_dead_qemu_still_gives_a_partial_report() {
    use migtrace::qemu::qmp::{MigrateParameters, Qmp};
    use std::time::Duration;
    require_root();
    let Some(mut src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let mut ctl = Qmp::connect(&src.control_socket, Duration::from_secs(10))
        .await
        .unwrap();
    let slow = MigrateParameters {
        max_bandwidth: Some(16 * migration::MIB),
        downtime_limit: Some(300),
        ..MigrateParameters::default()
    };
    ctl.migrate_set_parameters(&slow).await.unwrap();
    let (_dst, uri) = src.boot_destination();
    let a = spawn_passes(&src, &[]);
    loop {
        let caps = ctl.query_migrate_capabilities().await.unwrap();
        if caps.iter().any(|c| c.capability == "events" && c.state) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ctl.migrate(&uri).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    migtrace_e2e::signal(a.id(), libc::SIGINT);
    let out = a.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("PARTIAL") && text.contains("ended by: SIGINT"),
        "{text}"
    );
    assert!(
        text.contains("not measured"),
        "the eBPF wire bytes are not faked"
    );

    let b = spawn_passes(&src, &["--json"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    src.kill();
    let out = b.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["summary"];
    eprintln!("{s}");
    assert_eq!(s["partial"], true);
    assert_eq!(s["status"], "active");
    assert!(s["ended_by"]["qemu-gone"].is_string(), "{s}");
    assert!(s["passes"].as_u64().unwrap() >= 1 && s["bytes"].as_u64().unwrap() > 0);
}

/// A real Prometheus scrapes `passes --listen` (every second) during a real migration: the
/// live series arrive while it runs, and after it, during `--linger`, the pass-duration
/// histogram holds one observation per pass (count == QEMU's dirty-sync-count). The scrape
/// is clean for `promtool check metrics`, the dashboard's migration panels get data, and
/// `--hdr-log` reads back with one `pass_duration` entry per pass, each the report's
/// duration to the microsecond.
#[tokio::test]
async fn prometheus_scrapes_passes_during_a_real_migration() {
    use std::time::{Duration, Instant};
    require_root();
    let (Some(prom_bin), Some(promtool)) = (prom::tool("prometheus"), prom::tool("promtool"))
    else {
        return;
    };
    let Some(src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let dir = prom::temp_dir("passes-prom");
    let port = prom::free_port();
    let server = prom::Prometheus::start(&prom_bin, &dir, port);
    let hlog = dir.join("passes.hlog");
    let listen = format!("127.0.0.1:{port}");
    let plan = Plan::unthrottled(128);
    let extra = [
        "--listen",
        &listen,
        "--linger",
        "120s",
        "--hdr-log",
        hlog.to_str().unwrap(),
    ];
    let attached = attach_passes(&src, &plan, &extra).await;
    // Prometheus scrapes `passes` before the migration starts (its first scrape can come
    // seconds after it is ready), so scrapes during the short migration are not lost.
    let t = Instant::now();
    while server.query("up{job=\"migtrace\"} == 1").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "Prometheus never scraped passes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let started = attached.migrate().await;
    // `completed` is served with the final values (PassFeed::finish).
    let done = "migtrace_migration_status{status=\"completed\"} == 1";
    let t = Instant::now();
    while server.query(done).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(200),
            "no completed status scraped"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let one = |q: &str| {
        let r = server.query(q);
        assert_eq!(r.len(), 1, "{q}: {r:?}");
        prom::value(&r[0])
    };
    let count = one("migtrace_pass_duration_seconds_count");
    let bytes_count = one("migtrace_pass_sent_bytes_count");
    let seen_active = one("max_over_time(migtrace_migration_status{status=\"active\"}[10m])");
    let peak_remaining = one("max_over_time(migtrace_migration_remaining_bytes[10m])");
    let total = one("migtrace_migration_total_time_seconds");
    let sent = one("migtrace_migration_transferred_bytes_total");
    let (_, text) = prom::http_get(port, "/metrics", None);
    prom::check_scrape_formats(port, &promtool);
    let panels = prom::check_panels_have_data(&server, &["Pre-copy pass duration", "Migration:"]);
    assert_eq!(
        panels, 5,
        "the pass-duration panel and the four migration panels"
    );
    // Ends the linger: passes exits and its report is read.
    migtrace_e2e::signal(started.pid(), libc::SIGTERM);
    let run = started.finish().await;
    let (r, q) = (&run.report, &run.qemu);
    let ram = q.ram.clone().unwrap();
    let passes = r["summary"]["passes"].as_u64().unwrap();
    eprintln!(
        "prometheus: {count} pass durations, {bytes_count} pass sizes, {passes} passes, QEMU dirty-sync-count {}, active seen {seen_active}, peak remaining {peak_remaining}, total {total} s, sent {sent}",
        ram.dirty_sync_count
    );
    assert_eq!(passes, ram.dirty_sync_count);
    assert_eq!(count, passes as f64, "{text}");
    assert_eq!(bytes_count, passes as f64);
    assert_eq!(
        seen_active, 1.0,
        "a scrape during the migration saw it active"
    );
    assert!(peak_remaining > 0.0);
    assert_eq!(sent, ram.transferred as f64);
    let qemu_total = q.total_time.unwrap() as f64 / 1000.0;
    assert!((total - qemu_total).abs() < 1e-9, "{total} vs {qemu_total}");
    check_pass_log(&hlog, &r["passes"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `--hdr-log` of `passes`: one `pass_duration` histogram of one value per pass, its
/// value the pass's duration in microseconds (3 significant digits), at the pass's start.
fn check_pass_log(path: &std::path::Path, passes: &serde_json::Value) {
    use hdrhistogram::serialization::{
        interval_log::{IntervalLogIterator, LogEntry},
        Deserializer,
    };
    let passes = passes.as_array().unwrap();
    let text = std::fs::read(path).unwrap();
    let mut got = Vec::new();
    for e in IntervalLogIterator::new(&text) {
        if let LogEntry::Interval(h) = e.unwrap_or_else(|e| panic!("bad log entry: {e:?}")) {
            assert_eq!(h.tag().map(|t| t.as_str()), Some("pass_duration"));
            let raw = prom::base64_decode(h.encoded_histogram());
            let hist: hdrhistogram::Histogram<u64> =
                Deserializer::new().deserialize(&mut &raw[..]).unwrap();
            assert_eq!(hist.len(), 1);
            got.push((h.start_timestamp().as_secs_f64(), hist.max()));
        }
    }
    assert_eq!(got.len(), passes.len(), "{got:?}");
    for ((start, us), p) in got.iter().zip(passes) {
        let want = (p["duration_s"].as_f64().unwrap() * 1e6).round();
        assert!(hist_equal(*us as f64, want), "{us} us vs {want}");
        assert!(
            (start - p["start_s"].as_f64().unwrap()).abs() < 1e-3,
            "{start} vs {p}"
        );
    }
}

/// Equal within HdrHistogram's 3 significant digits.
fn hist_equal(a: f64, b: f64) -> bool {
    (a - b).abs() <= b * 1e-3 + 1.0
}

/// Records what a real QEMU says during a plain migration at 128 MiB/s, for the golden
/// master of `passes` (migtrace/tests/passes_golden.rs): the migration parameters and
/// capabilities, and every `query-migrate` reply, polled every 20 ms as `passes` polls, as
/// QEMU sent them. Run by hand:
/// `MIGTRACE_RECORD_QMP=FILE cargo test -p migtrace-e2e --test passes -- --ignored record`.
#[tokio::test]
#[ignore = "records a fixture; run by hand"]
async fn record_query_migrate_replies() {
    use migtrace::qemu::qmp::{MigrateParameters, Qmp};
    use std::time::Duration;
    require_root();
    let out = std::env::var("MIGTRACE_RECORD_QMP").expect("MIGTRACE_RECORD_QMP=FILE");
    let Some(src) = QemuGuest::boot(&GuestOptions::default()) else {
        return;
    };
    let mut q = Qmp::connect(&src.control_socket, Duration::from_secs(10))
        .await
        .unwrap();
    let params = MigrateParameters {
        max_bandwidth: Some(128 * migration::MIB),
        downtime_limit: Some(300),
        ..MigrateParameters::default()
    };
    q.migrate_set_parameters(&params).await.unwrap();
    q.migrate_set_capabilities(&[("events", true)])
        .await
        .unwrap();
    let (_dst, uri) = src.boot_destination();
    let parameters = q
        .execute_raw("query-migrate-parameters", None)
        .await
        .unwrap();
    let capabilities = q
        .execute_raw("query-migrate-capabilities", None)
        .await
        .unwrap();
    let mut replies = vec![q.execute_raw("query-migrate", None).await.unwrap()];
    q.migrate(&uri).await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = q.execute_raw("query-migrate", None).await.unwrap();
        let st = r["status"].as_str().unwrap_or("none").to_string();
        let zero_time = r["total-time"].as_u64().unwrap_or(0) == 0;
        replies.push(r);
        if matches!(st.as_str(), "failed" | "cancelled") || (st == "completed" && !zero_time) {
            break;
        }
        assert!(replies.len() < 5000, "the migration did not end");
    }
    let v = q.version().clone();
    let rec = serde_json::json!({
        "qemu": {"major": v.major, "minor": v.minor, "micro": v.micro},
        "parameters": parameters,
        "capabilities": capabilities,
        "replies": replies,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&rec).unwrap() + "\n").unwrap();
    eprintln!("{} replies written to {out}", replies.len());
}
