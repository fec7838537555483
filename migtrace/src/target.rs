//! The watched process: existence and permission checks, its memory map, RSS, threads and
//! their CPU time, and a pidfd to learn when it exits. Everything here reads `/proc` only;
//! migtrace never writes to the target's memory.
use std::{
    fs,
    io::ErrorKind,
    os::fd::{FromRawFd, OwnedFd},
    path::PathBuf,
};

use anyhow::{Context, Result};

use crate::{
    error::Error,
    record::{MappingGroup, ThreadTime},
};

/// The `AnonHugePages` of every mapping of `pid` in /proc/PID/smaps, summed, in bytes.
///
/// Not smaps_rollup, which says the same in one line: on Debian's 6.1.0-57 kernel a read of
/// smaps_rollup while the target's mmap_lock is contended (a thread starting, any mmap or
/// munmap) leaves a mapping out. Measured in the vmtest guest (`vm-check rollup-race`, a
/// 64 MiB THP mapping beside a thread that maps and unmaps 4 KiB): 6,422 of 11,624 rollup
/// reads gave 2,048 kB instead of 65,536 kB, while smaps was right; the host's 6.18 kernel
/// gave 0 of 122,755. smaps walks one mapping per step and finds its place again by
/// address after the lock is dropped, so it does not lose one. See docs/vmtest.md.
pub fn anon_huge_bytes(pid: u32) -> procfs::ProcResult<u64> {
    let maps = procfs::process::Process::new(pid as i32)?.smaps()?;
    Ok(maps
        .iter()
        .filter_map(|m| m.extension.map.get("AnonHugePages"))
        .sum())
}

/// A live process to watch.
#[derive(Debug)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    proc_dir: PathBuf,
    /// Only memory in these [start, end) ranges counts (`--range`, or a guest's RAM
    /// blocks); empty: all of it.
    ranges: Vec<(u64, u64)>,
}

/// One mapping from `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub name: String,
    /// A shared mapping (`rw-s`): memfd, shared anonymous, file or hugetlbfs memory.
    pub shared: bool,
}

impl Region {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(4096) as u64
}

pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as u64
}

