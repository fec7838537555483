//! Command lines as QEMU is really started: by hand, by libvirt, by Proxmox, by KubeVirt,
//! and the ones the tests in `tests/qemu.rs` start.
use super::*;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

#[test]
fn plain_tcg_guest_as_the_tests_start_it() {
    let c = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -name guest=g1,debug-threads=on -accel tcg -m 512 -smp 1 \
         -nodefaults -display none -no-reboot -serial file:/tmp/g1.log \
         -qmp unix:/tmp/g1.sock,server=on,wait=off -kernel /k -initrd /i \
         -append console=ttyS0",
    ))
    .unwrap();
    assert!(c.is_qemu_system);
    assert_eq!(c.name.as_deref(), Some("g1"));
    assert!(c.debug_threads);
    assert_eq!(c.accel, vec![Accel::Tcg]);
    assert_eq!(c.ram_bytes(), 512 * MIB);
    assert_eq!(c.cpus(), 1);
    assert!(c.backends.is_empty());
    assert_eq!(c.qmp_sockets, vec![PathBuf::from("/tmp/g1.sock")]);
    assert_eq!(c.incoming, None);
}

#[test]
fn proc_cmdline_bytes_are_nul_separated() {
    let raw = b"/usr/bin/qemu-system-x86_64\0-m\x00512\0-object\0memory-backend-memfd,id=ram0,size=512M,share=on\0-machine\0memory-backend=ram0\0";
    let c = QemuCmdline::from_proc_bytes(raw).unwrap();
    assert_eq!(c.binary, "/usr/bin/qemu-system-x86_64");
    let b = c.backend("ram0").unwrap();
    assert_eq!(b.kind, BackendKind::Memfd);
    assert_eq!(b.size_bytes, 512 * MIB);
    assert!(b.share);
    assert_eq!(c.machine_memory_backend.as_deref(), Some("ram0"));
    assert!(QemuCmdline::from_proc_bytes(b"").is_err());
}

#[test]
fn memfd_shares_by_default_ram_does_not() {
    let c = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -object memory-backend-memfd,id=a,size=1G \
         -object memory-backend-ram,id=b,size=1G -object memory-backend-memfd,id=c,size=1G,share=off",
    ))
    .unwrap();
    assert!(c.backend("a").unwrap().share);
    assert!(!c.backend("b").unwrap().share);
    assert!(!c.backend("c").unwrap().share);
}

/// A libvirt 9.x domain (Debian 12) with hugepages, NUMA and the monitor on an fd.
#[test]
fn libvirt_long_line_with_json_objects() {
    let c = QemuCmdline::parse(&[
        "/usr/bin/qemu-system-x86_64",
        "-name",
        "guest=db01,debug-threads=on",
        "-S",
        "-object",
        r#"{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/domain-3-db01/master-key.aes"}"#,
        "-machine",
        "pc-q35-7.2,usb=off,vmport=off,dump-guest-core=off,memory-backend=pc.ram,hpet=off,acpi=on",
        "-accel",
        "kvm",
        "-cpu",
        "host,migratable=on",
        "-m",
        "size=8388608k,slots=16,maxmem=16777216k",
        "-object",
        r#"{"qom-type":"memory-backend-file","id":"pc.ram","mem-path":"/dev/hugepages/libvirt/qemu/3-db01","prealloc":true,"size":8589934592}"#,
        "-overcommit",
        "mem-lock=off",
        "-smp",
        "4,maxcpus=8,sockets=8,dies=1,cores=1,threads=1",
        "-uuid",
        "8c9d7a34-2a1e-4f44-9e55-1a5d3ad4c9a1",
        "-no-user-config",
        "-nodefaults",
        "-chardev",
        "socket,id=charmonitor,fd=31,server=on,wait=off",
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
        "-rtc",
        "base=utc,driftfix=slew",
        "-no-shutdown",
        "-boot",
        "strict=on",
        "-device",
        r#"{"driver":"pcie-root-port","port":16,"chassis":1,"id":"pci.1","bus":"pcie.0","multifunction":true,"addr":"0x2"}"#,
        "-blockdev",
        r#"{"driver":"file","filename":"/var/lib/libvirt/images/db01.qcow2","node-name":"libvirt-1-storage","auto-read-only":true,"discard":"unmap"}"#,
        "-msg",
        "timestamp=on",
    ])
    .unwrap();
    assert_eq!(c.name.as_deref(), Some("db01"));
    assert_eq!(c.accel, vec![Accel::Kvm]);
    assert_eq!(c.machine_type.as_deref(), Some("pc-q35-7.2"));
    assert_eq!(c.machine_memory_backend.as_deref(), Some("pc.ram"));
    let m = c.memory.clone().unwrap();
    assert_eq!(
        (m.size_bytes, m.slots, m.maxmem_bytes),
        (8 * GIB, Some(16), Some(16 * GIB))
    );
    let smp = c.smp.clone().unwrap();
    assert_eq!((smp.cpus, smp.sockets, smp.maxcpus), (4, Some(8), Some(8)));
    assert_eq!(
        c.backends.len(),
        1,
        "the secret object is not a memory backend"
    );
    let b = c.backend("pc.ram").unwrap();
    assert_eq!(b.kind, BackendKind::File);
    assert_eq!(b.size_bytes, 8 * GIB);
    assert!(b.prealloc && b.hugetlb && !b.share);
    assert_eq!(
        b.mem_path.as_deref(),
        Some(std::path::Path::new("/dev/hugepages/libvirt/qemu/3-db01"))
    );
    // The monitor is an inherited fd: no path to connect to.
    assert_eq!(c.qmp_chardevs, vec!["charmonitor".to_string()]);
    assert_eq!(c.chardev_sockets[0].fd, Some(31));
    assert!(c.qmp_sockets.is_empty());
}

