//! A real QEMU guest for the tests in `tests/qemu.rs`: `qemu-system-x86_64 -accel tcg` boots
//! Debian 12's 6.1 kernel with an initramfs whose `/init` runs `migtrace writer` (made by
//! `cargo xtask guest-image`, which reuses the vmtest kernel cache and cpio writer). The
//! fixture exposes the QEMU pid, the QMP socket and the serial log, and kills QEMU on Drop.
//!
//! Guests are booted one at a time (a process-wide lock): the machines have 2 shared cores
//! and a TCG guest keeps one busy. Without QEMU or the kernel, [`QemuGuest::boot`] returns
//! `None` after printing why, except under CI (`CI=true`), where `cargo xtask test`
//! installs them and their absence fails the test.
use std::path::{Path, PathBuf};

use anyhow::Context;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Where guest RAM comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamBackend {
    /// Plain `-m 512` (QEMU's implicit `pc.ram`: anonymous, private, THP-advised).
    Default,
    /// `-object memory-backend-memfd,id=ram0,size=512M,share=on -machine memory-backend=ram0`.
    Memfd,
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct GuestOptions {
    pub ram: RamBackend,
    pub mem_mib: u64,
    pub smp: u32,
    /// `migtrace writer` arguments inside the guest; `None` boots an idle guest.
    pub writer: Option<(f64, u64)>,
    /// `-incoming URI`: a migration destination, which waits instead of booting.
    pub incoming: Option<String>,
}

impl Default for GuestOptions {
    fn default() -> Self {
        GuestOptions {
            ram: RamBackend::Default,
            mem_mib: 512,
            smp: 1,
            writer: Some((40.0, 128)),
            incoming: None,
        }
    }
}

/// The kernel and initramfs `cargo xtask guest-image` wrote.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// A booted guest; QEMU is killed when this is dropped.
pub struct QemuGuest {
    child: Child,
    pub qmp_socket: PathBuf,
    /// A second QMP monitor, for a test to drive QEMU while a tool holds `qmp_socket`.
    pub control_socket: PathBuf,
    pub serial_log: PathBuf,
    dir: PathBuf,
    opts: GuestOptions,
    image: GuestImage,
    /// Held by a booted source; its migration destinations run beside it without it.
    _one_at_a_time: Option<MutexGuard<'static, ()>>,
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Prints why there is no guest and returns `None`; panics instead under CI.
fn unavailable(why: &str) -> Option<QemuGuest> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("QEMU guest unavailable under CI (cargo xtask test installs it): {why}");
    }
    eprintln!("SKIPPED: no QEMU guest: {why}");
    None
}

/// The guest image, or why there is none.
enum Image {
    Ready(GuestImage),
    Unavailable(String),
}

/// Builds the guest image once per test process (`cargo run -p xtask -- guest-image`).
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| match build_image() {
        Ok(i) => Image::Ready(i),
        Err(why) => Image::Unavailable(format!("{why:#}")),
    })
}

fn build_image() -> anyhow::Result<GuestImage> {
    {
        let out = repo_root().join("target/qemu-guest");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let res = Command::new(cargo)
            .current_dir(repo_root())
            .args(["run", "-q", "-p", "xtask", "--", "guest-image", "--writer"])
            .arg(crate::bin())
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .output()
            .context("could not run cargo xtask guest-image")?;
        let text = String::from_utf8_lossy(&res.stdout);
        let last = text.lines().last().unwrap_or_default();
        let v: serde_json::Value = match (res.status.success(), serde_json::from_str(last)) {
            (true, Ok(v)) => v,
            _ => anyhow::bail!("cargo xtask guest-image failed ({}): {text}", res.status),
        };
        let path = |k: &str| PathBuf::from(v[k].as_str().unwrap_or_default());
        Ok(GuestImage {
            kernel: path("kernel"),
            initrd: path("initrd"),
        })
    }
}

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

impl QemuGuest {
    /// Boots a guest and waits for its QMP socket (and, with a writer, for the writer's
    /// ready line). `None` (after printing why) when QEMU or the image is missing.
    pub fn boot(opts: &GuestOptions) -> Option<QemuGuest> {
        if which("qemu-system-x86_64").is_none() {
            return unavailable("qemu-system-x86_64 is not on PATH (package qemu-system-x86)");
        }
        let image = match image() {
            Image::Ready(i) => i.clone(),
            Image::Unavailable(why) => return unavailable(why),
        };
        let g = QemuGuest::spawn(opts, &image, Some(one_at_a_time()));
        Some(g)
    }

