//! The system helpers every xtask command shares: the root check, `which`, running a command
//! with its command line in the error, and idempotent Debian package installation (one
//! `apt-get update` at most per run, and only when it can help).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context, Result};

/// True when this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs a command with inherited stdio; fails with its command line when it cannot start or
/// exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Runs a command and returns its stdout (stderr goes to ours); fails like [`run`].
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// True when dpkg has `pkg` installed.
pub fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| o.status.success() && o.stdout == b"installed")
        .unwrap_or(false)
}

/// True when apt has no package lists yet (a fresh machine or container).
fn apt_lists_empty() -> bool {
    match std::fs::read_dir(Path::new("/var/lib/apt/lists")) {
        Ok(entries) => !entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages")),
        Err(_) => true,
    }
}

/// Set once `apt-get update` has run in this process: a second one would fetch the same lists.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// `apt-get update`, non-interactive, at most once per run. Returns false when it had already
/// run (so a retry after it cannot help).
pub fn apt_update() -> Result<bool> {
    if APT_UPDATED.swap(true, Ordering::SeqCst) {
        return Ok(false);
    }
    eprintln!("xtask: running apt-get update");
    run(Command::new("apt-get")
        .args(["update", "-q"])
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("apt-get update")?;
    Ok(true)
}

/// Runs `attempt`; when it fails and an `apt-get update` has not run yet, runs one (stale
/// package lists are the usual cause) and tries again.
pub fn with_apt_retry(mut attempt: impl FnMut() -> Result<()>) -> Result<()> {
    match attempt() {
        Ok(()) => Ok(()),
        Err(e) if !apt_update()? => Err(e),
        Err(_) => attempt(),
    }
}

/// Installs the Debian packages of `pkgs` that are not installed yet; nothing happens when all
/// are. `why` says what needs them, for the messages.
pub fn ensure_packages(pkgs: &[&str], why: &str) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    install(&missing, why)
}

/// Installs `missing` (packages already known to be missing) with `apt-get install -y`;
/// nothing happens when it is empty. Without root it fails with the command that would fix it.
pub fn install(missing: &[&str], why: &str) -> Result<()> {
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    let fix = format!("apt-get update && apt-get install -y {list}");
    if !is_root() {
        bail!("missing Debian packages for {why}: {list}; install them as root with: {fix}");
    }
    if which("apt-get").is_none() {
        bail!("missing Debian packages for {why}: {list}, and no apt-get to install them");
    }
    eprintln!("xtask: installing Debian packages for {why}: {list}");
    if apt_lists_empty() {
        apt_update()?;
    }
    with_apt_retry(|| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    })
    .with_context(|| format!("could not install {list}; try: {fix}"))
}
