//! Parses a QEMU command line (`/proc/PID/cmdline`, NUL-separated) into a typed
//! [`QemuCmdline`]: the options that decide where guest RAM lives and how to talk to QEMU.
//!
//! QEMU's option syntax: `-opt` and `--opt` are the same; a value is `key=value,...` where
//! `,,` is a literal comma and the first element may be a bare value naming the option's
//! implied key (`-m 512`, `-smp 4`, `-accel tcg`, `-object memory-backend-ram,...`).
//! `-object` (and, from libvirt, others) may instead be a JSON object
//! (`-object {"qom-type":"memory-backend-memfd","id":"pc.ram","size":1073741824}`).
//! Options that are not about memory, CPUs, acceleration, migration or monitors are skipped.
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

/// The memory-backend object types QEMU knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `memory-backend-ram`: anonymous memory (private unless `share=on`).
    Ram,
    /// `memory-backend-memfd`: a memfd, shared by default (`share=on`).
    Memfd,
    /// `memory-backend-file`: a file or hugetlbfs (`mem-path=`).
    File,
}

/// One `-object memory-backend-*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBackend {
    pub kind: BackendKind,
    pub id: String,
    pub size_bytes: u64,
    /// `share=on`: QEMU maps it MAP_SHARED (memfd defaults to on, the others to off).
    pub share: bool,
    /// `mem-path=` of a file backend (a file, or a directory QEMU creates a file in).
    pub mem_path: Option<PathBuf>,
    pub prealloc: bool,
    /// `hugetlb=on` (memfd), or a file backend whose path is under a hugetlbfs mount
    /// (the parser only sees the path: `/dev/hugepages`, `/hugepages`, `hugetlbfs` in it).
    pub hugetlb: bool,
}

/// `-m [size=]SIZE[,slots=N,maxmem=SIZE]`; a bare number is MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemorySpec {
    pub size_bytes: u64,
    pub slots: Option<u32>,
    pub maxmem_bytes: Option<u64>,
}

/// `-smp [cpus=]N[,sockets=,dies=,cores=,threads=,maxcpus=]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmpSpec {
    /// Boot CPUs: `cpus`, else the product of the topology, else 1.
    pub cpus: u32,
    pub sockets: Option<u32>,
    pub dies: Option<u32>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
    pub maxcpus: Option<u32>,
}

/// An accelerator named by `-accel`, `-enable-kvm` or `-machine accel=` (in that order of
/// precedence; `accel=kvm:tcg` lists fallbacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
    Other(String),
}

/// `-numa node,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NumaNode {
    pub nodeid: Option<u32>,
    pub memdev: Option<String>,
    /// `-numa node,mem=SIZE` (legacy, no backend object).
    pub mem_bytes: Option<u64>,
    pub cpus: Vec<String>,
}

/// `-chardev socket,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChardevSocket {
    pub id: String,
    /// Unix socket path; `None` for TCP or an inherited `fd=` (libvirt passes the monitor
    /// socket as a file descriptor).
    pub path: Option<PathBuf>,
    pub fd: Option<i32>,
    pub server: bool,
}

/// A parsed QEMU command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuCmdline {
    /// argv\[0\].
    pub binary: String,
    /// argv\[0\]'s file name is `qemu-system-*`, `qemu-kvm` (RHEL) or `kvm` (Proxmox, Debian).
    pub is_qemu_system: bool,
    /// `-name guest=NAME` (or a bare `-name NAME`).
    pub name: Option<String>,
    /// `-name ...,debug-threads=on`: vCPU threads are named `CPU N/KVM` (or `/TCG`).
    pub debug_threads: bool,
    pub memory: Option<MemorySpec>,
    pub smp: Option<SmpSpec>,
    /// Accelerators in the order QEMU tries them; empty means QEMU's default (TCG).
    pub accel: Vec<Accel>,
    /// `-machine type=` (or the bare first element).
    pub machine_type: Option<String>,
    /// `-machine memory-backend=ID`.
    pub machine_memory_backend: Option<String>,
    /// Legacy `-mem-path PATH` (all RAM from a file or hugetlbfs).
    pub mem_path: Option<PathBuf>,
    pub mem_prealloc: bool,
    pub backends: Vec<MemoryBackend>,
    pub numa: Vec<NumaNode>,
    /// `-incoming URI` (`defer`, `tcp:...`): this QEMU waits for an incoming migration.
    pub incoming: Option<String>,
    /// QMP unix sockets: `-qmp unix:PATH,...` and chardev sockets a `-mon mode=control`
    /// names.
    pub qmp_sockets: Vec<PathBuf>,
    pub chardev_sockets: Vec<ChardevSocket>,
    /// `-mon chardev=ID` with `mode=control` (QMP), by chardev id.
    pub qmp_chardevs: Vec<String>,
}

