//! Nested KVM for the VM tests (a spec with `"boot": {"nested_kvm": true}`, docs/vmtest.md):
//! these machines have no VMX/SVM, but QEMU 7.2's TCG emulates AMD SVM with nested paging,
//! so a real KVM runs inside the TCG guest (L1) and a QEMU with `-accel kvm` (L2) inside that
//! (the recipe measured in docs/platform.md).
//!
//! What this adds to L1's initramfs:
//! - `/vm/kvm/*.ko`: `irqbypass`, `ccp`, `kvm`, `kvm-amd` from the Debian kernel package (the
//!   `.deb` the kernel cache keeps), and `/vm/kvm/modules`, the order `/init` loads them in;
//! - the host's `qemu-system-x86_64` at its own path with its libraries, the TCG accelerator
//!   module QEMU loads at start, SeaBIOS and the option ROMs a `-kernel` boot needs;
//! - `/vm/l2/vmlinuz` and `/vm/l2/initramfs.cpio`: the inner guest, the `cargo xtask
//!   guest-image` writer guest (its `/init` runs `migtrace writer` with the arguments of its
//!   kernel command line), built into `target/vmtest/l2/` and rebuilt only when its inputs
//!   change.
use super::cpio::{Archive, Entry};
use super::{guest_image, initramfs, kernel, kernel::Kernel};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The kvm modules in the order `insmod` must load them (each needs the ones before it),
/// as paths inside the kernel package.
const MODULES: &[&str] = &[
    "kernel/virt/lib/irqbypass.ko",
    "kernel/drivers/crypto/ccp/ccp.ko",
    "kernel/arch/x86/kvm/kvm.ko",
    "kernel/arch/x86/kvm/kvm-amd.ko",
];

/// What QEMU needs besides its binary: the accelerator module it loads at start (also with
/// `-accel kvm`), the BIOS and the option ROMs of a `-kernel` boot.
const QEMU_FILES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so",
    "/usr/share/seabios/bios-256k.bin",
    "/usr/share/seabios/bios.bin",
    "/usr/share/qemu/linuxboot_dma.bin",
    "/usr/share/qemu/linuxboot.bin",
    "/usr/share/qemu/kvmvapic.bin",
    "/usr/share/qemu/multiboot.bin",
    "/usr/share/qemu/multiboot_dma.bin",
    "/usr/share/qemu/pvh.bin",
];

const QEMU: &str = "/usr/bin/qemu-system-x86_64";

/// Everything a nested boot adds, found and built on the host.
pub struct NestedKvm {
    /// Unpacked kvm modules, in load order.
    pub modules: Vec<PathBuf>,
    /// The inner guest.
    pub l2: guest_image::GuestImage,
}

/// Unpacks the kvm modules (once per kernel) and builds the inner guest (when its inputs
/// changed). `writer` is the release migtrace the inner guest runs.
pub fn prepare(kernel: &Kernel, vmdir: &Path, writer: &Path) -> Result<NestedKvm> {
    let modules = kvm_modules(kernel)?;
    let l2 = guest_image::build_cached(writer, &vmdir.join("l2"))?;
    Ok(NestedKvm { modules, l2 })
}

/// The kvm modules of `kernel`, unpacked from its kept `.deb` into
/// `<kernel dir>/modules/` the first time (a stamp marks a complete unpack).
fn kvm_modules(kernel: &Kernel) -> Result<Vec<PathBuf>> {
    let dir = kernel
        .vmlinuz
        .parent()
        .and_then(Path::parent)
        .context("kernel directory")?;
    let out = dir.join("modules");
    let base = format!("lib/modules/{}", kernel.release);
    let paths: Vec<PathBuf> = MODULES.iter().map(|m| out.join(&base).join(m)).collect();
    let stamp = out.join(".unpacked");
    if stamp.exists() && paths.iter().all(|p| p.is_file()) {
        return Ok(paths);
    }
    let deb = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| {
            format!(
                "no .deb of {} in {}: delete that directory to fetch the kernel again",
                kernel.package,
                dir.display()
            )
        })?;
    println!(
        "vmtest: unpacking the kvm modules of {} into {}",
        deb.display(),
        out.display()
    );
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    // `dpkg-deb --fsys-tarfile X | tar -x <the four modules>`: 4 files, not 400 MB of modules.
    let members = MODULES.iter().map(|m| format!("./{base}/{m}"));
    let (tar, dpkg_status) = kernel::untar_deb(&deb, &out, members)?;
    // dpkg-deb may die of SIGPIPE once tar has what it wants: only tar's status matters.
    if !tar.success() {
        bail!(
            "unpacking the kvm modules from {} failed (tar {tar}, dpkg-deb {dpkg_status})",
            deb.display()
        );
    }
    for p in &paths {
        if !p.is_file() {
            bail!("{} is not in {}", p.display(), deb.display());
        }
    }
    std::fs::write(&stamp, b"")?;
    Ok(paths)
}

/// Adds the modules, QEMU and the inner guest to L1's initramfs.
pub fn add(a: &mut Archive, n: &NestedKvm) -> Result<()> {
    let mut order = String::new();
    for m in &n.modules {
        let name = m.file_name().expect("file name").to_string_lossy();
        a.add(&format!("vm/kvm/{name}"), Entry::HostFile(m.clone(), 0o644));
        order.push_str(&format!("{name}\n"));
    }
    a.add("vm/kvm/modules", Entry::Bytes(order.into_bytes(), 0o644));
    if !Path::new(QEMU).is_file() {
        bail!("{QEMU} is missing (package qemu-system-x86)");
    }
    initramfs::add_executable(a, Path::new(QEMU), QEMU)?;
    for f in QEMU_FILES {
        let p = Path::new(f);
        if !p.exists() {
            bail!("{f} is missing: nested KVM needs it (packages qemu-system-x86, seabios)");
        }
        if f.ends_with(".so") {
            initramfs::add_executable(a, p, f)?;
        } else {
            // Some are symlinks on the host: copy the contents.
            a.add(f, Entry::HostFile(p.canonicalize()?, 0o644));
        }
    }
    a.add("vm/l2/vmlinuz", Entry::HostFile(n.l2.kernel.clone(), 0o644));
    a.add(
        "vm/l2/initramfs.cpio",
        Entry::HostFile(n.l2.initrd.clone(), 0o644),
    );
    Ok(())
}
