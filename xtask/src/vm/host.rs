//! Host prerequisites of `cargo xtask vmtest`: finds the tools the harness runs (QEMU,
//! busybox-static, dpkg-deb, apt, ldd, tar) and installs the missing Debian packages with
//! `apt-get install -y` (after `apt-get update` on a machine whose package lists are empty),
//! so a fresh CI machine needs no manual setup. Nothing is installed when all are there.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tool the harness needs and the Debian package that provides it.
struct Need {
    /// What is checked: an executable on PATH, or (for busybox) an installed package.
    what: Check,
    package: &'static str,
}

enum Check {
    OnPath(&'static str),
    /// `/bin/busybox` must be the static build: the guest has no libraries for it.
    PackageInstalled,
}

const NEEDS: &[Need] = &[
    Need {
        what: Check::OnPath("qemu-system-x86_64"),
        package: "qemu-system-x86",
    },
    Need {
        what: Check::PackageInstalled,
        package: "busybox-static",
    },
    Need {
        what: Check::OnPath("dpkg-deb"),
        package: "dpkg",
    },
    Need {
        what: Check::OnPath("apt-get"),
        package: "apt",
    },
    Need {
        what: Check::OnPath("ldd"),
        package: "libc-bin",
    },
    Need {
        what: Check::OnPath("tar"),
        package: "tar",
    },
];

/// Path of the static busybox that busybox-static installs.
pub const BUSYBOX: &str = "/bin/busybox";

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn package_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", pkg])
        .output()
        .map(|o| o.status.success() && o.stdout == b"installed")
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// True when apt has no package lists yet (a fresh machine or container).
pub fn apt_lists_empty() -> bool {
    let dir = Path::new("/var/lib/apt/lists");
    match std::fs::read_dir(dir) {
        Ok(entries) => !entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages")),
        Err(_) => true,
    }
}

/// Runs a command, inheriting stdio, failing with the command line on a non-zero exit.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// `apt-get update`, non-interactive.
pub fn apt_update() -> Result<()> {
    println!("vmtest: running apt-get update");
    run_cmd(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Makes sure every host tool is there, installing the missing packages.
pub fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = NEEDS
        .iter()
        .filter(|n| match n.what {
            Check::OnPath(bin) => which(bin).is_none(),
            Check::PackageInstalled => !package_installed(n.package),
        })
        .map(|n| n.package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let fix = format!("apt-get update && apt-get install -y {}", missing.join(" "));
    if !is_root() {
        bail!(
            "missing host packages for the VM tests: {}; install them as root with: {fix}",
            missing.join(", ")
        );
    }
    if which("apt-get").is_none() {
        bail!(
            "missing host packages {} and no apt-get to install them",
            missing.join(", ")
        );
    }
    println!(
        "vmtest: installing missing host packages: {}",
        missing.join(" ")
    );
    if apt_lists_empty() {
        apt_update()?;
    }
    let install = || {
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    };
    if install().is_err() {
        // Stale lists are the usual cause: refresh once and retry.
        apt_update()?;
        install().with_context(|| format!("installing host packages failed; try: {fix}"))?;
    }
    Ok(())
}
