//! The dirty profile: what `watch --profile-out` writes and `predict --profile` reads.
//!
//! Format `migtrace-profile`, version 1, JSON. It is documented in `docs/profile.md`; any
//! change that a version-1 reader could misread bumps `version`. Readers reject other
//! formats and newer versions with a clear message rather than guessing.
use serde::{Deserialize, Serialize};

use crate::report::Summary;

/// Value of [`Profile::format`].
pub const FORMAT: &str = "migtrace-profile";
/// Current [`Profile::version`].
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for what this build writes.
    pub version: u32,
    /// migtrace version that wrote it.
    pub tool_version: String,
    /// Seconds since the Unix epoch when the watch ended.
    pub created_unix_s: u64,
    pub target: TargetInfo,
    /// Backend that measured the dirtying (`fault`, `sample`, `softdirty`, or `sample+fault`).
    pub backend: String,
    /// What the backend can and cannot see, in words (shown by `predict`).
    pub caveats: Vec<String>,
    /// Length of the watch, seconds.
    pub duration_s: f64,
    /// Length of one measurement interval, seconds.
    pub interval_s: f64,
    pub dirty: DirtyRate,
    /// Dirty-set growth curve: unique pages dirtied within a window of `window_s`, averaged
    /// over the windows observed, sorted by `window_s`. This, not rate x time, is what a
    /// pre-copy pass has to resend.
    pub growth: Vec<GrowthPoint>,
    /// Per-thread shares, largest first (empty when the backend attributes nothing to
    /// threads). What they count is in `thread_counts`.
    pub threads: Vec<ThreadShare>,
    /// What `threads[].pages` counts: `dirtied-pages` (fault, softdirty: the dirtying
    /// itself) or `write-faults` (sample+fault: first-touch and copy-on-write faults, next
    /// to a rate measured by sampling; a thread rewriting resident memory takes none).
    /// Profiles written before this field existed carried only dirtied pages.
    #[serde(default)]
    pub thread_counts: ThreadCounts,
    /// Fraction of the target's busy time on CPU over the watch, summed over threads and
    /// divided by the number of threads that dirtied memory, in [0, 1]. A CPU throttle
    /// (auto-converge, SDPS) slows dirtying only as far as the writers are on CPU.
    pub busy_share: Option<f64>,
    /// Fraction of the target's writable memory that reads as zero pages (QEMU sends those
    /// as a few bytes), when the backend measured it. For a guest: of its RAM.
    pub zero_page_share: Option<f64>,
    /// The guest, when the target was a QEMU process: its RAM size (what `predict` takes as
    /// the memory to migrate), the RAM blocks measured, what of QEMU was left out, and the
    /// vCPUs with their busy shares. Absent for other processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<crate::report::GuestInfo>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    /// Resident set size at the end of the watch (bytes).
    pub rss_bytes: u64,
    /// Writable mapped memory measured (bytes): private mappings and shared memory
    /// (memfd, shared anonymous, files); the upper bound of what could be dirtied.
    pub writable_bytes: u64,
    /// Of which shared mappings (QEMU RAM with `share=on` is one). Absent in older
    /// profiles, which measured private memory only.
    #[serde(default)]
    pub shared_writable_bytes: u64,
    /// Base page size in bytes.
    pub page_size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DirtyRate {
    /// Mean rate of unique pages dirtied per interval, bytes per second.
    pub bytes_per_sec: f64,
    /// The same in pages per second.
    pub pages_per_sec: f64,
    /// 95 % confidence interval of `bytes_per_sec` when the backend estimates (sampling).
    pub ci95_bytes_per_sec: Option<[f64; 2]>,
    /// Peak interval rate, bytes per second.
    pub peak_bytes_per_sec: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GrowthPoint {
    pub window_s: f64,
    pub unique_pages: f64,
    /// How many windows of this length were averaged.
    pub windows: u64,
}

/// What per-thread counts measure.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadCounts {
    /// Pages each thread dirtied (exact attribution).
    #[default]
    DirtiedPages,
    /// Write faults each thread took: a proxy, not the dirtying itself.
    WriteFaults,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ThreadShare {
    pub tid: u32,
    pub comm: String,
    /// Write faults (or dirtied pages) attributed to the thread.
    pub pages: u64,
    /// Share of all attributed pages, in [0, 1].
    pub share: f64,
    /// Fraction of the watch the thread was on CPU, in [0, 1], when known.
    pub busy_share: Option<f64>,
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a migtrace profile: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{path} has format {found:?}, expected {FORMAT:?}")]
    Format { path: String, found: String },
    #[error("{path} is profile version {found}; this migtrace reads versions up to {VERSION}")]
    Version { path: String, found: u32 },
    #[error("{path} is not a valid profile: {why}")]
    Invalid { path: String, why: InvalidProfile },
    #[error("cannot write the profile to {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// A value in a profile that a model would misread.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidProfile(pub String);

impl Profile {
    /// The profile of a watch, from its summary: the same threads and busy share the
    /// summary shows, with what the thread counts measure (`threads_attribute_dirtying`:
    /// dirtied pages, else write faults). Its interval is the mean measured one.
    /// `created_unix_s` stamps it.
    pub fn from_summary(
        s: &Summary,
        threads_attribute_dirtying: bool,
        created_unix_s: u64,
    ) -> Profile {
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            created_unix_s,
            target: TargetInfo {
                pid: s.pid,
                comm: s.comm.clone(),
                rss_bytes: s.target_rss_bytes,
                writable_bytes: s.writable_bytes,
                shared_writable_bytes: s.shared_writable_bytes,
                page_size: s.page_size,
            },
            backend: s.backend.clone(),
            caveats: s.caveats.clone(),
            duration_s: s.duration_s,
            interval_s: s.interval_s,
            dirty: DirtyRate {
                bytes_per_sec: s.dirty_bytes_per_sec,
                pages_per_sec: s.dirty_pages_per_sec,
                ci95_bytes_per_sec: s.ci95_bytes_per_sec,
                peak_bytes_per_sec: s.peak_bytes_per_sec,
            },
            growth: s.growth.clone(),
            threads: s
                .threads
                .iter()
                .map(|t| ThreadShare {
                    tid: t.tid,
                    comm: t.comm.clone(),
                    pages: t.write_faults,
                    share: t.share,
                    busy_share: t.busy_share,
                })
                .collect(),
            thread_counts: if threads_attribute_dirtying {
                ThreadCounts::DirtiedPages
            } else {
                ThreadCounts::WriteFaults
            },
            busy_share: s.busy_share,
            zero_page_share: s.zero_page_share,
            guest: s.guest.clone(),
        }
    }

    /// The profile as written: pretty JSON and a final newline.
    pub fn to_text(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile always serializes") + "\n"
    }

    /// Writes the profile to `path` atomically: a temporary file in the same directory,
    /// then a rename. A reader never sees half a profile, and a symlink at `path` is
    /// replaced, never written through.
    pub fn save(&self, path: &std::path::Path) -> Result<(), ProfileError> {
        let err = |source| ProfileError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = temp_beside(path);
        std::fs::write(&tmp, self.to_text()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err(e)
        })
    }

    /// Checks, before a watch starts, that a profile can be written to `path`: its folder
    /// exists and takes new files, and `path` is not a folder. Leaves nothing behind.
    pub fn check_writable(path: &std::path::Path) -> Result<(), ProfileError> {
        let err = |source| ProfileError::Write {
            path: path.display().to_string(),
            source,
        };
        if path.is_dir() {
            return Err(err(std::io::Error::from(std::io::ErrorKind::IsADirectory)));
        }
        let tmp = temp_beside(path);
        std::fs::write(&tmp, b"").map_err(err)?;
        std::fs::remove_file(&tmp).map_err(err)
    }

    /// Reads and checks a profile file.
    pub fn load(path: &std::path::Path) -> Result<Profile, ProfileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses and checks profile JSON; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        // Check format and version before the full parse so an old or foreign file gets the
        // right message instead of "missing field".
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let head: Head = serde_json::from_str(text).map_err(|source| ProfileError::Parse {
            path: origin.to_string(),
            source,
        })?;
        let format = head.format.unwrap_or_default();
        if format != FORMAT {
            return Err(ProfileError::Format {
                path: origin.to_string(),
                found: format,
            });
        }
        let version = head.version.unwrap_or(0);
        if version > VERSION || version == 0 {
            return Err(ProfileError::Version {
                path: origin.to_string(),
                found: version,
            });
        }
        let p: Profile = serde_json::from_str(text).map_err(|source| ProfileError::Parse {
            path: origin.to_string(),
            source,
        })?;
        p.validate().map_err(|why| ProfileError::Invalid {
            path: origin.to_string(),
            why,
        })?;
        Ok(p)
    }

    /// Checks the values a model would silently misread: sizes, rates, shares and the
    /// growth curve (windows positive and strictly increasing, counts finite and not negative).
    pub fn validate(&self) -> Result<(), InvalidProfile> {
        self.check()
    }

    fn check(&self) -> Result<(), InvalidProfile> {
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(InvalidProfile(format!("{name} is {v}, outside [0, 1]")))
            }
        };
        let nonneg = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(InvalidProfile(format!(
                    "{name} is {v}, not a finite number >= 0"
                )))
            }
        };
        if self.target.page_size == 0 {
            return Err(InvalidProfile("target.page_size is 0".into()));
        }
        nonneg("duration_s", self.duration_s)?;
        nonneg("interval_s", self.interval_s)?;
        nonneg("dirty.bytes_per_sec", self.dirty.bytes_per_sec)?;
        nonneg("dirty.pages_per_sec", self.dirty.pages_per_sec)?;
        nonneg("dirty.peak_bytes_per_sec", self.dirty.peak_bytes_per_sec)?;
        for (i, g) in self.growth.iter().enumerate() {
            if !(g.window_s.is_finite() && g.window_s > 0.0) {
                return Err(InvalidProfile(format!(
                    "growth[{i}].window_s is {}, not above 0",
                    g.window_s
                )));
            }
            nonneg(&format!("growth[{i}].unique_pages"), g.unique_pages)?;
            if i > 0 && g.window_s <= self.growth[i - 1].window_s {
                return Err(InvalidProfile(format!(
                    "growth is not sorted by window_s (growth[{i}] = {} s after {} s)",
                    g.window_s,
                    self.growth[i - 1].window_s
                )));
            }
        }
        for (i, t) in self.threads.iter().enumerate() {
            share(&format!("threads[{i}].share"), t.share)?;
            if let Some(b) = t.busy_share {
                share(&format!("threads[{i}].busy_share"), b)?;
            }
        }
        if let Some(b) = self.busy_share {
            share("busy_share", b)?;
        }
        if let Some(z) = self.zero_page_share {
            share("zero_page_share", z)?;
        }
        Ok(())
    }

    /// Unique pages dirtied within a window of `window_s`, interpolated on the measured growth
    /// curve (linear between points, through the origin below the first point, and flat past
    /// the last point, where the curve is at its most saturated). Never exceeds the writable
    /// memory.
    pub fn unique_pages_in(&self, window_s: f64) -> f64 {
        let cap = (self.target.writable_bytes / self.target.page_size.max(1)) as f64;
        let pts = &self.growth;
        let v = if pts.is_empty() {
            self.dirty.pages_per_sec * window_s
        } else if window_s <= pts[0].window_s {
            pts[0].unique_pages * window_s / pts[0].window_s
        } else if let Some(w) = pts.windows(2).find(|w| window_s <= w[1].window_s) {
            let (a, b) = (&w[0], &w[1]);
            a.unique_pages
                + (b.unique_pages - a.unique_pages) * (window_s - a.window_s)
                    / (b.window_s - a.window_s)
        } else {
            pts[pts.len() - 1].unique_pages
        };
        if cap > 0.0 {
            v.min(cap)
        } else {
            v
        }
    }
}