/// Proxmox VE 8 (`qm showcmd`): `/usr/bin/kvm`, NUMA with a RAM backend per node, QMP on
/// a chardev socket.
#[test]
fn proxmox_style() {
    let c = QemuCmdline::parse(&[
        "/usr/bin/kvm",
        "-id",
        "100",
        "-name",
        "web01,debug-threads=on",
        "-no-shutdown",
        "-chardev",
        "socket,id=qmp,path=/var/run/qemu-server/100.qmp,server=on,wait=off",
        "-mon",
        "chardev=qmp,mode=control",
        "-chardev",
        "socket,id=qmp-event,path=/var/run/qmeventd.sock,reconnect=5",
        "-mon",
        "chardev=qmp-event,mode=control",
        "-pidfile",
        "/var/run/qemu-server/100.pid",
        "-daemonize",
        "-smp",
        "4,sockets=2,cores=2,maxcpus=4",
        "-nodefaults",
        "-vnc",
        "unix:/var/run/qemu-server/100.vnc,password=on",
        "-cpu",
        "x86-64-v2-AES,+kvm_pv_eoi,+kvm_pv_unhalt",
        "-m",
        "4096",
        "-object",
        "memory-backend-ram,id=ram-node0,size=2048M",
        "-numa",
        "node,nodeid=0,cpus=0-1,memdev=ram-node0",
        "-object",
        "memory-backend-ram,id=ram-node1,size=2048M",
        "-numa",
        "node,nodeid=1,cpus=2-3,memdev=ram-node1",
        "-machine",
        "type=pc-i440fx-8.1+pve0,accel=kvm",
        "-incoming",
        "unix:/run/qemu-server/100.migrate",
        "-S",
    ])
    .unwrap();
    assert!(c.is_qemu_system, "/usr/bin/kvm is QEMU");
    assert_eq!(c.name.as_deref(), Some("web01"));
    assert!(c.debug_threads);
    assert_eq!(c.cpus(), 4);
    assert_eq!(c.ram_bytes(), 4 * GIB);
    assert_eq!(c.accel, vec![Accel::Kvm], "from -machine accel=");
    assert_eq!(c.machine_type.as_deref(), Some("pc-i440fx-8.1+pve0"));
    assert_eq!(c.backends.len(), 2);
    assert!(c
        .backends
        .iter()
        .all(|b| b.size_bytes == 2 * GIB && !b.share));
    assert_eq!(c.numa.len(), 2);
    assert_eq!(c.numa[1].memdev.as_deref(), Some("ram-node1"));
    assert_eq!(c.numa[1].cpus, vec!["2-3".to_string()]);
    assert_eq!(
        c.qmp_sockets,
        vec![
            PathBuf::from("/var/run/qemu-server/100.qmp"),
            PathBuf::from("/var/run/qmeventd.sock")
        ]
    );
    assert_eq!(
        c.incoming.as_deref(),
        Some("unix:/run/qemu-server/100.migrate")
    );
}