/// QEMU's default guest RAM on x86 when `-m` is not given.
pub const DEFAULT_RAM_BYTES: u64 = 128 << 20;

impl QemuCmdline {
    /// Parses the raw contents of `/proc/PID/cmdline` (NUL-separated arguments).
    pub fn from_proc_bytes(raw: &[u8]) -> Result<QemuCmdline> {
        let args: Vec<String> = raw
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        QemuCmdline::parse(&args)
    }

    /// Parses an argument vector (argv\[0\] first).
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<QemuCmdline> {
        let Some(binary) = args.first() else {
            bail!("empty command line (a kernel thread, or a process that already exited)");
        };
        let binary = binary.as_ref().to_string();
        let mut c = QemuCmdline {
            is_qemu_system: is_qemu_binary(&binary),
            binary,
            ..QemuCmdline::default()
        };
        if !c.is_qemu_system {
            return Ok(c); // another program's options mean other things
        }
        let mut enable_kvm = false;
        let mut machine_accel: Vec<Accel> = Vec::new();
        let mut i = 1;
        while i < args.len() {
            let arg = args[i].as_ref();
            let Some(opt) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                i += 1; // a stray word (a disk image given without -hda): not ours
                continue;
            };
            let takes = |i: usize| args.get(i + 1).map(|v| v.as_ref().to_string());
            match opt {
                "enable-kvm" => enable_kvm = true,
                "mem-prealloc" => c.mem_prealloc = true,
                _ if opt_takes_value(opt) => {
                    let value = takes(i).with_context(|| format!("-{opt} has no value"))?;
                    c.apply(opt, &value, &mut machine_accel)
                        .with_context(|| format!("-{opt} {value}"))?;
                    i += 1;
                }
                _ => {}
            }
            i += 1;
        }
        if c.accel.is_empty() && enable_kvm {
            c.accel.push(Accel::Kvm);
        }
        if c.accel.is_empty() {
            c.accel = machine_accel;
        }
        c.resolve_qmp();
        Ok(c)
    }

    /// One option with a value.
    fn apply(&mut self, opt: &str, value: &str, machine_accel: &mut Vec<Accel>) -> Result<()> {
        match opt {
            "name" => {
                let kv = Opts::parse(value, "guest")?;
                self.name = kv.get("guest").map(str::to_string);
                self.debug_threads = kv.flag("debug-threads")?.unwrap_or(false);
            }
            "m" => self.memory = Some(parse_memory(value)?),
            "smp" => self.smp = Some(parse_smp(value)?),
            "accel" => {
                let kv = Opts::parse(value, "accel")?;
                if let Some(a) = kv.get("accel") {
                    self.accel.extend(parse_accels(a));
                }
            }
            "machine" | "M" => {
                let kv = Opts::parse(value, "type")?;
                self.machine_type = kv.get("type").map(str::to_string);
                if let Some(b) = kv.get("memory-backend") {
                    self.machine_memory_backend = Some(b.to_string());
                }
                if let Some(a) = kv.get("accel") {
                    *machine_accel = parse_accels(a);
                }
            }
            "mem-path" => self.mem_path = Some(PathBuf::from(value)),
            "object" => {
                if let Some(b) = parse_backend(&Opts::parse_any(value, "qom-type")?)? {
                    self.backends.push(b);
                }
            }
            "numa" => self.numa.extend(parse_numa(value)?),
            "incoming" => self.incoming = Some(value.to_string()),
            "qmp" | "qmp-pretty" => {
                if let Some(p) = value.strip_prefix("unix:") {
                    let path = p.split(',').next().unwrap_or_default();
                    self.qmp_sockets.push(PathBuf::from(path));
                }
            }
            "chardev" => self.chardev_sockets.extend(parse_chardev(value)?),
            "mon" => {
                let kv = Opts::parse(value, "chardev")?;
                if kv.get("mode") == Some("control") {
                    if let Some(id) = kv.get("chardev") {
                        self.qmp_chardevs.push(id.to_string());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Adds the paths of chardev sockets that a QMP monitor uses.
    fn resolve_qmp(&mut self) {
        for id in &self.qmp_chardevs {
            let path = self
                .chardev_sockets
                .iter()
                .find(|s| &s.id == id)
                .and_then(|s| s.path.clone());
            if let Some(p) = path {
                if !self.qmp_sockets.contains(&p) {
                    self.qmp_sockets.push(p);
                }
            }
        }
    }

    /// The backend with this id.
    pub fn backend(&self, id: &str) -> Option<&MemoryBackend> {
        self.backends.iter().find(|b| b.id == id)
    }

    /// Boot CPUs (1 when `-smp` is absent).
    pub fn cpus(&self) -> u32 {
        self.smp.as_ref().map_or(1, |s| s.cpus)
    }

    /// Base guest RAM: `-m`, else QEMU's default of 128 MiB.
    pub fn ram_bytes(&self) -> u64 {
        self.memory
            .as_ref()
            .map_or(DEFAULT_RAM_BYTES, |m| m.size_bytes)
    }
}

/// Options of QEMU 7.2 that take a value (so that a value is never read as an option).
/// Unknown options without a value are flags; a value that starts with `-` is rare.
fn opt_takes_value(opt: &str) -> bool {
    const FLAGS: &[&str] = &[
        "S",
        "nographic",
        "nodefaults",
        "no-user-config",
        "no-reboot",
        "no-shutdown",
        "no-hpet",
        "no-acpi",
        "daemonize",
        "snapshot",
        "enable-kvm",
        "mem-prealloc",
        "full-screen",
        "no-fd-bootchk",
        "no-frame",
        "alt-grab",
        "ctrl-grab",
        "s",
        "enable-fips",
        "nodefconfig",
        "win2k-hack",
        "old-param",
        "preconfig",
        "version",
        "help",
        "h",
    ];
    !FLAGS.contains(&opt)
}

fn is_qemu_binary(argv0: &str) -> bool {
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    base.starts_with("qemu-system-") || base == "qemu-kvm" || base == "kvm"
}

fn parse_accels(list: &str) -> Vec<Accel> {
    list.split(':')
        .filter(|a| !a.is_empty())
        .map(|a| match a {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            other => Accel::Other(other.to_string()),
        })
        .collect()
}

fn parse_memory(value: &str) -> Result<MemorySpec> {
    let kv = Opts::parse(value, "size")?;
    let size = kv.get("size").context("no size")?;
    Ok(MemorySpec {
        size_bytes: parse_size(size, Unit::MiB)?,
        slots: kv.num("slots")?,
        maxmem_bytes: kv
            .get("maxmem")
            .map(|m| parse_size(m, Unit::MiB))
            .transpose()?,
    })
}

fn parse_smp(value: &str) -> Result<SmpSpec> {
    let kv = Opts::parse(value, "cpus")?;
    let mut s = SmpSpec {
        cpus: 0,
        sockets: kv.num("sockets")?,
        dies: kv.num("dies")?,
        cores: kv.num("cores")?,
        threads: kv.num("threads")?,
        maxcpus: kv.num("maxcpus")?,
    };
    s.cpus = match kv.num::<u32>("cpus")? {
        Some(n) => n,
        None => [s.sockets, s.dies, s.cores, s.threads]
            .iter()
            .map(|v| v.unwrap_or(1))
            .product(),
    };
    Ok(s)
}

fn parse_backend(kv: &Opts) -> Result<Option<MemoryBackend>> {
    let kind = match kv.get("qom-type") {
        Some("memory-backend-ram") => BackendKind::Ram,
        Some("memory-backend-memfd") => BackendKind::Memfd,
        Some("memory-backend-file") => BackendKind::File,
        _ => return Ok(None),
    };
    let id = kv.get("id").context("a memory backend without id=")?;
    let size = kv.get("size").context("a memory backend without size=")?;
    let mem_path = kv.get("mem-path").map(PathBuf::from);
    let on_hugetlbfs = mem_path.as_ref().is_some_and(|p| {
        let p = p.to_string_lossy();
        p.contains("hugepages") || p.contains("hugetlbfs")
    });
    Ok(Some(MemoryBackend {
        kind,
        id: id.to_string(),
        size_bytes: parse_size(size, Unit::Bytes)?,
        share: kv.flag("share")?.unwrap_or(kind == BackendKind::Memfd),
        mem_path,
        prealloc: kv.flag("prealloc")?.unwrap_or(false),
        hugetlb: kv.flag("hugetlb")?.unwrap_or(false) || on_hugetlbfs,
    }))
}

fn parse_numa(value: &str) -> Result<Option<NumaNode>> {
    let kv = Opts::parse(value, "type")?;
    if kv.get("type") != Some("node") {
        return Ok(None); // dist, cpu, hmat-lb, ...
    }
    Ok(Some(NumaNode {
        nodeid: kv.num("nodeid")?,
        memdev: kv.get("memdev").map(str::to_string),
        mem_bytes: kv
            .get("mem")
            .map(|m| parse_size(m, Unit::MiB))
            .transpose()?,
        cpus: kv.all("cpus").map(str::to_string).collect(),
    }))
}

fn parse_chardev(value: &str) -> Result<Option<ChardevSocket>> {
    let kv = Opts::parse(value, "backend")?;
    if kv.get("backend") != Some("socket") {
        return Ok(None);
    }
    Ok(Some(ChardevSocket {
        id: kv.get("id").unwrap_or_default().to_string(),
        path: kv.get("path").map(PathBuf::from),
        fd: kv.num("fd")?,
        server: kv.flag("server")?.unwrap_or(false),
    }))
}

/// The unit of a size without a suffix: `-m 512` is MiB, `size=512` is bytes.
#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    MiB,
}

/// A QEMU size: a number (fractions allowed) with an optional suffix B, K, M, G, T, P, E
/// (powers of 1024, either case).
fn parse_size(s: &str, unit: Unit) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" => match unit {
            Unit::Bytes => 0,
            Unit::MiB => 20,
        },
        "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        "e" => 60,
        _ => bail!("bad size {s:?}: unknown suffix {suffix:?}"),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_shl(shift)
            .filter(|v| v >> shift == n)
            .ok_or_else(|| anyhow!("size {s:?} is too large"));
    }
    let f: f64 = num.parse().map_err(|_| anyhow!("bad size {s:?}"))?;
    Ok((f * (1u64 << shift) as f64) as u64)
}

