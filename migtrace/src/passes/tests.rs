use super::*;
use crate::qemu::qmp::MigrationRam;

/// A `query-migrate` reply (also used by the Prometheus feed's tests).
pub(crate) fn info(status: &str, t_ms: u64, syncs: u64, transferred: u64) -> MigrationInfo {
    MigrationInfo {
        status: Some(status.into()),
        total_time: Some(t_ms),
        setup_time: Some(10),
        ram: Some(MigrationRam {
            transferred,
            dirty_sync_count: syncs,
            remaining: 1000,
            dirty_pages_rate: 100,
            ..MigrationRam::default()
        }),
        ..MigrationInfo::default()
    }
}

#[test]
fn a_completed_migration_has_one_pass_per_sync_and_ends_with_the_stop_copy() {
    let mut t = Tracker::new();
    t.observe(&info("setup", 5, 0, 0), 100.005);
    t.observe(&info("active", 20, 1, 100), 100.020);
    t.observe(&info("active", 1000, 1, 5000), 101.0);
    t.observe(&info("active", 1200, 2, 6000), 101.2);
    t.observe(&info("active", 1500, 3, 7000), 101.5);
    let mut end = info("completed", 1800, 5, 9000);
    end.downtime = Some(100);
    t.observe(&end, 101.9);
    let (passes, s) = t.finish(EndedBy::Migration);
    assert_eq!(s.passes, 5);
    assert_eq!(passes.len(), 5);
    assert!(!s.partial);
    assert_eq!(s.total_time_s, 1.8);
    assert_eq!(s.downtime_s, Some(0.1));
    assert_eq!(passes.iter().map(|p| p.bytes).sum::<u64>(), 9000);
    assert_eq!(passes[0].start_s, 0.01);
    assert_eq!(passes[0].timed_by, "setup");
    assert_eq!(passes[1].start_s, 1.2);
    let last = passes.last().unwrap();
    assert!(last.stop_copy);
    assert!((last.start_s - 1.7).abs() < 1e-9, "{last:?}");
    assert_eq!(last.bytes, 2000);
    assert!(passes.iter().all(|p| p.wire_bytes_ebpf.is_none()));
}

#[test]
fn events_time_the_passes_and_a_cut_report_is_partial() {
    let mut t = Tracker::new();
    t.observe(&info("active", 1000, 1, 5000), 101.0);
    t.pass_event(2, 101.15);
    t.observe(&info("active", 1200, 2, 6000), 101.2);
    t.observe(&info("active", 1400, 2, 7000), 101.4);
    let (passes, s) = t.finish(EndedBy::Signal("SIGINT".into()));
    assert!(s.partial);
    assert_eq!(s.status, "active");
    assert_eq!(passes.len(), 2);
    assert_eq!(passes[1].timed_by, "event");
    assert!((passes[1].start_s - 1.15).abs() < 1e-9);
    assert_eq!(s.bytes, 7000);
}

#[test]
fn an_earlier_migrations_end_is_not_this_one() {
    let mut t = Tracker::new();
    t.observe(&info("completed", 900, 4, 100), 1.0);
    assert!(!t.started());
}

/// Seen on QEMU 7.2: a reply after the last data went out but before `completed` already
/// shows the completion sync; the stop-and-copy is still timed by the downtime.
#[test]
fn a_completion_sync_seen_before_completed_is_still_the_stop_copy() {
    let mut t = Tracker::new();
    t.observe(&info("active", 1000, 1, 5000), 101.0);
    t.observe(&info("active", 1500, 2, 7000), 101.5);
    t.observe(&info("active", 1790, 3, 9000), 101.79);
    let mut end = info("completed", 1800, 3, 9000);
    end.downtime = Some(100);
    t.observe(&end, 101.9);
    let (passes, s) = t.finish(EndedBy::Migration);
    assert_eq!(s.passes, 3);
    let last = passes.last().unwrap();
    assert!(
        last.stop_copy && (last.start_s - 1.7).abs() < 1e-9,
        "{last:?}"
    );
    assert_eq!(last.bytes, 2000);
    assert_eq!(passes.iter().map(|p| p.bytes).sum::<u64>(), 9000);
}

