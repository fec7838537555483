//! The dirty profile: what `watch --profile-out` writes and `predict --profile` reads.
//!
//! Format `migtrace-profile`, version 1, JSON. It is documented in `docs/profile.md`; any
//! change that a version-1 reader could misread bumps `version`. Readers reject other
//! formats and newer versions with a clear message rather than guessing.
use serde::{Deserialize, Serialize};

use crate::record::{GrowthPoint, GuestInfo, LinkSummary, Summary};

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
    pub guest: Option<GuestInfo>,
    /// The link measured beside the dirtying (`watch --iface`): `predict --profile` without
    /// `--link` takes its headroom as the link. Absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkInfo>,
}

/// The link side of a watch (docs/sendpath.md).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LinkInfo {
    pub iface: Option<String>,
    /// Nominal link, bits per second, and where it came from (`--link` or sysfs).
    pub link_bits: Option<f64>,
    pub link_from: Option<String>,
    pub efficiency: f64,
    /// Mean interface tx over the watch (other traffic), bytes per second.
    pub tx_bytes_per_sec: Option<f64>,
    /// link x efficiency - tx, bytes per second: what a migration would get.
    pub headroom_bytes_per_sec: Option<f64>,
}

impl From<&LinkSummary> for LinkInfo {
    fn from(l: &LinkSummary) -> Self {
        LinkInfo {
            iface: l.iface.clone(),
            link_bits: l.link_bits,
            link_from: l.link_from.clone(),
            efficiency: l.efficiency,
            tx_bytes_per_sec: l.tx_bytes_per_sec,
            headroom_bytes_per_sec: l.headroom_bytes_per_sec,
        }
    }
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

/// Why a profile could not be read. Every message is one line: paths and echoed file
/// content are escaped and cut short.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is {kind}, not a regular file: give a profile written by `migtrace watch --profile-out`")]
    NotAFile { path: String, kind: &'static str },
    #[error("{path} is larger than {} MiB, the most a profile may be (a profile is a few KiB)", MAX_PROFILE_BYTES >> 20)]
    TooLarge { path: String },
    #[error("{path} is not a migtrace profile: {}", one_line(&.source.to_string()))]
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

/// The most bytes [`Profile::load`] reads: a real profile is a few KiB, and a device or a
/// runaway file must not fill the memory.
pub const MAX_PROFILE_BYTES: u64 = 64 << 20;

/// The bounds [`Profile::validate`] holds a profile to (`docs/reliability.md`).
pub mod limits {
    /// Page sizes: 4 KiB base pages to 1 GiB huge pages.
    pub const PAGE_MIN: u64 = 4096;
    pub const PAGE_MAX: u64 = 1 << 30;
    /// Memory (writable, resident): at most 64 PiB, as `predict --mem`.
    pub const MEM_MAX: u64 = 1 << 56;
    /// Rates: at most 10 TB/s, as `predict --dirty-rate`.
    pub const RATE_MAX: f64 = 1e13;
    /// Times (watch length, interval, growth windows): at most a year.
    pub const SECONDS_MAX: f64 = 365.0 * 86400.0;
    /// Linux's PID_MAX_LIMIT (2^22).
    pub const PID_MAX: u32 = 1 << 22;
    /// Growth points: a watch writes a few dozen.
    pub const GROWTH_POINTS_MAX: usize = 4096;
    /// Threads: each becomes a writer the model steps through every pass; the kernel map
    /// that counts them (`THREADS` in `migtrace-ebpf/src/maps.rs`) holds 16384.
    pub const THREADS_MAX: usize = 16384;
    pub const CAVEATS_MAX: usize = 256;
    /// Characters in any one string (comm, backend, a caveat).
    pub const STRING_MAX: usize = 4096;
    /// Relative noise allowed to estimated unique-page counts (a HyperLogLog sketch is
    /// within about 1 % of the truth): a growth point may fall short of the one before, or
    /// exceed the pages of the writable memory, by this much and no more.
    pub const ESTIMATE_SLACK: f64 = 0.03;
}

/// `v` when finite and in `[lo, hi]`, else the error naming the field and the range.
fn in_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), InvalidProfile> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(InvalidProfile(format!(
            "{name} is {}, outside [{}, {}]",
            short_num(v),
            short_num(lo),
            short_num(hi)
        )))
    }
}