/// The `key=value` pairs of one option value (keys may repeat, e.g. `cpus=0-1,cpus=4`).
struct Opts(Vec<(String, String)>);

impl Opts {
    /// QEMU keyval syntax; a first element without `=` is `implied`'s value.
    fn parse(value: &str, implied: &str) -> Result<Opts> {
        let mut out = Vec::new();
        for (n, part) in split_commas(value).into_iter().enumerate() {
            match part.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), v.to_string())),
                None if n == 0 => out.push((implied.to_string(), part)),
                // A bare flag: `server`, `nowait`, `share` (old syntax): key=on.
                None => match part.strip_prefix("no") {
                    Some(k) if !k.is_empty() => out.push((k.to_string(), "off".into())),
                    _ => out.push((part, "on".into())),
                },
            }
        }
        Ok(Opts(out))
    }

    /// Keyval, or a JSON object (libvirt's `-object {...}`); JSON values become strings.
    fn parse_any(value: &str, implied: &str) -> Result<Opts> {
        if !value.trim_start().starts_with('{') {
            return Opts::parse(value, implied);
        }
        let v: serde_json::Value = serde_json::from_str(value).context("bad JSON option")?;
        let map = v.as_object().context("a JSON option must be an object")?;
        let mut out = Vec::new();
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
                other => other.to_string(),
            };
            out.push((k.clone(), s));
        }
        Ok(Opts(out))
    }

    /// The last value of `key` (QEMU: a later one wins).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>> {
        self.get(key)
            .map(|v| v.parse().map_err(|_| anyhow!("{key}={v} is not a number")))
            .transpose()
    }

    /// QEMU booleans: on/off, yes/no, true/false.
    fn flag(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| match v {
                "on" | "yes" | "true" | "y" => Ok(true),
                "off" | "no" | "false" | "n" => Ok(false),
                _ => Err(anyhow!("{key}={v} is not on/off")),
            })
            .transpose()
    }
}

/// Splits at single commas; `,,` is a literal comma.
fn split_commas(value: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                parts.last_mut().expect("non-empty").push(',');
            } else {
                parts.push(String::new());
            }
        } else {
            parts.last_mut().expect("non-empty").push(c);
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests;