/// Replies no QEMU sends (issue 17: a peer sent dirty-sync-count = u64::MAX and `passes`
/// aborted allocating 2.28 GB; a jump to 1,000,000 invented a million passes; time and the
/// count going back ended as "completed" with a pass at -99.95 s): the reply is refused,
/// nothing after it is recorded, and the report is partial with the reason.
#[test]
fn replies_no_qemu_sends_end_the_report_partial_with_the_reason() {
    type Breaks<'a> = &'a dyn Fn(&mut MigrationInfo);
    let huge = |f: Breaks| {
        let mut t = Tracker::new();
        t.observe(&info("active", 1000, 1, 5000), 101.0);
        t.observe(&info("active", 1200, 2, 6000), 101.2);
        let mut bad = info("active", 1220, 2, 6100);
        f(&mut bad);
        t.observe(&bad, 101.22);
        // A later sane-looking reply is not taken either: the peer is not trusted any more.
        t.observe(&info("completed", 1500, 3, 7000), 101.5);
        let why = t.broken().map(str::to_string);
        let (passes, s) = t.finish(EndedBy::Implausible(why.clone().unwrap_or_default()));
        (why, passes, s)
    };
    let cases: [(&str, Breaks); 5] = [
        ("jumped", &|i| {
            i.ram.as_mut().unwrap().dirty_sync_count = u64::MAX
        }),
        ("jumped", &|i| {
            i.ram.as_mut().unwrap().dirty_sync_count = 1_000_000
        }),
        ("went back", &|i| i.total_time = Some(50)),
        ("went back", &|i| {
            i.ram.as_mut().unwrap().dirty_sync_count = 1
        }),
        ("any link", &|i| {
            i.ram.as_mut().unwrap().transferred = u64::MAX
        }),
    ];
    for (want, f) in cases {
        let (why, passes, s) = huge(f);
        let why = why.unwrap_or_else(|| panic!("not refused ({want})"));
        assert!(why.contains(want), "{why}");
        assert_eq!(passes.len(), 2, "{why}: {passes:?}");
        assert!(s.partial && s.status == "active", "{why}: {s:?}");
        assert_eq!(s.bytes, 6000, "{why}");
        assert!(passes.iter().all(|p| p.start_s >= 0.0 && p.end_s <= 1.2));
    }
    // u64::MAX total-time is refused too.
    let mut t = Tracker::new();
    t.observe(&info("active", u64::MAX, 1, 5000), 101.0);
    assert!(t.broken().unwrap().contains("ten years"));
}

/// What real QEMU 7.2 sends is never refused: the completion quirk (total-time 0 in the first
/// `completed` reply), a few syncs between two polls at the end, and attaching mid-migration.
#[test]
fn real_sequences_are_plausible() {
    let mut t = Tracker::new();
    t.observe(&info("active", 9000, 7, 900_000_000), 101.0);
    t.observe(&info("active", 9020, 9, 901_000_000), 101.02);
    t.observe(&info("completed", 0, 11, 902_000_000), 101.05);
    t.observe(&info("completed", 9050, 11, 902_000_000), 101.15);
    assert_eq!(t.broken(), None);
}

/// Issue 17: attached about 1 s into a migration, pass 1's eBPF bytes were 144 MiB against
/// 171 MiB sent, with no flag. The passes under way at a late attach are "not measured";
/// those that start after it are counted whole.
#[test]
fn a_late_attach_does_not_count_the_passes_it_joined() {
    let mut t = Tracker::new();
    t.attached_while_running();
    t.add_wire(0);
    t.observe(&info("active", 1000, 1, 5000), 101.0);
    t.add_wire(1000);
    t.observe(&info("active", 1200, 2, 6000), 101.2);
    t.add_wire(1000);
    t.observe(&info("active", 1400, 2, 7000), 101.4);
    let (passes, _) = t.finish(EndedBy::Signal("SIGINT".into()));
    assert_eq!(passes[0].wire_bytes_ebpf, None, "{passes:?}");
    assert_eq!(passes[1].wire_bytes_ebpf, Some(1000), "{passes:?}");
}
