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
    // Modules, not built in: a boot with `"nested_kvm": true` loads them, and only there is
    // the feature expected (see `expected_features` in mod.rs).
    ("kvm", &["CONFIG_KVM", "CONFIG_KVM_AMD"]),
];

/// Features that come from kernel modules the harness loads: expected (a harness failure
/// when missing) in a `nested_kvm` boot whose kernel config builds them as `y` or `m`.
pub const MODULE_FEATURES: &[&str] = &["kvm"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// How the guest of this spec boots; the default is the plain TCG guest.
    #[serde(default)]
    pub boot: BootSpec,
    pub tests: Vec<TestSpec>,
}

/// The machine one spec's tests run in (one boot per spec file).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSpec {
    /// QEMU `-cpu` model; `None` is QEMU's default (`qemu64`, no SVM).
    #[serde(default)]
    pub cpu: Option<String>,
    /// Guest RAM in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// A real KVM inside the TCG guest (docs/vmtest.md, "Nested KVM"): needs a `-cpu` with
    /// SVM (`max`). The harness puts the kvm modules, the host's QEMU with its libraries and
    /// firmware, and an inner guest (kernel + writer initramfs) into the initramfs, and
    /// `/init` loads the modules, so `/dev/kvm` exists (feature `kvm`).
    #[serde(default)]
    pub nested_kvm: bool,
    /// Seconds this boot may take before QEMU is killed, unless `--timeout` says otherwise
    /// (default 480).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

impl Default for BootSpec {
    fn default() -> Self {
        BootSpec {
            cpu: None,
            memory_mib: default_memory_mib(),
            nested_kvm: false,
            timeout_secs: None,
        }
    }
}

/// A boot's overall limit when neither `--timeout` nor the spec gives one.
pub const DEFAULT_BOOT_TIMEOUT_SECS: u64 = 480;

fn default_memory_mib() -> u64 {
    1024
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

/// The spec files `cargo xtask vmtest` runs without `--spec`, one boot each, in this order
/// (relative to the repository root).
pub const DEFAULT_SPECS: &[&str] = &["tests/vm/tests.json", "tests/vm/kvm.json"];

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
    let b = &spec.boot;
    if b.timeout_secs == Some(0) {
        bail!("boot.timeout_secs must be at least 1");
    }
    validate_boot(b)?;
    let known: BTreeSet<&str> = FEATURES.iter().map(|(f, _)| *f).collect();
    validate_tests(spec, &known)
}

/// The `boot` section: a nested-KVM boot needs an SVM CPU and room for inner guests.
fn validate_boot(b: &BootSpec) -> Result<()> {
    if b.memory_mib < 256 {
        bail!(
            "boot.memory_mib {} is too small (at least 256)",
            b.memory_mib
        );
    }
    if b.nested_kvm {
        let svm = b
            .cpu
            .as_deref()
            .is_some_and(|c| c == "max" || c == "host" || c.contains("+svm"));
        if !svm {
            bail!(
                "boot.nested_kvm needs a CPU with SVM: set boot.cpu to \"max\" (got {:?})",
                b.cpu
            );
        }
        if b.memory_mib < 2048 {
            bail!(
                "boot.nested_kvm: boot.memory_mib {} leaves no room for inner guests (use 3072)",
                b.memory_mib
            );
        }
    }
    Ok(())
}

fn validate_tests(spec: &Spec, known: &BTreeSet<&str>) -> Result<()> {
    let b = &spec.boot;
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
            if MODULE_FEATURES.contains(&r.as_str()) && !b.nested_kvm {
                bail!(
                    "test {}: requires {r:?}, which only a boot with \"nested_kvm\": true has \
                     (put it in tests/vm/kvm.json)",
                    t.name
                );
            }
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
    fn the_repository_specs_parse() {
        for f in DEFAULT_SPECS {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(f);
            load(&path).unwrap();
        }
    }

    #[test]
    fn boot_section() {
        let s = parse(r#"{"tests":[{"name":"a","run":"true"}]}"#).unwrap();
        assert_eq!(s.boot, BootSpec::default());
        let nested = r#"{"boot":{"cpu":"max","memory_mib":3072,"nested_kvm":true},
            "tests":[{"name":"a","run":"true","requires":["kvm"]}]}"#;
        assert!(parse(nested).unwrap().boot.nested_kvm);
        // kvm without a nested boot, a nested boot without SVM or memory, typos.
        assert!(parse(r#"{"tests":[{"name":"a","run":"true","requires":["kvm"]}]}"#).is_err());
        assert!(parse(r#"{"boot":{"nested_kvm":true,"memory_mib":3072},"tests":[]}"#).is_err());
        assert!(parse(r#"{"boot":{"cpu":"max","nested_kvm":true},"tests":[]}"#).is_err());
        assert!(parse(r#"{"boot":{"cpus":"max"},"tests":[]}"#).is_err());
    }
}
