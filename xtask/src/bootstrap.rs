//! Idempotent bootstrap of the build and test prerequisites:
//! - the nightly toolchain's `rust-src` (for `-Z build-std=core` on the BPF target);
//! - `bpf-linker`, built from crates.io against the nightly's own LLVM (no prebuilt binary
//!   can be downloaded here; see `docs/platform.md`), cached in `target/bpf-toolchain/`;
//! - the list of Debian packages the tests use (installed by [`crate::sys::ensure_packages`]).
//!
//! Each step checks first and does nothing when already satisfied. A failure names what is
//! missing and the command that fixes it.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result};

use crate::{
    root,
    sys::{output, run},
};

/// bpf-linker release built against LLVM 22 (the nightly's).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the test suite needs. `prometheus` (the server and `promtool`) is run
/// directly by `tests/export.rs`, with its own config and storage in a temporary directory.
pub const TEST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "util-linux",
    "prometheus",
];

pub struct EbpfToolchain {
    pub bin_dir: PathBuf,
}

impl EbpfToolchain {
    /// PATH with the cached bpf-linker first.
    pub fn path_with_linker(&self) -> OsString {
        let mut paths = vec![self.bin_dir.clone()];
        if let Some(p) = std::env::var_os("PATH") {
            paths.extend(std::env::split_paths(&p));
        }
        std::env::join_paths(paths).unwrap()
    }
}

/// Nightly components the eBPF crate needs: rust-src for `-Z build-std=core`, rustfmt and
/// clippy for the checks of `cargo xtask test`.
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "rustfmt", "clippy"];

/// Makes sure nightly, its components and bpf-linker are there; returns where bpf-linker is.
pub fn ensure_ebpf_toolchain() -> Result<EbpfToolchain> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).context(
        "the nightly toolchain is missing: it is needed to build the eBPF programs (rustup toolchain install nightly)",
    )?;
    let sysroot = PathBuf::from(sysroot.trim());
    ensure_nightly_components()?;

    let tc = root().join("target/bpf-toolchain");
    let bin_dir = tc.join("bin");
    let linker = bin_dir.join("bpf-linker");
    let ok = Command::new(&linker)
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false);
    if !ok {
        build_bpf_linker(&sysroot, &tc)?;
    }
    Ok(EbpfToolchain { bin_dir })
}

/// Adds the missing [`NIGHTLY_COMPONENTS`] to the nightly toolchain.
fn ensure_nightly_components() -> Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    // Installed components are listed as `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
    let missing: Vec<&str> = NIGHTLY_COMPONENTS
        .iter()
        .copied()
        .filter(|c| {
            !installed
                .lines()
                .any(|l| l == *c || l.starts_with(&format!("{c}-")))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    eprintln!("xtask: installing the nightly components {list}");
    run(Command::new("rustup")
        .args(["component", "add", "--toolchain", "nightly"])
        .args(&missing))
    .with_context(|| {
        format!("could not add {list} (rustup component add --toolchain nightly {list})")
    })
}

/// Builds bpf-linker against the nightly's libLLVM: a folder whose `lib/` links to the
/// library under both `libLLVM.so` and its own name, passed as LLVM_PREFIX. The binary keeps
/// an rpath to that folder, which is why it lives in `target/bpf-toolchain/llvm`.
fn build_bpf_linker(sysroot: &Path, tc: &Path) -> Result<()> {
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the nightly sysroot")?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so"))
            })
        })
        .context(
            "the nightly toolchain has no libLLVM shared library to build bpf-linker against",
        )?;
    let llvm_lib = tc.join("llvm/lib");
    std::fs::create_dir_all(&llvm_lib)?;
    for name in [
        "libLLVM.so".to_string(),
        lib.file_name().unwrap().to_string_lossy().into_owned(),
    ] {
        let link = llvm_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)?;
    }
    // The LLVM major version picks bpf-linker's feature (llvm-22 for LLVM 22).
    let major = lib
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
        })
        .context("cannot tell the LLVM version of the nightly toolchain")?
        .to_string();
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} (about 2 minutes, once)");
    run(Command::new("cargo")
        .env("LLVM_PREFIX", tc.join("llvm"))
        .env_remove("RUSTUP_TOOLCHAIN")
        // --force: a linker left over from another nightly (whose libLLVM is gone) counts as
        // installed for cargo, but cannot start.
        .args(["install", "--force", "--root"])
        .arg(tc)
        .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ]))
    .context("building bpf-linker failed (needs crates.io and a nightly toolchain with libLLVM)")
}
