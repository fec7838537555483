//! `cargo xtask`: project automation. Subcommands: `vmtest` (tests inside a QEMU guest
//! running Debian 12's kernel, see docs/vmtest.md).
use clap::{Parser, Subcommand};

mod vm;

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the VM tests (tests/vm/tests.json) inside one QEMU boot of Debian 12's kernel.
    Vmtest {
        /// Run only the tests whose name contains this string.
        #[arg(long)]
        filter: Option<String>,
        /// Keep target/vmtest/run (initramfs, test dirs) for debugging.
        #[arg(long)]
        keep: bool,
        /// Test spec file (default: tests/vm/tests.json).
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
        /// Overall timeout for the boot, in seconds.
        #[arg(long, default_value_t = 480)]
        timeout: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Vmtest {
            filter,
            keep,
            spec,
            timeout,
        } => {
            let report = vm::run(vm::VmTestOptions {
                filter,
                keep,
                spec,
                timeout: std::time::Duration::from_secs(timeout),
            })?;
            std::process::exit(report.exit_code());
        }
    }
}