/// A temporary name in the folder of `path`, unique to this process.
fn temp_beside(path: &std::path::Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    dir.map_or_else(|| tmp.clone().into(), |d| d.join(&tmp))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Profile {
        Profile {
            format: FORMAT.into(),
            version: VERSION,
            tool_version: "test".into(),
            created_unix_s: 0,
            target: TargetInfo {
                pid: 1,
                comm: "t".into(),
                rss_bytes: 1 << 30,
                writable_bytes: 1 << 30,
                shared_writable_bytes: 0,
                page_size: 4096,
            },
            backend: "sample".into(),
            caveats: vec![],
            duration_s: 10.0,
            interval_s: 1.0,
            dirty: DirtyRate {
                bytes_per_sec: 1e6,
                pages_per_sec: 244.0,
                ci95_bytes_per_sec: None,
                peak_bytes_per_sec: 1e6,
            },
            growth: vec![
                GrowthPoint {
                    window_s: 1.0,
                    unique_pages: 244.0,
                    windows: 10,
                },
                GrowthPoint {
                    window_s: 2.0,
                    unique_pages: 480.0,
                    windows: 5,
                },
            ],
            threads: vec![],
            thread_counts: ThreadCounts::DirtiedPages,
            busy_share: Some(0.5),
            zero_page_share: None,
            guest: None,
        }
    }

    fn reject(p: &Profile, needle: &str) {
        let text = serde_json::to_string(p).unwrap();
        let e = Profile::parse(&text, "x.json").unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }

    #[test]
    fn round_trips_and_rejects_bad_values() {
        let p = sample();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(Profile::parse(&text, "x").unwrap(), p);

        let mut q = sample();
        q.growth.swap(0, 1);
        reject(&q, "not sorted");
        let mut q = sample();
        q.growth[0].window_s = 0.0;
        reject(&q, "not above 0");
        let mut q = sample();
        q.zero_page_share = Some(2.0);
        reject(&q, "outside [0, 1]");
        let mut q = sample();
        q.target.page_size = 0;
        reject(&q, "page_size");
        let mut q = sample();
        q.version = VERSION + 1;
        reject(&q, "reads versions up to");
        reject_text("{\"format\":\"other\"}", "expected");
    }

    fn reject_text(text: &str, needle: &str) {
        let e = Profile::parse(text, "x").unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}
