//! What the guest was doing when a boot's overall timeout passed, printed before QEMU is
//! killed: a guest that falls silent and never finishes tells nothing by itself.
//!
//! Seen in a fresh-clone run (2026-12-02): the nested-KVM boot went silent while its L2 QEMU
//! started (`kvm-attach-ebpf`, before any migtrace probe was attached) and stayed so until
//! the 900 s timeout; the in-guest per-test timeout did not fire either, so all of L1 had
//! stopped. Two questions tell the causes apart, and this answers both:
//! - is QEMU's vCPU thread busy (the guest spins: a kernel lockup with interrupts off, or
//!   TCG looping in its SVM emulation) or asleep (QEMU itself waits on something)? Each
//!   thread's CPU time over one second, from `/proc/PID/task/*/stat`, with its name
//!   (`-name vmtest,debug-threads=on` names them `CPU n/TCG`);
//! - where is the guest? Each vCPU's RIP from the human monitor (`info registers -a`, on
//!   a socket beside the serial log), and the kernel symbol it falls in, from the kernel
//!   package's System.map (the guest boots with `nokaslr`, so the addresses are the map's).
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

/// Prints both answers; every failure to find out is printed too, never fatal.
pub fn describe(pid: u32, monitor: &Path, vmlinuz: &Path) {
    eprintln!("vmtest: the guest at the timeout:");
    threads(pid);
    match registers(monitor) {
        Ok(rips) if !rips.is_empty() => {
            let map = system_map(vmlinuz);
            for (cpu, rip) in rips {
                let sym = map
                    .as_ref()
                    .and_then(|m| symbol(m, rip))
                    .unwrap_or_else(|| "(no symbol)".into());
                eprintln!("vmtest:   vCPU {cpu}: RIP {rip:016x} {sym}");
            }
        }
        Ok(_) => eprintln!("vmtest:   the monitor gave no RIP"),
        Err(e) => eprintln!("vmtest:   no registers from the monitor: {e}"),
    }
}

/// Each QEMU thread's name, state and CPU seconds over one second (keyed by tid: QEMU has
/// several threads of one name, `worker`).
fn threads(pid: u32) {
    let sample = || -> Vec<(String, String, String, u64)> {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        let mut v: Vec<(String, String, String, u64)> = dir
            .flatten()
            .filter_map(|t| {
                let tid = t.file_name().to_string_lossy().into_owned();
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                let close = stat.rfind(')')?;
                let name = stat[stat.find('(')? + 1..close].to_string();
                let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
                let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                Some((tid, name, f.first()?.to_string(), ticks))
            })
            .collect();
        v.sort();
        v
    };
    let before = sample();
    std::thread::sleep(Duration::from_secs(1));
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    for (tid, name, state, ticks) in sample() {
        let was = before.iter().find(|b| b.0 == tid).map_or(ticks, |b| b.3);
        let busy = ticks.saturating_sub(was) as f64 / hz;
        eprintln!(
            "vmtest:   QEMU thread {tid} {name:?}: state {state}, {busy:.2} s of CPU in the last 1 s"
        );
    }
}

/// `(cpu index, RIP)` of every vCPU, from `info registers -a` on the HMP socket.
fn registers(monitor: &Path) -> std::io::Result<Vec<(usize, u64)>> {
    let mut s = UnixStream::connect(monitor)?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"info registers -a\n")?;
    let mut text = String::new();
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    // Read until the reply stops coming (the read times out).
    while r.read_line(&mut line).unwrap_or(0) > 0 {
        text.push_str(&line);
        line.clear();
    }
    Ok(parse_rips(&text))
}

/// The `RIP=` (or `EIP=`) of each `CPU#n` block of `info registers -a`.
fn parse_rips(text: &str) -> Vec<(usize, u64)> {
    let mut cpu = 0;
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(n) = l.trim().strip_prefix("CPU#") {
            cpu = n.trim().parse().unwrap_or(cpu);
        }
        // RIP in long mode, EIP in protected or real mode.
        if let Some(i) = l.find("RIP=").or_else(|| l.find("EIP=")) {
            let hex = &l[i + 4..].split_whitespace().next().unwrap_or("");
            if let Ok(rip) = u64::from_str_radix(hex, 16) {
                out.push((cpu, rip));
            }
        }
    }
    out
}

/// The text symbols of the kernel beside `vmlinuz` (`System.map-RELEASE`), sorted.
fn system_map(vmlinuz: &Path) -> Option<Vec<(u64, String)>> {
    let name = vmlinuz
        .file_name()?
        .to_str()?
        .replace("vmlinuz-", "System.map-");
    let text = std::fs::read_to_string(vmlinuz.with_file_name(name)).ok()?;
    let mut v: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            let sym = f.next()?;
            matches!(kind, "t" | "T").then(|| (addr, sym.to_string()))
        })
        .collect();
    v.sort();
    Some(v)
}

/// `function+0xoffset` for `rip`.
fn symbol(map: &[(u64, String)], rip: u64) -> Option<String> {
    let i = map.partition_point(|(a, _)| *a <= rip).checked_sub(1)?;
    let (a, s) = &map[i];
    Some(format!("{s}+{:#x}", rip - a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rips_and_symbols() {
        let text = "CPU#0\nRAX=0000000000000000 RBX=0000000000000001\nRIP=ffffffff81a0b2c5 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\nCPU#1\nRIP=00007f0000001000 RFL=00000202\nCPU#2\nEAX=00000000\nEIP=0000fff0 EFL=00000002\n";
        assert_eq!(
            parse_rips(text),
            vec![(0, 0xffffffff81a0b2c5), (1, 0x7f0000001000), (2, 0xfff0)]
        );
        let map = vec![
            (0xffffffff81a0b000, "native_safe_halt".to_string()),
            (0xffffffff81a0c000, "other".to_string()),
        ];
        assert_eq!(
            symbol(&map, 0xffffffff81a0b2c5).as_deref(),
            Some("native_safe_halt+0x2c5")
        );
        assert_eq!(symbol(&map, 0x1000), None);
    }
}