    /// A migration destination for this guest: the same QEMU command line plus
    /// `-incoming tcp:127.0.0.1:PORT` (a free port). Returns it and the URI to migrate to.
    pub fn boot_destination(&self) -> (QemuGuest, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let uri = format!("tcp:127.0.0.1:{port}");
        let opts = GuestOptions {
            incoming: Some(uri.clone()),
            ..self.opts.clone()
        };
        let mut dst = QemuGuest::spawn(&opts, &self.image, None);
        // QEMU opens the QMP socket before it listens for the migration; a test connect
        // would be taken for the migration stream, so watch the kernel's socket table.
        let what = format!("the destination listening on port {port}");
        dst.wait_until(Duration::from_secs(20), &what, |_| listening(port));
        (dst, uri)
    }

    fn spawn(
        opts: &GuestOptions,
        image: &GuestImage,
        lock: Option<MutexGuard<'static, ()>>,
    ) -> QemuGuest {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("migtrace-qemu-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (qmp_socket, serial_log) = (dir.join("qmp.sock"), dir.join("serial.log"));
        let mut cmd = command(opts, image, &qmp_socket, &serial_log);
        eprintln!("qemu: {cmd:?}");
        let stderr = std::fs::File::create(dir.join("qemu.stderr")).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start qemu-system-x86_64");
        let mut g = QemuGuest {
            child,
            control_socket: dir.join("ctl.sock"),
            qmp_socket,
            serial_log,
            dir,
            opts: opts.clone(),
            image: image.clone(),
            _one_at_a_time: lock,
        };
        g.wait_until(Duration::from_secs(20), "the QMP socket", |g| {
            g.qmp_socket.exists()
        });
        if opts.writer.is_some() && opts.incoming.is_none() {
            g.wait_for_serial("writer| {\"type\":\"ready\"", Duration::from_secs(90));
        }
        g
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The serial console so far.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial log holds `needle`; panics with the log and QEMU's stderr
    /// when it does not in time or QEMU exits.
    pub fn wait_for_serial(&mut self, needle: &str, timeout: Duration) {
        let what = format!("{needle:?} on the serial console");
        self.wait_until(timeout, &what, |g| g.serial().contains(needle));
    }

    fn wait_until(&mut self, timeout: Duration, what: &str, done: impl Fn(&QemuGuest) -> bool) {
        let start = Instant::now();
        while !done(self) {
            if let Some(why) = crate::qemu_gave_up(&mut self.child, start, timeout) {
                let stderr =
                    std::fs::read_to_string(self.dir.join("qemu.stderr")).unwrap_or_default();
                panic!(
                    "waiting for {what}: {why} after {:.1} s\n--- serial ---\n{}\n--- qemu stderr ---\n{stderr}",
                    start.elapsed().as_secs_f64(),
                    self.serial()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("qemu: {what} after {:.1} s", start.elapsed().as_secs_f64());
    }

    /// Sends a signal to QEMU (SIGSTOP, SIGKILL, ...).
    pub fn signal(&self, sig: i32) {
        crate::signal(self.pid(), sig);
    }

    /// Kills QEMU and reaps it (also done on Drop).
    pub fn kill(&mut self) {
        crate::kill_if_running(&mut self.child);
    }
}

impl Drop for QemuGuest {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn command(opts: &GuestOptions, image: &GuestImage, qmp: &Path, serial: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-name",
        "guest=migtrace-e2e,debug-threads=on",
        "-accel",
        "tcg",
    ])
    .args([
        "-m",
        &opts.mem_mib.to_string(),
        "-smp",
        &opts.smp.to_string(),
    ])
    .args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .arg("-serial")
    .arg(format!("file:{}", serial.display()))
    .arg("-qmp")
    .arg(format!("unix:{},server=on,wait=off", qmp.display()))
    .arg("-qmp")
    .arg(format!(
        "unix:{},server=on,wait=off",
        qmp.with_file_name("ctl.sock").display()
    ));
    if let Some(uri) = &opts.incoming {
        c.args(["-incoming", uri]);
    }
    if opts.ram == RamBackend::Memfd {
        c.args(["-object"])
            .arg(format!(
                "memory-backend-memfd,id=ram0,size={}M,share=on",
                opts.mem_mib
            ))
            .args(["-machine", "memory-backend=ram0"]);
    }
    let mut append = "console=ttyS0 quiet panic=-1 rdinit=/init".to_string();
    if let Some((rate, wss)) = opts.writer {
        append.push_str(&format!(
            " migtrace.writer=--pattern,random,--rate-mib,{rate},--wss-mib,{wss}"
        ));
    }
    c.arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", &append]);
    c
}

/// A TCP socket in LISTEN state (0A) on 127.0.0.1 or any address, port `port`.
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[3] == "0A" && f[1].ends_with(&format!(":{port:04X}"))
    })
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}
