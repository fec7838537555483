//! The finder on `/proc/PID/maps` captured from real QEMU 7.2.22 TCG guests (Debian 12
//! package) running `migtrace writer` inside: `migtrace/tests/fixtures/qemu/NAME.{maps,
//! cmdline,memdev.json}` (see docs/qemu.md for how they were made).
use super::*;

const MIB: u64 = 1 << 20;

struct Fixture {
    cmdline: QemuCmdline,
    maps: String,
    memdevs: Vec<Memdev>,
}

fn fixture(name: &str) -> Fixture {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qemu");
    let read = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).unwrap();
    let memdev: serde_json::Value = serde_json::from_slice(&read("memdev.json")).unwrap();
    Fixture {
        cmdline: QemuCmdline::from_proc_bytes(&read("cmdline")).unwrap(),
        maps: String::from_utf8(read("maps")).unwrap(),
        memdevs: serde_json::from_value(memdev["return"].clone()).unwrap(),
    }
}

fn check_both_ways(f: &Fixture) -> GuestRam {
    let from_cmdline = find_guest_ram(&f.cmdline, &f.maps, None).unwrap();
    let from_qmp = find_guest_ram(&f.cmdline, &f.maps, Some(&f.memdevs)).unwrap();
    assert_eq!(
        from_cmdline.blocks, from_qmp.blocks,
        "QMP and the command line agree"
    );
    from_cmdline
}

#[test]
fn default_m512_is_one_private_anonymous_block() {
    let g = check_both_ways(&fixture("m512"));
    assert_eq!(g.size_bytes, 512 * MIB);
    assert_eq!(g.blocks.len(), 1);
    let b = &g.blocks[0];
    assert_eq!(
        (b.name.as_str(), b.shared, b.kind),
        ("pc.ram", false, BackendKind::Ram)
    );
    assert!(
        b.start.is_multiple_of(2 * MIB),
        "QEMU aligns anonymous RAM to 2 MiB"
    );
    // What else QEMU holds: the 1 GiB TCG buffer (single-threaded TCG: one region), the
    // heap, ROMs and the ACPI tables.
    assert_eq!(
        g.excluded_bytes(Exclusion::TcgCodeBuffer),
        1024 * MIB - 4096
    );
    assert!(g.excluded_bytes(Exclusion::Heap) > MIB);
    let roms: Vec<u64> = g
        .excluded
        .iter()
        .filter(|e| e.reason == Exclusion::SmallRamBlock)
        .map(|e| e.region.len())
        .collect();
    for size in [256 << 10, 128 << 10] {
        assert!(
            roms.contains(&size),
            "pc.bios (256 KiB) and pc.rom (128 KiB): {roms:?}"
        );
    }
    assert!(g.notes.is_empty(), "{:?}", g.notes);
}

#[test]
fn memfd_share_on_is_one_shared_block() {
    let g = check_both_ways(&fixture("memfd"));
    assert_eq!(g.size_bytes, 512 * MIB);
    let b = &g.blocks[0];
    assert_eq!(
        (b.name.as_str(), b.shared, b.kind),
        ("ram0", true, BackendKind::Memfd)
    );
    assert_eq!(b.backend_id.as_deref(), Some("ram0"));
    assert!(g.excluded.iter().all(|e| e.region.len() != 512 * MIB));
}

#[test]
fn numa_ram_backends_in_creation_order() {
    let f = fixture("numa");
    let g = check_both_ways(&f);
    assert_eq!(g.size_bytes, 512 * MIB);
    let names: Vec<&str> = g.blocks.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["m0", "m1"]);
    // m0 was created first and got the higher address (checked with HMP gpa2hva).
    assert!(g.blocks[0].start > g.blocks[1].start);
    assert!(g.blocks.iter().all(|b| !b.shared && b.len() == 256 * MIB));
    assert_eq!(
        g.notes.len(),
        1,
        "the choice between equal blocks is explained"
    );
    // Multi-threaded TCG (-smp 2) splits the buffer into regions with guard pages.
    assert!(g.excluded_bytes(Exclusion::TcgCodeBuffer) > 900 * MIB);
}

#[test]
fn file_backend_on_dev_shm() {
    let g = check_both_ways(&fixture("file"));
    let b = &g.blocks[0];
    assert_eq!(
        (b.name.as_str(), b.shared, b.kind),
        ("f0", true, BackendKind::File)
    );
    assert_eq!(g.size_bytes, 512 * MIB);
}

