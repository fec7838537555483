//! The declarative list of VM tests, `tests/vm/tests.json` (format in docs/vmtest.md).
//!
//! Each test names a shell command line that busybox `sh` runs inside the guest (working
//! directory `/repo`), the cargo binaries and repository files it needs, the guest-kernel
//! features it requires and a timeout. Adding a test is adding one entry.
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::Path;

/// Guest features the `/init` probe reports, each with the kernel config options that,
/// when all built in (`=y`), mean the Debian kernel is known to have the feature.
pub const FEATURES: &[(&str, &[&str])] = &[
    ("softdirty", &["CONFIG_MEM_SOFT_DIRTY"]),
    ("userfaultfd", &["CONFIG_USERFAULTFD"]),
    ("kprobes", &["CONFIG_KPROBES", "CONFIG_KPROBE_EVENTS"]),
    ("btf", &["CONFIG_DEBUG_INFO_BTF"]),
    ("tracefs", &["CONFIG_TRACING"]),
    ("debugfs", &["CONFIG_DEBUG_FS"]),
    ("bpffs", &["CONFIG_BPF_SYSCALL"]),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub tests: Vec<TestSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Unique; letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// Optional human description, for readers of the spec (the harness ignores it).
    #[serde(default)]
    #[allow(dead_code)]
    pub description: String,
    /// Shell command line, run by busybox `sh` in `/repo` inside the guest.
    pub run: String,
    /// Cargo binaries the harness builds and installs on the guest's PATH
    /// (`/usr/local/bin/<bin>`) with their shared libraries.
    #[serde(default)]
    pub bins: Vec<CargoBin>,
    /// Repository-relative files copied to `/repo/<path>` (ELF executables get their
    /// shared libraries too).
    #[serde(default)]
    pub files: Vec<String>,
    /// Guest features (see [`FEATURES`]); the test is skipped, with the reason printed,
    /// when the probe does not find one.
    #[serde(default)]
    pub requires: Vec<String>,
    /// Seconds before the guest kills the test.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CargoBin {
    pub package: String,
    pub bin: String,
    /// Cargo profile: `release` (default) or `dev`.
    #[serde(default = "default_profile")]
    pub profile: String,
}

fn default_timeout() -> u64 {
    120
}

fn default_profile() -> String {
    "release".into()
}

/// Reads and checks the spec file.
pub fn load(path: &Path) -> Result<Spec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the VM test spec {}", path.display()))?;
    let spec: Spec = serde_json::from_str(&text)
        .with_context(|| format!("parsing the VM test spec {}", path.display()))?;
    validate(&spec).with_context(|| format!("in the VM test spec {}", path.display()))?;
    Ok(spec)
}

fn validate(spec: &Spec) -> Result<()> {
    let known: BTreeSet<&str> = FEATURES.iter().map(|(f, _)| *f).collect();
    let mut names = BTreeSet::new();
    for t in &spec.tests {
        if t.name.is_empty()
            || !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            bail!(
                "test name {:?}: use only letters, digits, '.', '_', '-'",
                t.name
            );
        }
        if !names.insert(t.name.as_str()) {
            bail!("test name {:?} appears twice", t.name);
        }
        if t.run.trim().is_empty() {
            bail!("test {}: \"run\" is empty", t.name);
        }
        for r in &t.requires {
            if !known.contains(r.as_str()) {
                bail!(
                    "test {}: unknown required feature {r:?} (known: {})",
                    t.name,
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                );
            }
        }
        for b in &t.bins {
            if b.profile != "release" && b.profile != "dev" {
                bail!(
                    "test {}: bin {}: profile must be \"release\" or \"dev\"",
                    t.name,
                    b.bin
                );
            }
        }
        for f in &t.files {
            if f.starts_with('/') || f.split('/').any(|c| c == "..") {
                bail!(
                    "test {}: file {f:?} must be a relative path inside the repository",
                    t.name
                );
            }
        }
        if t.timeout_secs == 0 {
            bail!("test {}: timeout_secs must be at least 1", t.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Spec> {
        let spec: Spec = serde_json::from_str(s)?;
        validate(&spec)?;
        Ok(spec)
    }

    #[test]
    fn minimal_entry_gets_defaults() {
        let s = parse(r#"{"tests":[{"name":"a","run":"true"}]}"#).unwrap();
        assert_eq!(s.tests[0].timeout_secs, 120);
        assert!(s.tests[0].requires.is_empty());
    }

    #[test]
    fn rejects_typos() {
        assert!(parse(r#"{"tests":[{"name":"a","run":"true","requires":["softdirt"]}]}"#).is_err());
        assert!(parse(r#"{"tests":[{"name":"a","run":"true","requirse":[]}]}"#).is_err());
        assert!(parse(r#"{"tests":[{"name":"a b","run":"true"}]}"#).is_err());
        assert!(parse(r#"{"tests":[{"name":"a","run":"x"},{"name":"a","run":"y"}]}"#).is_err());
    }

    #[test]
    fn the_repository_spec_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vm/tests.json");
        load(&path).unwrap();
    }
}