/// KubeVirt's virt-launcher (libvirt underneath, RHEL's qemu-kvm): memfd with share=on so
/// virtiofs and vhost-user can map guest RAM.
#[test]
fn kubevirt_style_memfd() {
    let c = QemuCmdline::parse(&[
        "/usr/libexec/qemu-kvm",
        "-name",
        "guest=default_vmi-fedora,debug-threads=on",
        "-S",
        "-machine",
        "pc-q35-rhel9.2.0,usb=off,dump-guest-core=off,memory-backend=pc.ram,acpi=on",
        "-accel",
        "kvm",
        "-cpu",
        "Skylake-Client-IBRS,ss=on,vmx=on",
        "-m",
        "size=2097152k",
        "-object",
        r#"{"qom-type":"memory-backend-memfd","id":"pc.ram","share":true,"x-use-canonical-path-for-ramblock-id":false,"size":2147483648}"#,
        "-overcommit",
        "mem-lock=off",
        "-smp",
        "1,sockets=1,dies=1,cores=1,threads=1",
        "-object",
        r#"{"qom-type":"iothread","id":"iothread1"}"#,
        "-chardev",
        "socket,id=charmonitor,fd=19,server=on,wait=off",
        "-mon",
        "chardev=charmonitor,id=monitor,mode=control",
        "-incoming",
        "defer",
    ])
    .unwrap();
    assert!(c.is_qemu_system);
    assert_eq!(c.name.as_deref(), Some("default_vmi-fedora"));
    assert_eq!(c.ram_bytes(), 2 * GIB);
    let b = c.backend("pc.ram").unwrap();
    assert_eq!(
        (b.kind, b.share, b.size_bytes),
        (BackendKind::Memfd, true, 2 * GIB)
    );
    assert!(!b.hugetlb);
    assert_eq!(c.incoming.as_deref(), Some("defer"));
    assert_eq!(c.cpus(), 1);
}

#[test]
fn accelerators_and_their_precedence() {
    let p = |s: &str| QemuCmdline::parse(&words(s)).unwrap().accel;
    assert_eq!(p("qemu-system-x86_64 -enable-kvm"), vec![Accel::Kvm]);
    assert_eq!(
        p("qemu-system-x86_64 -machine q35,accel=kvm:tcg"),
        vec![Accel::Kvm, Accel::Tcg]
    );
    assert_eq!(
        p("qemu-system-x86_64 -accel tcg,thread=multi"),
        vec![Accel::Tcg]
    );
    assert_eq!(
        p("qemu-system-x86_64 -accel kvm -accel tcg"),
        vec![Accel::Kvm, Accel::Tcg]
    );
    assert_eq!(
        p("qemu-system-x86_64 -accel xen"),
        vec![Accel::Other("xen".into())]
    );
    assert_eq!(p("qemu-system-x86_64 -m 1G"), Vec::<Accel>::new());
    assert_eq!(
        p("qemu-system-x86_64 --accel kvm"),
        vec![Accel::Kvm],
        "--opt works"
    );
}

#[test]
fn sizes_and_suffixes() {
    let m = |s: &str| {
        QemuCmdline::parse(&["qemu-system-x86_64", "-m", s])
            .unwrap()
            .ram_bytes()
    };
    assert_eq!(m("512"), 512 * MIB, "a bare -m is MiB");
    assert_eq!(m("2G"), 2 * GIB);
    assert_eq!(m("2g"), 2 * GIB);
    assert_eq!(m("1.5G"), 3 * GIB / 2);
    assert_eq!(m("524288k"), 512 * MIB);
    assert_eq!(m("size=1024M,slots=4,maxmem=8G"), GIB);
    assert_eq!(
        QemuCmdline::parse(&["qemu-system-x86_64"])
            .unwrap()
            .ram_bytes(),
        128 * MIB
    );
    assert_eq!(parse_size("536870912", Unit::Bytes).unwrap(), 512 * MIB);
    assert!(parse_size("12X", Unit::Bytes).is_err());
    assert!(parse_size("99999999999E", Unit::Bytes).is_err());
    assert!(QemuCmdline::parse(&["qemu-system-x86_64", "-m", "lots"]).is_err());
    assert!(
        QemuCmdline::parse(&["qemu-system-x86_64", "-m"]).is_err(),
        "-m without value"
    );
}