#[test]
fn a_missing_block_is_unsupported_and_named() {
    let f = fixture("m512");
    let wrong = QemuCmdline::parse(&["qemu-system-x86_64", "-m", "1G"]).unwrap();
    let e = find_guest_ram(&wrong, &f.maps, None).unwrap_err();
    assert!(
        matches!(e.downcast_ref::<Error>(), Some(Error::Unsupported(_))),
        "{e:#}"
    );
    assert!(format!("{e}").contains("pc.ram"), "{e}");
    // The memfd guest's RAM is shared: a private block of that size is not it.
    let memfd = fixture("memfd");
    assert!(find_guest_ram(&wrong, &memfd.maps, None).is_err());
}

#[test]
fn maps_lines_parse_and_merge() {
    let text = "7fa0afe00000-7fa0bfe00000 rw-p 00000000 00:00 0 \n\
                7fa0bfe00000-7fa0cfe00000 rw-p 00000000 00:00 0 \n\
                7fa0cfe00000-7fa0cfe01000 ---p 00000000 00:00 0 \n\
                7fbae3fff000-7fbb03fff000 rw-s 00000000 00:01 27                         /memfd:memory-backend-memfd (deleted)\n";
    let r = parse_maps(text).unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(
        r[3].path.as_deref(),
        Some("/memfd:memory-backend-memfd (deleted)")
    );
    assert!(r[3].shared() && !r[0].shared());
    let m = merge_adjacent(&r);
    assert_eq!(m.len(), 3, "a split anonymous mapping is one again");
    assert_eq!(m[0].len(), 512 * MIB);
    assert!(parse_maps("nonsense\n").is_err());
    assert!(parse_maps("zz-10 rw-p 0 00:00 0\n").is_err());
}

#[test]
fn smaps_fields() {
    let smaps = "7f89b7e00000-7f89d7e00000 rw-p 00000000 00:00 0 \n\
                 Size:             524288 kB\n\
                 Rss:              305152 kB\n\
                 AnonHugePages:    305152 kB\n\
                 VmFlags: rd wr mr mw me dc ac hg mg \n\
                 7f89d7e00000-7f89d7e01000 ---p 00000000 00:00 0 \n\
                 Rss:                   0 kB\n";
    assert_eq!(
        smaps_field(smaps, 0x7f89b7e00000, "AnonHugePages"),
        Some(305152 * 1024)
    );
    assert_eq!(smaps_field(smaps, 0x7f89d7e00000, "Rss"), Some(0));
    assert_eq!(smaps_field(smaps, 0x7f89d7e00000, "AnonHugePages"), None);
    assert_eq!(smaps_field(smaps, 0x1000, "Rss"), None);
}
/// A neighbour with the same permissions but other flags (a separate VMA) is not glued to
/// guest RAM, and guest RAM split into two VMAs is found whole.
#[test]
fn adjacent_vmas_are_joined_only_when_needed() {
    let c = QemuCmdline::parse(&["qemu-system-x86_64", "-m", "512"]).unwrap();
    let neighbour = "7f5329c00000-7f5329e00000 rw-p 00000000 00:00 0 \n\
                     7f5329e00000-7f5349e00000 rw-p 00000000 00:00 0 \n\
                     7f5349e00000-7f5349e01000 ---p 00000000 00:00 0 \n";
    let g = find_guest_ram(&c, neighbour, None).unwrap();
    assert_eq!(
        (g.blocks[0].start, g.size_bytes),
        (0x7f5329e00000, 512 * MIB)
    );
    assert!(g.notes.is_empty(), "{:?}", g.notes);
    let split = "7f5329e00000-7f5339e00000 rw-p 00000000 00:00 0 \n\
                 7f5339e00000-7f5349e00000 rw-p 00000000 00:00 0 \n\
                 7f5349e00000-7f5349e01000 ---p 00000000 00:00 0 \n";
    let g = find_guest_ram(&c, split, None).unwrap();
    assert_eq!(
        (g.blocks[0].start, g.blocks[0].end),
        (0x7f5329e00000, 0x7f5349e00000)
    );
    assert_eq!(g.notes.len(), 1, "{:?}", g.notes);
}

#[test]
fn two_vcpus_split_the_tcg_buffer_into_regions() {
    let g = check_both_ways(&fixture("m512-smp2"));
    assert_eq!(g.size_bytes, 512 * MIB);
    assert_eq!(g.blocks[0].name, "pc.ram");
    let regions = g
        .excluded
        .iter()
        .filter(|e| e.reason == Exclusion::TcgCodeBuffer)
        .count();
    assert_eq!(
        regions, 16,
        "1 GiB in 64 MiB regions, a guard page after each"
    );
    assert_eq!(
        g.excluded_bytes(Exclusion::TcgCodeBuffer),
        1024 * MIB - 16 * 4096
    );
}