impl Target {
    /// Checks that `pid` names a live process we may inspect. Errors are [`Error`]s.
    pub fn open(pid: u32) -> Result<Target> {
        use procfs::ProcError;
        let usage = |m: String| -> anyhow::Error { Error::Usage(m).into() };
        if pid == 0 {
            return Err(usage("pid 0 is not a process".into()));
        }
        if pid > i32::MAX as u32 {
            return Err(usage(format!("no process with pid {pid}")));
        }
        let stat = match procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) {
            Ok(st) => st,
            Err(ProcError::NotFound(_)) => return Err(usage(format!("no process with pid {pid}"))),
            Err(e) => return Err(usage(format!("cannot inspect pid {pid}: {e}"))),
        };
        let t = Target {
            pid,
            comm: stat.comm.clone(),
            proc_dir: PathBuf::from(format!("/proc/{pid}")),
            ranges: Vec::new(),
        };
        // /proc/TID exists for every thread; the kernel programs filter by process (tgid).
        if let Ok(tgid) = t.process().and_then(|p| p.status()).map(|s| s.tgid) {
            if tgid != pid as i32 {
                return Err(usage(format!(
                    "{pid} is a thread of process {tgid}: watch the process (--pid {tgid})"
                )));
            }
        }
        t.check_watchable()?;
        Ok(t)
    }

    /// Refuses kernel threads, zombies and processes whose memory map we may not read.
    fn check_watchable(&self) -> Result<()> {
        let (pid, comm) = (self.pid, &self.comm);
        if self.is_kernel_thread() {
            return Err(Error::Unsupported(format!(
                "pid {pid} ({comm}) is a kernel thread: it has no user memory to watch or migrate"
            ))
            .into());
        }
        if self.is_zombie() {
            return Err(Error::Usage(format!("pid {pid} ({comm}) has exited (zombie)")).into());
        }
        // The memory map is readable only with ptrace-read rights on the target.
        if let Err(e) = fs::read_to_string(self.proc_dir.join("maps")) {
            let hint = if e.kind() == ErrorKind::PermissionDenied {
                format!(" (permission denied: {})", ptrace_hint())
            } else {
                String::new()
            };
            return Err(Error::Usage(format!(
                "cannot read the memory map of pid {pid}: {e}{hint}"
            ))
            .into());
        }
        Ok(())
    }

    /// True for a kernel thread (PF_KTHREAD in the stat flags).
    fn is_kernel_thread(&self) -> bool {
        const PF_KTHREAD: u32 = 0x0020_0000;
        self.process()
            .and_then(|p| p.stat())
            .is_ok_and(|st| st.flags & PF_KTHREAD != 0)
    }

    /// The procfs handle of the process (cheap: one directory open).
    fn process(&self) -> procfs::ProcResult<procfs::process::Process> {
        procfs::process::Process::new(self.pid as i32)
    }

    /// True when no thread of the process is alive. A main thread that exited leaves a
    /// zombie leader while the other threads run on; such a process is still alive.
    fn is_zombie(&self) -> bool {
        let dead = |state: char| matches!(state, 'Z' | 'X');
        let Ok(p) = self.process() else {
            return true;
        };
        match p.stat() {
            Ok(st) if !dead(st.state) => false,
            Ok(_) => p
                .tasks()
                .map(|tasks| {
                    !tasks
                        .flatten()
                        .any(|t| t.stat().is_ok_and(|st| !dead(st.state)))
                })
                .unwrap_or(true),
            Err(_) => true,
        }
    }

    /// True while the process exists and is not a zombie.
    pub fn alive(&self) -> bool {
        self.proc_dir.exists() && !self.is_zombie()
    }

    /// A pidfd that becomes readable when the process exits.
    pub fn pidfd(&self) -> Result<OwnedFd> {
        // SAFETY: plain syscall; a non-negative return is a new fd we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, self.pid as libc::c_int, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("pidfd_open");
        }
        // SAFETY: fd is a fresh descriptor returned by the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Resident set size in bytes (0 once the process is gone).
    pub fn rss_bytes(&self) -> u64 {
        self.process()
            .and_then(|p| p.statm())
            .map(|m| m.resident * page_size())
            .unwrap_or(0)
    }

    /// Anonymous transparent huge pages in bytes (a THP write fault dirties 2 MiB at once,
    /// which a base-page fault count understates); 0 when unreadable.
    pub fn anon_huge_bytes(&self) -> u64 {
        anon_huge_bytes(self.pid).unwrap_or(0)
    }

    /// What changes when the process execs: its executable (device, inode) and the start of
    /// its stack (a new address space gets a new, randomized one, even when a program
    /// execs itself). `None` once the process is gone.
    ///
    /// `None` while the process has no address space: an exiting process loses its mm
    /// before it is a zombie, and its stat then shows a start of stack of 0. Read the other
    /// way round (exe, then stat), an exit between the two looked like an exec, and the
    /// source's re-open of the dying process's pagemap failed the watch with exit 1.
    pub fn exec_id(&self) -> Option<(u64, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let start_stack = self.process().and_then(|p| p.stat()).ok()?.startstack;
        if start_stack == 0 {
            return None;
        }
        let exe = fs::metadata(self.proc_dir.join("exe")).ok()?;
        Some((exe.dev(), exe.ino(), start_stack))
    }

    /// Reads the process name again (after an exec, or a prctl).
    pub fn refresh_comm(&mut self) {
        if let Ok(st) = self.process().and_then(|p| p.stat()) {
            self.comm = st.comm;
        }
    }

    /// Restricts the memory this target stands for to `[start, end)` (`--range`).
    pub fn with_range(self, range: Option<(u64, u64)>) -> Target {
        self.with_ranges(range.into_iter().collect())
    }

    /// Restricts the memory this target stands for to these ranges (empty: all).
    pub fn with_ranges(mut self, ranges: Vec<(u64, u64)>) -> Target {
        self.ranges = ranges;
        self
    }

    /// Writable memory mappings: the memory a migration may have to resend (see
    /// [`writable`]), clipped to the range when there is one.
    pub fn writable_regions(&self) -> Result<Vec<Region>> {
        let maps = self
            .process()
            .and_then(|p| p.maps())
            .with_context(|| format!("reading /proc/{}/maps", self.pid))?;
        Ok(clip(writable(maps), &self.ranges))
    }

    /// CPU time of every thread.
    pub fn thread_times(&self) -> Vec<ThreadTime> {
        let Ok(tasks) = self.process().and_then(|p| p.tasks()) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| {
                let st = t.stat().ok()?;
                Some(ThreadTime {
                    tid: t.tid as u32,
                    comm: st.comm,
                    ticks: st.utime + st.stime,
                })
            })
            .collect()
    }

    /// Name of a thread (`?` when it has exited).
    pub fn thread_comm(&self, tid: u32) -> String {
        self.process()
            .and_then(|p| p.task_from_tid(tid as i32))
            .and_then(|t| t.stat())
            .map(|st| st.comm)
            .unwrap_or_else(|_| "?".into())
    }
}

