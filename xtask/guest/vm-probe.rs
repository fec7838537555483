//! `vm-probe`: a tiny program that `cargo xtask vmtest` builds for the host target and runs
//! inside the QEMU guest (it is copied into the initramfs with its glibc libraries).
//!
//! - `vm-probe features` prints one machine-readable line per feature that needs a system
//!   call to detect (`MIGTRACE-VM-FEATURE name=... status=yes|no detail=...`); the guest
//!   `/init` calls it during its feature probe. It always exits 0.
//! - `vm-probe softdirty` asserts that soft-dirty tracking works: a written page has
//!   pagemap bit 55 set, `echo 4 > /proc/self/clear_refs` clears it, and a new write sets it
//!   again. Exits 1 (with the step that failed) otherwise.
//! - `vm-probe userfaultfd` asserts that `userfaultfd(2)` opens and the UFFDIO_API handshake
//!   succeeds.
//!
//! It also runs on the host, where it is a quick way to see what the host kernel lacks.
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::process::ExitCode;

const PAGEMAP_SOFT_DIRTY: u64 = 1 << 55;
const PAGEMAP_PRESENT: u64 = 1 << 63;

fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "features" => {
            let sd = softdirty_cycle();
            feature_line("softdirty", sd.as_ref().map(|s| s.as_str()));
            let uf = userfaultfd_check();
            feature_line("userfaultfd", uf.as_ref().map(|s| s.as_str()));
            ExitCode::SUCCESS
        }
        "softdirty" => report("soft-dirty", softdirty_cycle()),
        "userfaultfd" => report("userfaultfd", userfaultfd_check()),
        _ => {
            eprintln!("usage: vm-probe features|softdirty|userfaultfd");
            ExitCode::from(2)
        }
    }
}

fn feature_line(name: &str, result: Result<&str, &String>) {
    match result {
        Ok(detail) => println!("MIGTRACE-VM-FEATURE name={name} status=yes detail={detail}"),
        Err(why) => println!("MIGTRACE-VM-FEATURE name={name} status=no detail={why}"),
    }
}

fn report(what: &str, result: Result<String, String>) -> ExitCode {
    match result {
        Ok(detail) => {
            println!("{what}: OK: {detail}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            println!("{what}: FAILED: {why}");
            ExitCode::FAILURE
        }
    }
}

/// One pagemap entry (64 bits) for the page at `addr` in this process.
fn pagemap_entry(addr: usize) -> Result<u64, String> {
    let page = page_size();
    let mut f = File::open("/proc/self/pagemap").map_err(|e| format!("open pagemap: {e}"))?;
    f.seek(SeekFrom::Start((addr / page) as u64 * 8))
        .map_err(|e| format!("seek pagemap: {e}"))?;
    let mut buf = [0u8; 8];
    f.read_exact(&mut buf)
        .map_err(|e| format!("read pagemap: {e}"))?;
    Ok(u64::from_le_bytes(buf))
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// Write a page, read bit 55, clear soft-dirty bits, read again, write again, read again.
/// Ok only for the sequence 1 -> 0 -> 1.
fn softdirty_cycle() -> Result<String, String> {
    let page = page_size();
    // SAFETY: an anonymous private mapping; we only touch its first page and unmap it below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let addr = ptr as usize;
    let touch = |v: u8| {
        // SAFETY: `ptr` is a live, writable mapping of at least one byte.
        unsafe { std::ptr::write_volatile(ptr as *mut u8, v) }
    };
    let result = (|| {
        touch(1);
        let e1 = pagemap_entry(addr)?;
        if e1 & PAGEMAP_PRESENT == 0 {
            return Err(format!(
                "written page not present in pagemap (entry {e1:#x})"
            ));
        }
        let b1 = e1 & PAGEMAP_SOFT_DIRTY != 0;
        let mut cr = OpenOptions::new()
            .write(true)
            .open("/proc/self/clear_refs")
            .map_err(|e| format!("open /proc/self/clear_refs: {e}"))?;
        cr.write_all(b"4")
            .map_err(|e| format!("write 4 to /proc/self/clear_refs: {e}"))?;
        let b2 = pagemap_entry(addr)? & PAGEMAP_SOFT_DIRTY != 0;
        touch(2);
        let b3 = pagemap_entry(addr)? & PAGEMAP_SOFT_DIRTY != 0;
        let seq = format!(
            "bit55 after write={} after clear_refs=4: {} after rewrite={}",
            b1 as u8, b2 as u8, b3 as u8
        );
        if b1 && !b2 && b3 {
            Ok(seq)
        } else {
            Err(format!(
                "{seq} (want 1 0 1; kernel without CONFIG_MEM_SOFT_DIRTY?)"
            ))
        }
    })();
    // SAFETY: unmapping the mapping created above, no references to it remain.
    unsafe { libc::munmap(ptr, page) };
    result
}

/// Open a userfaultfd and do the UFFDIO_API handshake.
fn userfaultfd_check() -> Result<String, String> {
    // SAFETY: plain system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(format!(
            "userfaultfd(2): {}",
            std::io::Error::last_os_error()
        ));
    }
    let fd = fd as libc::c_int;
    // struct uffdio_api { u64 api; u64 features; u64 ioctls; }
    let mut api = [0xAAu64, 0, 0];
    // _IOWR(0xAA, 0x3F, struct uffdio_api) = 0xc018aa3f
    const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
    // SAFETY: `api` is a valid, writable struct uffdio_api for the kernel to fill.
    let rc = unsafe { libc::ioctl(fd, UFFDIO_API as _, api.as_mut_ptr()) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(fd) };
    if rc != 0 {
        return Err(format!("UFFDIO_API: {err}"));
    }
    Ok(format!("api ok, features={:#x}", api[1]))
}
