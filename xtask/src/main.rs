//! `cargo xtask`: everything that is not plain `cargo build` — bootstrapping the eBPF
//! toolchain and Debian packages, building the kernel programs, the README's two commands
//! (`demo` and `test`), and the benchmarks (overhead, cost).
//!
//! Every command bootstraps what it needs first, idempotently: on a machine that is already
//! set up the checks take well under a second.
mod bench;
mod bootstrap;
mod sys;
mod vm;

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "migtrace build helper")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and tests need (nightly rust-src, bpf-linker, Debian packages).
    Setup,
    /// Build the eBPF programs (nightly, bpfel-unknown-none).
    BuildEbpf,
    /// Build everything (eBPF programs, then migtrace in release mode).
    Build,
    /// Build everything and run `migtrace demo` on the built-in writer (needs root for eBPF).
    Demo {
        /// Extra arguments for `migtrace demo`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the whole test suite: fmt, clippy, unit tests, end-to-end tests (as root), VM tests.
    Test,
    /// Run the VM tests inside QEMU boots of Debian 12's kernel: tests/vm/tests.json, then
    /// tests/vm/kvm.json (a real KVM nested inside the TCG guest), one boot each.
    Vmtest {
        /// Run only the tests whose name contains this string.
        #[arg(long)]
        filter: Option<String>,
        /// Keep target/vmtest/run (initramfs, test dirs) for debugging.
        #[arg(long)]
        keep: bool,
        /// One test spec file (default: tests/vm/tests.json and tests/vm/kvm.json).
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
        /// Timeout for each boot, in seconds (default: the spec's boot.timeout_secs, else 480).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Write a guest (Debian 12 kernel + initramfs) that runs `migtrace writer` with the
    /// arguments given on its kernel command line (`migtrace.writer=--rate-mib,40,...`);
    /// prints the paths as one JSON line. Used by tests/qemu.rs.
    GuestImage {
        /// The migtrace binary to put in the guest (it runs `migtrace writer`).
        #[arg(long)]
        writer: PathBuf,
        /// Output directory (default: target/qemu-guest).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Benchmarks: `overhead` (a fault-heavy loop with and without `watch`, and with
    /// bpftrace) and `cost` (the watcher's own CPU per backend on 2 and 16 GiB targets);
    /// both by default.
    Bench {
        /// Which benchmark: overhead, cost (default: both).
        what: Option<String>,
        /// overhead: interleaved rounds per configuration.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// overhead: seconds per run.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        #[command(flatten)]
        cost: bench::CostArgs,
    },
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// cargo in `migtrace-ebpf/` with the nightly toolchain and the cached bpf-linker on PATH.
/// The target (`bpfel-unknown-none`) and `-Z build-std=core` come from
/// `migtrace-ebpf/.cargo/config.toml`, so every cargo command there builds for the kernel.
fn ebpf_cargo(tc: &bootstrap::EbpfToolchain, args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root().join("migtrace-ebpf"))
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env("CARGO_TARGET_DIR", root().join("target/ebpf"))
        .env("PATH", tc.path_with_linker())
        .arg("+nightly")
        .args(args);
    c
}

fn build_ebpf() -> Result<()> {
    build_ebpf_with(&bootstrap::ensure_ebpf_toolchain()?)
}

fn build_ebpf_with(tc: &bootstrap::EbpfToolchain) -> Result<()> {
    sys::run(&mut ebpf_cargo(tc, &["build", "--release"])).context("building the eBPF programs")
}

/// `cargo fmt --check` and `cargo clippy -D warnings` of the eBPF crate, which the host
/// workspace's checks do not reach (it is its own workspace, built for another target).
fn check_ebpf(tc: &bootstrap::EbpfToolchain) -> Result<()> {
    sys::run(&mut ebpf_cargo(tc, &["fmt", "--", "--check"]))
        .context("run `cargo +nightly fmt` in migtrace-ebpf to fix formatting")?;
    sys::run(&mut ebpf_cargo(
        tc,
        &["clippy", "--release", "--", "-D", "warnings"],
    ))
    .context("clippy found problems in migtrace-ebpf")
}

fn build() -> Result<()> {
    build_ebpf()?;
    sys::run(cargo().args(["build", "--release", "-p", "migtrace"]))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => {
            bootstrap::ensure_ebpf_toolchain()?;
            sys::ensure_packages(bootstrap::TEST_PACKAGES, "the test suite")?;
            Ok(())
        }
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build => build(),
        Cmd::Demo { args } => {
            // Without the eBPF toolchain (no nightly, say) the demo still runs: migtrace
            // builds without its kernel programs and measures by sampling, and says so.
            if let Err(e) = build_ebpf() {
                eprintln!("xtask: the eBPF programs could not be built ({e:#}); the demo runs with sampling only");
            }
            sys::run(cargo().args(["build", "--release", "-p", "migtrace"]))?;
            let bin = root().join("target/release/migtrace");
            let mut c = if sys::is_root() {
                Command::new(&bin)
            } else if sys::which("sudo").is_some() {
                eprintln!("xtask: the eBPF part of the demo needs root; running it with sudo");
                let mut c = Command::new("sudo");
                c.arg(&bin);
                c
            } else {
                eprintln!(
                    "xtask: not root and no sudo: the demo runs without eBPF (sampling only)"
                );
                Command::new(&bin)
            };
            sys::run(c.arg("demo").args(args))
        }
        Cmd::Test => test(),
        Cmd::Vmtest {
            filter,
            keep,
            spec,
            timeout,
        } => {
            // The guest runs the migtrace binary: build it with its kernel programs first.
            build_ebpf()?;
            vmtest(filter, keep, spec, timeout)
        }
        Cmd::GuestImage { writer, out } => {
            let out = out.unwrap_or_else(|| root().join("target/qemu-guest"));
            vm::guest_image::build(&writer, &out).map(|_| ())
        }
        Cmd::Bench {
            what,
            rounds,
            seconds,
            cost,
        } => bench::main(what.as_deref().unwrap_or("all"), rounds, seconds, cost),
    }
}

fn test() -> Result<()> {
    if !sys::is_root() {
        bail!("the test suite loads eBPF programs and reads other processes' memory: run it as root (sudo -E cargo xtask test)");
    }
    sys::ensure_packages(bootstrap::TEST_PACKAGES, "the test suite")?;
    let tc = bootstrap::ensure_ebpf_toolchain()?;
    build_ebpf_with(&tc)?;
    eprintln!("xtask: checking formatting and lints");
    sys::run(cargo().args(["fmt", "--all", "--", "--check"]))
        .context("run `cargo fmt --all` to fix formatting")?;
    sys::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    check_ebpf(&tc)?;
    eprintln!("xtask: unit and end-to-end tests");
    // Release binary for the end-to-end tests: rates and fault counts are measured against
    // a real writer, and a debug build would make the measuring side the bottleneck.
    sys::run(cargo().args(["build", "--release", "-p", "migtrace"]))?;
    // A table left by an earlier run must not pass for this run's.
    let _ = std::fs::remove_file(root().join("target/backtest-latest.md"));
    sys::run(
        cargo()
            .env("MIGTRACE_BIN", root().join("target/release/migtrace"))
            .args(["test", "--workspace", "--release"]),
    )?;
    print_backtest();
    fuzz()?;
    eprintln!("xtask: tests inside a Debian guest kernel (soft-dirty, kprobes; then a real KVM nested inside it)");
    vmtest(None, false, None, None)
}

/// Prints the back-test's table of predicted against actual migrations, which the test
/// keeps in `target/backtest-latest.md` (cargo hides a passing test's output).
fn print_backtest() {
    let kept = root().join("target/backtest-latest.md");
    match std::fs::read_to_string(&kept) {
        Ok(t) => eprintln!("xtask: the back-test, predicted against real migrations:\n{t}"),
        Err(e) => eprintln!("xtask: no back-test table ({}: {e})", kept.display()),
    }
}

/// A timed fuzz pass over the unit parser and the profile reader (`migtrace/tests/fuzz.rs`,
/// proptest): fresh random cases for `MIGTRACE_FUZZ_SECS` seconds, 60 unless set.
fn fuzz() -> Result<()> {
    let secs = std::env::var("MIGTRACE_FUZZ_SECS").unwrap_or_else(|_| "60".into());
    eprintln!("xtask: fuzzing the unit parser and the profile reader for {secs} s");
    sys::run(cargo().env("MIGTRACE_FUZZ_SECS", &secs).args([
        "test",
        "--release",
        "-p",
        "migtrace",
        "--test",
        "fuzz",
        "--",
        "--ignored",
    ]))
    .context("the fuzz pass found a failure: make it a named test in migtrace/tests/fuzz.rs")
}

fn vmtest(
    filter: Option<String>,
    keep: bool,
    spec: Option<PathBuf>,
    timeout: Option<u64>,
) -> Result<()> {
    let report = vm::run(vm::VmTestOptions {
        filter,
        keep,
        spec,
        timeout: timeout.map(std::time::Duration::from_secs),
    })?;
    match report.exit_code() {
        0 => Ok(()),
        _ => bail!("VM tests failed"),
    }
}