/// Keeps the writable mappings of a memory map: private ones (`rw-p`), and shared ones
/// (`rw-s`) of memory files, because a VM's RAM is a shared mapping when QEMU uses
/// `memory-backend-memfd,share=on` or a file or hugetlbfs backend (vhost-user, virtiofs).
/// Left out: the kernel's special mappings, and shared mappings of devices and anonymous
/// inodes (KVM's vCPU run areas, GPU buffers), which are not memory a migration copies.
pub fn writable(maps: procfs::process::MemoryMaps) -> Vec<Region> {
    use procfs::process::{MMPermissions, MMapPath};
    maps.into_iter()
        .filter(|m| m.perms.contains(MMPermissions::WRITE))
        .filter_map(|m| {
            let name = match &m.pathname {
                MMapPath::Vdso | MMapPath::Vvar | MMapPath::Vsyscall | MMapPath::Rollup => {
                    return None
                }
                MMapPath::Other(o) if o.starts_with("vvar") => return None,
                MMapPath::Anonymous => String::new(),
                MMapPath::Heap => "[heap]".into(),
                MMapPath::Stack => "[stack]".into(),
                MMapPath::TStack(t) => format!("[stack:{t}]"),
                MMapPath::Vsys(key) => format!("/SYSV{key:08x}"),
                MMapPath::Path(p) => p
                    .to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_string(),
                MMapPath::Other(o) => o.clone(),
            };
            let shared = m.perms.contains(MMPermissions::SHARED);
            if shared && !is_memory_file(&name) {
                return None;
            }
            let (start, end) = m.address;
            (end > start).then_some(Region {
                start,
                end,
                name,
                shared,
            })
        })
        .collect()
}

/// [`writable`] of the text of a `/proc/PID/maps` file.
pub fn parse_writable(text: &str) -> Vec<Region> {
    use procfs::FromBufRead;
    procfs::process::MemoryMaps::from_buf_read(text.as_bytes())
        .map(writable)
        .unwrap_or_default()
}

/// The regions grouped by what they are (shared memory by file name, private memory as
/// anonymous, heap, stack or by file), largest group first.
pub fn describe(regions: &[Region]) -> Vec<MappingGroup> {
    let mut groups: Vec<MappingGroup> = Vec::new();
    for r in regions {
        let name = match r.name.as_str() {
            "" => "anonymous".to_string(),
            n => n.to_string(),
        };
        match groups
            .iter_mut()
            .find(|g| g.name == name && g.shared == r.shared)
        {
            Some(g) => {
                g.mappings += 1;
                g.bytes += r.len();
            }
            None => groups.push(MappingGroup {
                name,
                shared: r.shared,
                mappings: 1,
                bytes: r.len(),
            }),
        }
    }
    groups.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    groups
}

/// The parts of `regions` inside `ranges` (all of them without ranges).
pub fn clip(regions: Vec<Region>, ranges: &[(u64, u64)]) -> Vec<Region> {
    if ranges.is_empty() {
        return regions;
    }
    let mut out: Vec<Region> = regions
        .iter()
        .flat_map(|x| {
            ranges.iter().filter_map(move |&(lo, hi)| {
                let (start, end) = (x.start.max(lo), x.end.min(hi));
                (start < end).then(|| Region {
                    start,
                    end,
                    ..x.clone()
                })
            })
        })
        .collect();
    out.sort_by_key(|r| r.start);
    out
}

/// Whether a shared writable mapping named `name` is memory a migration copies: memfd
/// (QEMU's `memory-backend-memfd`), shared anonymous memory (shown as `/dev/zero`),
/// POSIX and SysV shared memory, hugetlbfs and regular files. Device mappings (`/dev/...`
/// other than `/dev/zero`, `/dev/shm`, `/dev/hugepages`) and anonymous inodes
/// (`anon_inode:kvm-vcpu`, GPU buffers) are not.
fn is_memory_file(name: &str) -> bool {
    name.starts_with("/memfd:")
        || name.starts_with("/dev/zero")
        || name.starts_with("/dev/shm/")
        || name.starts_with("/SYSV")
        || name.starts_with("/dev/hugepages")
        || (name.starts_with('/') && !name.starts_with("/dev/"))
        || name.is_empty()
}

