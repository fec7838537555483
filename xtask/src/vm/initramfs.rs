//! Assembles the guest's initramfs: busybox-static with a symlink per applet, the `/init`
//! runner from `xtask/guest/init.sh`, the host binaries the tests need together with the
//! glibc libraries and dynamic loader that `ldd` names (copied to the same absolute paths),
//! repository files under `/repo`, and one directory per test under `/vm/tests/`.
use super::cpio::{Archive, Entry};
use super::host::BUSYBOX;
use super::spec::TestSpec;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// The guest `/init` script, compiled in so the harness cannot pick up a stale copy.
const INIT: &str = include_str!("../../guest/init.sh");

pub struct Built {
    pub bytes: u64,
    pub files: usize,
}

/// Builds the archive for `tests` into `out`. `bins` maps bin name -> host executable;
/// every one is installed as `/usr/local/bin/<name>`.
/// With `nested`, also the kvm modules, the host's QEMU and the inner guest
/// ([`super::nested`]).
pub fn build(
    root: &Path,
    tests: &[TestSpec],
    bins: &BTreeMap<String, std::path::PathBuf>,
    nested: Option<&super::nested::NestedKvm>,
    out: &Path,
) -> Result<Built> {
    let mut a = Archive::default();
    add_busybox(&mut a)?;
    a.add("init", Entry::Bytes(INIT.as_bytes().to_vec(), 0o755));
    a.add("dev/console", Entry::CharDev(5, 1));
    a.add("dev/null", Entry::CharDev(1, 3));
    for d in ["proc", "sys", "tmp", "run", "root", "repo", "sys/fs/bpf"] {
        a.add(d, Entry::Dir);
    }
    for (name, exe) in bins {
        add_executable(&mut a, exe, &format!("usr/local/bin/{name}"))?;
    }
    for t in tests {
        add_repo_files(&mut a, root, t)?;
    }
    for (i, t) in tests.iter().enumerate() {
        add_test_dir(&mut a, &format!("vm/tests/{:03}", i + 1), t);
    }
    if let Some(n) = nested {
        super::nested::add(&mut a, n)?;
    }

    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let bytes = a.write(std::io::BufWriter::with_capacity(1 << 20, file))?;
    Ok(Built {
        bytes,
        files: a.entry_count(),
    })
}

/// `/bin/busybox` and a symlink to it for each applet it lists.
pub fn add_busybox(a: &mut Archive) -> Result<()> {
    a.add(BUSYBOX, Entry::HostFile(BUSYBOX.into(), 0o755));
    let list = Command::new(BUSYBOX)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {BUSYBOX} --list-full (package busybox-static)"))?;
    if !list.status.success() {
        bail!("{BUSYBOX} --list-full failed: is {BUSYBOX} from busybox-static?");
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        a.add(applet, Entry::Symlink(BUSYBOX.into()));
    }
    Ok(())
}

/// The test's repository files at `/repo/<path>`, ELF executables with their libraries.
fn add_repo_files(a: &mut Archive, root: &Path, t: &TestSpec) -> Result<()> {
    for f in &t.files {
        let src = root.join(f);
        let meta = std::fs::metadata(&src)
            .with_context(|| format!("test {}: file {f} (looked for {})", t.name, src.display()))?;
        if meta.is_dir() {
            bail!("test {}: {f} is a directory; list files", t.name);
        }
        let guest = format!("repo/{f}");
        if is_elf(&src)? && meta.permissions().mode() & 0o111 != 0 {
            add_executable(a, &src, &guest)?;
        } else {
            a.add(
                &guest,
                Entry::HostFile(src, meta.permissions().mode() & 0o777),
            );
        }
    }
    Ok(())
}

/// The directory `/init` reads a test from: name, requires, timeout and run.sh.
fn add_test_dir(a: &mut Archive, dir: &str, t: &TestSpec) {
    let files = [
        ("name", t.name.clone(), 0o644),
        ("requires", t.requires.join(" "), 0o644),
        ("timeout", t.timeout_secs.to_string(), 0o644),
        ("run.sh", format!("{}\n", t.run), 0o755),
    ];
    for (name, text, mode) in files {
        a.add(
            &format!("{dir}/{name}"),
            Entry::Bytes(text.into_bytes(), mode),
        );
    }
}

fn is_elf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(f.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF")
}

/// Adds an executable at `guest` and every shared library `ldd` names at its own path.
pub fn add_executable(a: &mut Archive, exe: &Path, guest: &str) -> Result<()> {
    a.add(guest, Entry::HostFile(exe.to_path_buf(), 0o755));
    for lib in ldd(exe)? {
        if !a.contains(&lib) {
            a.add(&lib, Entry::HostFile(lib.clone().into(), 0o755));
        }
    }
    Ok(())
}

/// Shared libraries (and the loader) of a dynamically linked ELF; empty for a static one.
fn ldd(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("could not run ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        if text.contains("not a dynamic executable")
            || err.contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}{}", exe.display(), text, err);
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            bail!(
                "{}: shared library missing on the host: {line}",
                exe.display()
            );
        }
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest,
            None => line,
        };
        let path = path.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}