/// A number for a message: `1e308`, not a 309-digit integer.
fn short_num(v: f64) -> String {
    if v.is_finite() && v.abs() < 1e15 {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

/// At most `max` entries in the list `name`.
fn count(name: &str, n: usize, max: usize) -> Result<(), InvalidProfile> {
    if n <= max {
        Ok(())
    } else {
        Err(InvalidProfile(format!(
            "{name} has {n} entries, more than {max}"
        )))
    }
}

/// `s` escaped (control characters) and cut to 200 characters, for a one-line message.
fn one_line(s: &str) -> String {
    crate::units::cut(&crate::units::clean(s), 200)
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
            growth: monotone_growth(&s.growth),
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
            link: s.link.as_ref().map(LinkInfo::from),
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
        crate::files::replace(path, self.to_text().as_bytes()).map_err(err)
    }

    /// Checks, before a watch starts, that a profile can be written to `path`: its folder
    /// exists and takes new files, and `path` is not a folder. Leaves nothing behind.
    pub fn check_writable(path: &std::path::Path) -> Result<(), ProfileError> {
        let err = |source| ProfileError::Write {
            path: path.display().to_string(),
            source,
        };
        crate::files::check_replaceable(path).map_err(err)
    }

    /// Reads and checks a profile file. Only a regular file is read (a device such as
    /// `/dev/zero` or a FIFO is refused, without waiting on the FIFO), and at most
    /// [`MAX_PROFILE_BYTES`] of it.
    pub fn load(path: &std::path::Path) -> Result<Profile, ProfileError> {
        let p = one_line(&path.display().to_string());
        let io = |source| ProfileError::Io {
            path: p.clone(),
            source,
        };
        let bytes = crate::files::read_capped(path, MAX_PROFILE_BYTES).map_err(|e| match e {
            crate::files::ReadError::Io(e) => io(e),
            crate::files::ReadError::NotAFile(kind) => ProfileError::NotAFile {
                path: p.clone(),
                kind,
            },
            crate::files::ReadError::TooLarge => ProfileError::TooLarge { path: p.clone() },
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 text ({e})"),
            ))
        })?;
        Self::parse(&text, &p)
    }

    /// Parses and checks profile JSON; `origin` names it in errors. A UTF-8 byte order mark
    /// at the start is skipped.
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        // Check format and version before the full parse so an old or foreign file gets the
        // right message instead of "missing field".
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
            version: Option<u32>,
        }
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let origin = one_line(origin);
        let parse_err = |source| ProfileError::Parse {
            path: origin.clone(),
            source,
        };
        let head: Head = serde_json::from_str(text).map_err(parse_err)?;
        let format = head.format.unwrap_or_default();
        if format != FORMAT {
            return Err(ProfileError::Format {
                path: origin,
                found: format.chars().take(40).collect(),
            });
        }
        let version = head.version.unwrap_or(0);
        if version > VERSION || version == 0 {
            return Err(ProfileError::Version {
                path: origin,
                found: version,
            });
        }
        let p: Profile = serde_json::from_str(text).map_err(parse_err)?;
        p.validate()
            .map_err(|why| ProfileError::Invalid { path: origin, why })?;
        Ok(p)
    }

    /// Checks every value against what a model reads and the bounds of [`limits`]: the
    /// target (page size a power of two in 4 KiB..1 GiB, memory of at least one page), the
    /// rates and times (finite, within plausible bounds), the growth curve (windows
    /// positive and increasing, unique pages never decreasing and never more than the
    /// memory holds), the shares (in [0, 1]) and the sizes of lists and strings. The message
    /// names the field.
    pub fn validate(&self) -> Result<(), InvalidProfile> {
        self.check()
    }

    fn check(&self) -> Result<(), InvalidProfile> {
        self.check_target()?;
        self.check_numbers()?;
        self.check_growth()?;
        self.check_threads()?;
        self.check_strings()
    }

    fn check_target(&self) -> Result<(), InvalidProfile> {
        let t = &self.target;
        if !(t.page_size.is_power_of_two()
            && (limits::PAGE_MIN..=limits::PAGE_MAX).contains(&t.page_size))
        {
            return Err(InvalidProfile(format!(
                "target.page_size is {}, not a power of two from 4096 (4 KiB) to 1073741824 (1 GiB)",
                t.page_size
            )));
        }
        if t.writable_bytes < t.page_size || t.writable_bytes > limits::MEM_MAX {
            return Err(InvalidProfile(format!(
                "target.writable_bytes is {}, not from one page (target.page_size, {}) to 64 PiB",
                t.writable_bytes, t.page_size
            )));
        }
        if t.rss_bytes > limits::MEM_MAX {
            return Err(InvalidProfile(format!(
                "target.rss_bytes is {}, more than 64 PiB",
                t.rss_bytes
            )));
        }
        if t.pid > limits::PID_MAX {
            return Err(InvalidProfile(format!(
                "target.pid is {}, above Linux's PID_MAX_LIMIT ({})",
                t.pid,
                limits::PID_MAX
            )));
        }
        Ok(())
    }

    fn check_numbers(&self) -> Result<(), InvalidProfile> {
        let d = &self.dirty;
        let max_pps = limits::RATE_MAX / self.target.page_size as f64;
        in_range("duration_s", self.duration_s, 0.0, limits::SECONDS_MAX)?;
        in_range("interval_s", self.interval_s, 0.0, limits::SECONDS_MAX)?;
        in_range(
            "dirty.bytes_per_sec",
            d.bytes_per_sec,
            0.0,
            limits::RATE_MAX,
        )?;
        in_range("dirty.pages_per_sec", d.pages_per_sec, 0.0, max_pps)?;
        in_range(
            "dirty.peak_bytes_per_sec",
            d.peak_bytes_per_sec,
            0.0,
            limits::RATE_MAX,
        )?;
        if let Some([lo, hi]) = d.ci95_bytes_per_sec {
            in_range("dirty.ci95_bytes_per_sec[0]", lo, 0.0, limits::RATE_MAX)?;
            in_range("dirty.ci95_bytes_per_sec[1]", hi, lo, limits::RATE_MAX)?;
        }
        if let Some(b) = self.busy_share {
            in_range("busy_share", b, 0.0, 1.0)?;
        }
        if let Some(z) = self.zero_page_share {
            in_range("zero_page_share", z, 0.0, 1.0)?;
        }
        Ok(())
    }

    fn check_growth(&self) -> Result<(), InvalidProfile> {
        let g = &self.growth;
        count("growth", g.len(), limits::GROWTH_POINTS_MAX)?;
        let pages = (self.target.writable_bytes / self.target.page_size) as f64;
        let most = pages * (1.0 + limits::ESTIMATE_SLACK);
        for (i, p) in g.iter().enumerate() {
            if !(p.window_s.is_finite() && p.window_s > 0.0 && p.window_s <= limits::SECONDS_MAX) {
                return Err(InvalidProfile(format!(
                    "growth[{i}].window_s is {}, not above 0 and at most {} s",
                    short_num(p.window_s),
                    limits::SECONDS_MAX
                )));
            }
            in_range(&format!("growth[{i}].unique_pages"), p.unique_pages, 0.0, most)
                .map_err(|e| InvalidProfile(format!("{e} (more unique pages than target.writable_bytes / target.page_size = {pages} holds)")))?;
            let Some(q) = i.checked_sub(1).map(|j| &g[j]) else {
                continue;
            };
            if p.window_s <= q.window_s {
                return Err(InvalidProfile(format!(
                    "growth is not sorted by window_s (growth[{i}] = {} s after {} s)",
                    short_num(p.window_s),
                    short_num(q.window_s)
                )));
            }
            if p.unique_pages < q.unique_pages * (1.0 - limits::ESTIMATE_SLACK) {
                return Err(InvalidProfile(format!(
                    "growth decreases: growth[{i}].unique_pages is {} after {} (a longer window cannot hold fewer unique pages)",
                    short_num(p.unique_pages),
                    short_num(q.unique_pages)
                )));
            }
        }
        Ok(())
    }

    fn check_threads(&self) -> Result<(), InvalidProfile> {
        count("threads", self.threads.len(), limits::THREADS_MAX)?;
        for (i, t) in self.threads.iter().enumerate() {
            in_range(&format!("threads[{i}].share"), t.share, 0.0, 1.0)?;
            if let Some(b) = t.busy_share {
                in_range(&format!("threads[{i}].busy_share"), b, 0.0, 1.0)?;
            }
            if t.tid > limits::PID_MAX {
                return Err(InvalidProfile(format!(
                    "threads[{i}].tid is {}, above Linux's PID_MAX_LIMIT ({})",
                    t.tid,
                    limits::PID_MAX
                )));
            }
        }
        Ok(())
    }

    fn check_strings(&self) -> Result<(), InvalidProfile> {
        count("caveats", self.caveats.len(), limits::CAVEATS_MAX)?;
        let named = [
            ("tool_version", &self.tool_version),
            ("target.comm", &self.target.comm),
            ("backend", &self.backend),
        ];
        let caveats = self
            .caveats
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("caveats[{i}]"), c));
        let threads = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("threads[{i}].comm"), &t.comm));
        for (name, s) in named
            .into_iter()
            .map(|(n, s)| (n.to_string(), s))
            .chain(caveats)
            .chain(threads)
        {
            if s.chars().count() > limits::STRING_MAX {
                return Err(InvalidProfile(format!(
                    "{name} is {} characters long, more than {}",
                    s.chars().count(),
                    limits::STRING_MAX
                )));
            }
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

/// The growth curve as a profile states it: never decreasing. A longer window holds every
/// page a shorter one does; a sampled estimate of a near-idle target can dip by noise, and
/// `predict` refuses a curve that decreases.
fn monotone_growth(g: &[GrowthPoint]) -> Vec<GrowthPoint> {
    let mut top = 0.0f64;
    g.iter()
        .map(|p| {
            top = top.max(p.unique_pages);
            GrowthPoint {
                unique_pages: top,
                ..p.clone()
            }
        })
        .collect()
}

/// A temporary name in the folder of `path`, unique to this process.
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
            link: None,
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

    #[test]
    fn written_growth_never_decreases() {
        let p = |w: f64, u: f64| GrowthPoint {
            window_s: w,
            unique_pages: u,
            windows: 1,
        };
        let g = monotone_growth(&[p(1.0, 10.0), p(2.0, 8.0), p(4.0, 900.0)]);
        let u: Vec<f64> = g.iter().map(|x| x.unique_pages).collect();
        assert_eq!(u, vec![10.0, 10.0, 900.0]);
    }

    fn reject_text(text: &str, needle: &str) {
        let e = Profile::parse(text, "x").unwrap_err().to_string();
        assert!(e.contains(needle), "{e}");
    }
}
