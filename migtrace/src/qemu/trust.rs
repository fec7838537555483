//! Which processes `exporter --qemu` takes for QEMU guests. A process's name is whatever
//! its user chose (any user can start a program called `qemu-system-x86_64` with a `-name`
//! of their choosing), so a name is not enough: the process must belong to a trusted user
//! (root, and the users libvirt runs QEMU as: `libvirt-qemu` on Debian and Ubuntu, `qemu` on
//! Fedora and RHEL; `--qemu-user` replaces the list), and run an executable only root can
//! have put there (owned by root, writable by no one else, in a folder likewise). The
//! watches of what passes are capped (`--max-targets`); what is skipped is counted
//! (`migtrace_exporter_skipped_targets`), never silent.
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::Error;

/// The users whose QEMU processes are watched when `--qemu-user` is not given.
pub const DEFAULT_QEMU_USERS: [&str; 3] = ["root", "libvirt-qemu", "qemu"];

/// The uids of `names`. A name this host does not know is an error when the user gave it,
/// and passed over for the defaults (not every host has libvirt's users).
pub fn uids(names: &[String]) -> Result<HashSet<u32>, Error> {
    let (given, list): (bool, Vec<String>) = if names.is_empty() {
        (
            false,
            DEFAULT_QEMU_USERS.iter().map(|s| s.to_string()).collect(),
        )
    } else {
        (true, names.to_vec())
    };
    let mut out = HashSet::new();
    for n in &list {
        match nix::unistd::User::from_name(n) {
            Ok(Some(u)) => {
                out.insert(u.uid.as_raw());
            }
            _ if !given => {}
            Ok(None) => return Err(Error::Usage(format!("--qemu-user {n:?}: no such user"))),
            Err(e) => return Err(Error::Usage(format!("--qemu-user {n:?}: {e}"))),
        }
    }
    if given || !out.contains(&0) {
        out.insert(0);
    }
    Ok(out)
}

/// Why a process named like QEMU is not watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Untrusted {
    /// It belongs to a user not in the list.
    Owner(u32),
    /// Its executable (or the folder it is in) could be written by someone other than root.
    Executable(String),
    /// It could not be inspected (it exited, or /proc refused): what failed.
    Unreadable(String),
}

/// Processes whose name says QEMU system emulator: `qemu-system-*` (the kernel cuts
/// `qemu-system-x86_64` to `qemu-system-x86`), `qemu-kvm`, `kvm`.
pub fn named_like_qemu() -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(|p| p.ok())
        .filter(|p| p.stat().is_ok_and(|s| is_qemu_comm(&s.comm)))
        .map(|p| p.pid as u32)
        .collect()
}

/// `qemu-system-x86_64` (truncated by the kernel to `qemu-system-x86`) or `qemu-kvm`.
pub fn is_qemu_comm(c: &str) -> bool {
    c.starts_with("qemu-system") || c == "qemu-kvm" || c == "kvm"
}

/// Whether `pid` is a QEMU the exporter may watch: a trusted owner and a root-only executable.
pub fn check(pid: u32, users: &HashSet<u32>) -> Result<(), Untrusted> {
    let unreadable = |e: procfs::ProcError| Untrusted::Unreadable(e.to_string());
    let p = procfs::process::Process::new(pid as i32).map_err(unreadable)?;
    let uid = p.uid().map_err(unreadable)?;
    if !users.contains(&uid) {
        return Err(Untrusted::Owner(uid));
    }
    let exe = p.exe().map_err(unreadable)?;
    root_only(&exe)?;
    if let Some(dir) = exe.parent() {
        root_only(dir)?;
    }
    Ok(())
}

/// Owned by root and writable by no group or other user.
fn root_only(path: &Path) -> Result<(), Untrusted> {
    let md = std::fs::metadata(path)
        .map_err(|e| Untrusted::Unreadable(format!("{}: {e}", path.display())))?;
    if md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(Untrusted::Executable(path.display().to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_names() {
        assert!(is_qemu_comm("qemu-system-x86"));
        assert!(is_qemu_comm("qemu-kvm"));
        assert!(!is_qemu_comm("qemu-img"));
        assert!(!is_qemu_comm("bash"));
    }

    #[test]
    fn users_always_include_root_and_refuse_an_unknown_name() {
        let d = uids(&[]).unwrap();
        assert!(d.contains(&0));
        assert!(uids(&["no-such-user-migtrace".into()]).is_err());
        assert!(uids(&["root".into()]).unwrap().contains(&0));
    }

    /// The owner rule on this very process, and the executable rule on folders whose
    /// owner and mode every Debian host has: `/usr/bin` (root, 755) passes, `/tmp` (1777:
    /// anyone may plant a file there) does not.
    #[test]
    fn a_process_is_trusted_by_its_owner_and_executable() {
        let me = std::process::id();
        let uid = unsafe { libc::geteuid() };
        assert_eq!(
            check(me, &HashSet::from([u32::MAX])),
            Err(Untrusted::Owner(uid))
        );
        assert_eq!(root_only(Path::new("/usr/bin")), Ok(()));
        assert_eq!(
            root_only(Path::new("/tmp")),
            Err(Untrusted::Executable("/tmp".into()))
        );
    }
}