/// Effective capabilities of this process.
pub fn effective_caps() -> u64 {
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map(|s| s.capeff)
        .unwrap_or(0)
}

const CAP_SYS_ADMIN: u64 = 21;
const CAP_PERFMON: u64 = 38;
const CAP_BPF: u64 = 39;

/// What to do about a refused ptrace-level access (maps, pagemap, process_vm_readv): the
/// hint depends on who we are. A user gets "run as root"; root, who is refused anyway (a
/// pid 1 of a container, Yama's ptrace_scope 3, a security module, a missing
/// CAP_SYS_PTRACE in a container), is told that, not to become root.
pub fn ptrace_hint() -> String {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return "run as root, or as the target's user with ptrace rights".into();
    }
    let scope = fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let why = if scope == "3" {
        "kernel.yama.ptrace_scope is 3, so no process may ptrace another".to_string()
    } else {
        "a security module (SELinux, AppArmor), a missing CAP_SYS_PTRACE (a container), or a target in another user namespace can forbid it".to_string()
    };
    format!("migtrace runs as root already and is still refused: {why}")
}

/// Why this process may not load tracing eBPF programs, if it may not.
pub fn missing_bpf_privileges() -> Option<String> {
    let caps = effective_caps();
    let has = |c: u64| caps & (1 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return None;
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Some(format!(
        "the eBPF backends need {} (run with sudo, or grant them: setcap cap_bpf,cap_perfmon,cap_sys_ptrace+ep migtrace)",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_keep_writable_memory_private_and_shared() {
        let maps = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-s 00000000 00:05 123                        /dev/shm/x
7f0000200000-7f0000201000 r--p 00000000 08:01 42                         /usr/lib/libc.so.6
7f0000300000-7f0000302000 rw-p 0001c000 08:01 42                         /usr/lib/libc.so.6
7f0000400000-7f0000500000 rw-p 00000000 00:00 0 
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00102000 r--p 00000000 00:00 0                          [vvar]
";
        let r = parse_writable(maps);
        let names: Vec<_> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["[heap]", "/dev/shm/x", "/usr/lib/libc.so.6", "", "[stack]"]
        );
        assert_eq!(r[3].len(), 0x100000);
        let qemu = "\
7f0000000000-7f0040000000 rw-s 00000000 00:01 5                          /memfd:pc.ram (deleted)
7f1000000000-7f1000001000 rw-s 00000000 00:0e 9                          anon_inode:kvm-vcpu:0
7f2000000000-7f2000010000 rw-s 00000000 00:05 7                          /dev/dri/card0
7f3000000000-7f3004000000 rw-s 00000000 00:01 1026                       /dev/zero (deleted)
";
        let r = parse_writable(qemu);
        let names: Vec<_> = r.iter().map(|r| r.name.as_str()).collect();
        // memfd RAM (share=on) and shared anonymous memory are guest RAM a migration copies.
        assert_eq!(names, ["/memfd:pc.ram", "/dev/zero"]);
        assert!(r.iter().all(|r| r.shared));
    }

    #[test]
    fn clip_keeps_only_the_ranges() {
        let r = |start, end| Region {
            start,
            end,
            name: "x".into(),
            shared: false,
        };
        let regions = vec![r(0x1000, 0x9000), r(0x10000, 0x20000)];
        assert_eq!(clip(regions.clone(), &[]), regions);
        let c = clip(regions, &[(0x18000, 0x30000), (0x0, 0x2000)]);
        assert_eq!(c, vec![r(0x1000, 0x2000), r(0x18000, 0x20000)]);
    }

    #[test]
    fn open_rejects_missing_pid() {
        let e = Target::open(u32::MAX - 1).unwrap_err();
        assert!(e.is::<Error>());
        assert!(e.to_string().contains("no process"));
    }

    /// Issue 17: root refused (a pid 1, Yama) was told to "run as root".
    #[test]
    fn the_ptrace_hint_fits_who_we_are() {
        let h = ptrace_hint();
        if unsafe { libc::geteuid() } == 0 {
            assert!(
                h.contains("root already") && !h.starts_with("run as root"),
                "{h}"
            );
        } else {
            assert!(h.starts_with("run as root"), "{h}");
        }
    }
}