#[test]
fn smp_topology_gives_cpus() {
    let s = |v: &str| {
        QemuCmdline::parse(&["qemu-system-x86_64", "-smp", v])
            .unwrap()
            .cpus()
    };
    assert_eq!(s("4"), 4);
    assert_eq!(s("cpus=2"), 2);
    assert_eq!(s("sockets=2,cores=4,threads=2"), 16);
    assert_eq!(s("8,sockets=1,cores=8"), 8);
    assert_eq!(
        QemuCmdline::parse(&["qemu-system-x86_64"]).unwrap().cpus(),
        1
    );
}

#[test]
fn numa_memdevs_and_legacy_mem() {
    let c = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -m 512 -smp 2 \
         -object memory-backend-ram,id=m0,size=256M -object memory-backend-ram,id=m1,size=256M \
         -numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1 \
         -numa dist,src=0,dst=1,val=20",
    ))
    .unwrap();
    assert_eq!(c.numa.len(), 2, "-numa dist is not a node");
    assert_eq!(c.numa[0].memdev.as_deref(), Some("m0"));
    assert_eq!(c.numa[0].nodeid, Some(0));
    let legacy = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -m 1G -numa node,mem=512M -numa node,mem=512M",
    ))
    .unwrap();
    assert_eq!(legacy.numa[1].mem_bytes, Some(512 * MIB));
    assert_eq!(legacy.numa[1].memdev, None);
}

#[test]
fn file_and_hugetlb_backends() {
    let c = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -m 1G \
         -object memory-backend-file,id=f0,size=1G,mem-path=/dev/shm/vm.ram,share=on,prealloc=on \
         -object memory-backend-memfd,id=h0,size=1G,hugetlb=on,hugetlbsize=2M \
         -mem-path /hugepages -mem-prealloc",
    ))
    .unwrap();
    let f = c.backend("f0").unwrap();
    assert!(f.share && f.prealloc && !f.hugetlb);
    assert!(c.backend("h0").unwrap().hugetlb);
    assert_eq!(
        c.mem_path.as_deref(),
        Some(std::path::Path::new("/hugepages"))
    );
    assert!(c.mem_prealloc);
}

#[test]
fn old_style_flags_and_escaped_commas() {
    let c = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -name my,,vm -qmp unix:/run/q.sock,server,nowait \
         -chardev socket,id=c0,path=/run/c,,0.sock,server,nowait -mon chardev=c0,mode=readline",
    ))
    .unwrap();
    assert_eq!(c.name.as_deref(), Some("my,vm"));
    assert!(!c.debug_threads);
    assert_eq!(c.qmp_sockets, vec![PathBuf::from("/run/q.sock")]);
    let s = &c.chardev_sockets[0];
    assert_eq!(
        s.path.as_deref(),
        Some(std::path::Path::new("/run/c,0.sock"))
    );
    assert!(s.server);
    assert!(
        c.qmp_chardevs.is_empty(),
        "a readline (HMP) monitor is not QMP"
    );
}

#[test]
fn not_qemu() {
    let c = QemuCmdline::parse(&words("/usr/bin/python3 -m http.server")).unwrap();
    assert!(!c.is_qemu_system);
    assert!(
        !QemuCmdline::parse(&words("/usr/bin/qemu-img info x"))
            .unwrap()
            .is_qemu_system
    );
    assert!(
        QemuCmdline::parse(&words("/opt/qemu/bin/qemu-system-aarch64 -M virt"))
            .unwrap()
            .is_qemu_system
    );
}

#[test]
fn bad_values_are_errors_naming_the_option() {
    let e = QemuCmdline::parse(&words("qemu-system-x86_64 -smp cpus=four")).unwrap_err();
    assert!(format!("{e:#}").contains("-smp cpus=four"), "{e:#}");
    let e = QemuCmdline::parse(&words(
        "qemu-system-x86_64 -object memory-backend-ram,id=x,size=1G,share=maybe",
    ))
    .unwrap_err();
    assert!(format!("{e:#}").contains("share=maybe"), "{e:#}");
    assert!(QemuCmdline::parse(&words(
        "qemu-system-x86_64 -object memory-backend-ram,size=1G"
    ))
    .is_err());
}
