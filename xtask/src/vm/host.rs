//! Host prerequisites of `cargo xtask vmtest`: finds the tools the harness runs (QEMU,
//! busybox-static, dpkg-deb, apt, ldd, tar) and installs the missing Debian packages through
//! [`sys::install`], so a fresh CI machine needs no manual setup. Nothing is installed when
//! all are there.
use crate::sys;
use anyhow::Result;

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

/// Makes sure every host tool is there, installing the missing packages.
pub fn ensure_tools() -> Result<()> {
    let missing: Vec<&str> = NEEDS
        .iter()
        .filter(|n| match n.what {
            Check::OnPath(bin) => sys::which(bin).is_none(),
            Check::PackageInstalled => !sys::package_installed(n.package),
        })
        .map(|n| n.package)
        .collect();
    sys::install(&missing, "the VM tests")
}
