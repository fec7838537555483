//! Builds the host binaries that run inside the guest with cargo (`cargo build` is a quick
//! no-op when nothing changed, so staleness is cargo's job) and returns their paths as cargo
//! reports them (`--message-format=json`), which also honours `CARGO_TARGET_DIR`.
use super::spec::CargoBin;
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds every binary in `bins`, one cargo invocation per (package, profile);
/// returns bin name -> executable path.
pub fn build(root: &Path, bins: &BTreeSet<CargoBin>) -> Result<BTreeMap<String, PathBuf>> {
    let mut groups: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for b in bins {
        groups
            .entry((b.package.as_str(), b.profile.as_str()))
            .or_default()
            .push(b.bin.as_str());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut out = BTreeMap::new();
    for ((package, profile), names) in groups {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root)
            .args(["build", "--message-format=json-render-diagnostics"])
            .args(["--profile", profile, "-p", package]);
        for n in &names {
            cmd.args(["--bin", n]);
        }
        println!(
            "vmtest: cargo build --profile {profile} -p {package} --bin {}",
            names.join(" --bin ")
        );
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("could not start {cargo}"))?;
        let stdout = child.stdout.take().expect("piped");
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            if let (Some(exe), Some(name)) =
                (msg["executable"].as_str(), msg["target"]["name"].as_str())
            {
                if names.contains(&name) {
                    out.insert(name.to_string(), PathBuf::from(exe));
                }
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!(
                "building {package} ({profile}) for the VM tests failed: {status}; \
                 run `cargo build --profile {profile} -p {package}` to see why"
            );
        }
        for n in &names {
            if !out.contains_key(*n) {
                bail!("cargo reported no executable for bin {n} of package {package}");
            }
        }
    }
    Ok(out)
}
