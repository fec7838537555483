//! `cargo xtask guest-image`: a bootable guest (Debian 12's 6.1 kernel plus an initramfs)
//! that runs migtrace's built-in writer, for the tests that watch a real QEMU from the host
//! (`tests/qemu.rs`). Reuses the vmtest kernel cache ([`super::kernel`]) and archive code
//! ([`super::initramfs`], [`super::cpio`]); the guest's `/init` is
//! `xtask/guest/writer-init.sh`, which reads the writer's arguments from the kernel
//! command line, so one image serves every rate and working set.
use super::cpio::{Archive, Entry};
use super::{host, initramfs, kernel};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The guest `/init`, compiled in so a stale copy cannot be picked up.
const INIT: &str = include_str!("../../guest/writer-init.sh");

/// Where the image went; printed as one JSON line and written to `<out>/image.json`.
#[derive(Debug, serde::Serialize)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub release: String,
    pub writer: PathBuf,
}

/// Fetches the kernel (cached) and writes `<out>/initramfs.cpio` with busybox, the writer
/// init and `writer` (a migtrace binary, with its libraries) as `/usr/local/bin/migtrace`.
/// Prints the image as one JSON line.
pub fn build(writer: &Path, out: &Path) -> Result<GuestImage> {
    let image = build_cached(writer, out)?;
    println!("{}", serde_json::to_string(&image)?);
    Ok(image)
}

/// What the image is made of: when `<out>/inputs` still says this, the archive is not
/// written again (a 48 MiB archive takes a while under load; the nested VM tests ask for it
/// on every run).
fn inputs(writer: &Path, kernel: &kernel::Kernel) -> String {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .map(|m| {
                let t = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                format!("{} {} {t}", p.display(), m.len())
            })
            .unwrap_or_default()
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(INIT, &mut h);
    format!(
        "format 1\ninit {:x}\nwriter {}\nbusybox {}\nkernel {}\n",
        std::hash::Hasher::finish(&h),
        stat(writer),
        stat(Path::new(host::BUSYBOX)),
        stat(&kernel.vmlinuz)
    )
}

/// [`build`] without the JSON line, and without writing the archive again when its inputs
/// (writer binary, `/init`, busybox, kernel) are unchanged.
pub fn build_cached(writer: &Path, out: &Path) -> Result<GuestImage> {
    if !writer.is_file() {
        bail!(
            "--writer {}: no such file (build migtrace first: cargo build --release -p migtrace)",
            writer.display()
        );
    }
    let writer = &writer.canonicalize()?;
    host::ensure_tools()?;
    let root = crate::root();
    // The vmtest kernel cache, wherever CARGO_TARGET_DIR puts it.
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let kernel = kernel::ensure(&target.join("vmtest/kernel"))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let initrd = out.join("initramfs.cpio");
    let image = GuestImage {
        kernel: kernel.vmlinuz.clone(),
        initrd: initrd.clone(),
        release: kernel.release.clone(),
        writer: writer.to_path_buf(),
    };
    let stamp = out.join("inputs");
    let made_of = inputs(writer, &kernel);
    if initrd.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == made_of) {
        return Ok(image);
    }
    let _ = std::fs::remove_file(&stamp);
    let mut a = Archive::default();
    initramfs::add_busybox(&mut a)?;
    a.add("init", Entry::Bytes(INIT.as_bytes().to_vec(), 0o755));
    a.add("dev/console", Entry::CharDev(5, 1));
    a.add("dev/null", Entry::CharDev(1, 3));
    for d in ["proc", "sys", "tmp", "root"] {
        a.add(d, Entry::Dir);
    }
    initramfs::add_executable(&mut a, writer, "usr/local/bin/migtrace")?;
    // Write to a temporary name and rename, so a test that reads the image concurrently
    // never sees half an archive.
    let tmp = out.join(format!("initramfs.cpio.{}", std::process::id()));
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    a.write(std::io::BufWriter::with_capacity(1 << 20, file))?;
    std::fs::rename(&tmp, &initrd)?;
    let json = serde_json::to_string(&image)?;
    std::fs::write(out.join("image.json"), format!("{json}\n"))?;
    std::fs::write(&stamp, made_of)?;
    Ok(image)
}
