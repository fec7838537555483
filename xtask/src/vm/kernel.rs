//! The guest kernel: Debian 12's newest `linux-image-6.1.0-<N>-amd64`, fetched with
//! `apt-get download` and unpacked into a cache under `target/vmtest/kernel/`.
//!
//! Only `./boot` (vmlinuz, config, System.map) is unpacked from the package: everything the
//! tests need is built in (`=y`), so no modules go into the guest. The `.deb` stays in the
//! cache should modules ever be needed (`dpkg-deb -x` it). A second run finds the unpacked
//! kernel and does no download, only one `apt-cache pkgnames` look-up.
use crate::sys;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

const PREFIX: &str = "linux-image-6.1.0-";
const SUFFIX: &str = "-amd64";
const STAMP: &str = ".unpacked";

/// An unpacked guest kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// Debian package name, e.g. `linux-image-6.1.0-56-amd64`.
    pub package: String,
    /// Kernel release, e.g. `6.1.0-56-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `CONFIG_*` options from `boot/config-<release>` (value `y`, `m`, a string, ...).
    pub config: BTreeMap<String, String>,
    /// True when it was downloaded in this run (cold), false when reused from the cache.
    pub downloaded: bool,
}

impl Kernel {
    /// `y`, `m` or `not set` for one option.
    pub fn config_value(&self, option: &str) -> &str {
        self.config
            .get(option)
            .map(String::as_str)
            .unwrap_or("not set")
    }
}

/// ABI number N of a `linux-image-6.1.0-N-amd64` package name.
fn abi_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

fn apt_candidates() -> Result<Vec<u32>> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", PREFIX])
        .output()
        .context("could not run apt-cache (package apt)")?;
    let mut abis: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| abi_of(l.trim()))
        .collect();
    abis.sort_unstable();
    Ok(abis)
}

fn cached(cache: &Path) -> Vec<u32> {
    let mut abis: Vec<u32> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let abi = abi_of(&name)?;
            e.path().join(STAMP).exists().then_some(abi)
        })
        .collect();
    abis.sort_unstable();
    abis
}

/// Finds (downloading and unpacking if needed) the newest Debian 12 kernel.
/// `cache` is e.g. `target/vmtest/kernel`.
pub fn ensure(cache: &Path) -> Result<Kernel> {
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // `apt-cache pkgnames` takes ~0.5 s here (no pkgcache.bin): remember its answer for as
    // long as apt's package lists stay the same.
    let memo = cache.join("apt-newest");
    let fingerprint = lists_fingerprint();
    if let Ok(text) = std::fs::read_to_string(&memo) {
        if let Some((fp, n)) = text.rsplit_once('\n') {
            if fp == fingerprint {
                if let Ok(n) = n.trim().parse::<u32>() {
                    if cache
                        .join(format!("{PREFIX}{n}{SUFFIX}"))
                        .join(STAMP)
                        .exists()
                    {
                        return load(cache, n, false);
                    }
                }
            }
        }
    }
    let mut abis = apt_candidates()?;
    if abis.is_empty() {
        if let Some(&n) = cached(cache).last() {
            println!(
                "vmtest: apt knows no {PREFIX}N{SUFFIX} package; using the cached {PREFIX}{n}{SUFFIX}"
            );
            return load(cache, n, false);
        }
        if sys::apt_update()? {
            abis = apt_candidates()?;
        }
    }
    let Some(&n) = abis.last() else {
        bail!(
            "apt-cache lists no {PREFIX}<N>{SUFFIX} package even after apt-get update: \
             this needs Debian 12 (bookworm) package sources in /etc/apt/sources.list(.d)"
        );
    };
    let dir = cache.join(format!("{PREFIX}{n}{SUFFIX}"));
    let downloaded = !dir.join(STAMP).exists();
    if downloaded {
        fetch(cache, n)?;
    }
    let kernel = load(cache, n, downloaded)?;
    let _ = std::fs::write(&memo, format!("{}\n{n}", lists_fingerprint()));
    Ok(kernel)
}

/// Names, sizes and mtimes of apt's package lists: changes whenever `apt-get update` does.
fn lists_fingerprint() -> String {
    let mut parts: Vec<String> = std::fs::read_dir("/var/lib/apt/lists")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            let t = m
                .modified()
                .ok()?
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?;
            Some(format!(
                "{}:{}:{}",
                e.file_name().to_string_lossy(),
                m.len(),
                t.as_nanos()
            ))
        })
        .collect();
    parts.sort();
    parts.join(" ")
}

fn fetch(cache: &Path, n: u32) -> Result<()> {
    let package = format!("{PREFIX}{n}{SUFFIX}");
    let dir = cache.join(&package);
    let dl = cache.join(format!("{package}.download"));
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    println!("vmtest: downloading {package} with apt-get download");
    sys::with_apt_retry(|| {
        sys::run(
            Command::new("apt-get")
                .args(["download", &package])
                .current_dir(&dl),
        )
    })
    .with_context(|| format!("apt-get download {package} failed"))?;
    let deb = std::fs::read_dir(&dl)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .with_context(|| {
            format!(
                "apt-get download {package} left no .deb in {}",
                dl.display()
            )
        })?;
    // Unpack only ./boot: `dpkg-deb --fsys-tarfile X | tar -x ./boot` (modules are not needed).
    println!("vmtest: unpacking ./boot of {}", deb.display());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (tar_status, dpkg_status) = untar_deb(&deb, &dir, ["./boot"])?;
    if !tar_status.success() || !dpkg_status.success() {
        bail!(
            "unpacking {} failed (dpkg-deb {dpkg_status}, tar {tar_status})",
            deb.display()
        );
    }
    let kept = dir.join(deb.file_name().expect("file name"));
    std::fs::rename(&deb, &kept)?;
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::write(dir.join(STAMP), b"")?;
    Ok(())
}

/// `dpkg-deb --fsys-tarfile DEB | tar -x -C INTO MEMBERS...`: unpacks only `members` of a
/// package's files. Returns tar's status and dpkg-deb's, for the caller to judge (dpkg-deb
/// may die of SIGPIPE once tar has all it asked for).
pub(super) fn untar_deb<S: AsRef<std::ffi::OsStr>>(
    deb: &Path,
    into: &Path,
    members: impl IntoIterator<Item = S>,
) -> Result<(ExitStatus, ExitStatus)> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("could not start dpkg-deb (package dpkg)")?;
    let tar = Command::new("tar")
        .args(["-x", "-C"])
        .arg(into)
        .args(members)
        .stdin(dpkg.stdout.take().expect("piped"))
        .status()
        .context("could not start tar")?;
    Ok((tar, dpkg.wait()?))
}

fn load(cache: &Path, n: u32, downloaded: bool) -> Result<Kernel> {
    let package = format!("{PREFIX}{n}{SUFFIX}");
    let release = format!("6.1.0-{n}{SUFFIX}");
    let boot = cache.join(&package).join("boot");
    let vmlinuz = boot.join(format!("vmlinuz-{release}"));
    let config_path = boot.join(format!("config-{release}"));
    if !vmlinuz.is_file() {
        bail!(
            "{} is missing; delete {} to fetch the kernel again",
            vmlinuz.display(),
            cache.join(&package).display()
        );
    }
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("CONFIG_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    Ok(Kernel {
        package,
        release,
        vmlinuz,
        config,
        downloaded,
    })
}

#[cfg(test)]
mod tests {
    use super::abi_of;

    #[test]
    fn package_names() {
        assert_eq!(abi_of("linux-image-6.1.0-56-amd64"), Some(56));
        assert_eq!(abi_of("linux-image-6.1.0-56-cloud-amd64"), None);
        assert_eq!(abi_of("linux-image-6.1.0-56-amd64-unsigned"), None);
    }
}
