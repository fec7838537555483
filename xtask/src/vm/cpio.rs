//! A minimal writer for the `newc` cpio format (what the kernel unpacks as an initramfs):
//! directories, regular files (streamed from the host), symlinks and device nodes, all
//! owned by root with mtime 0 so the archive depends only on its contents.
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;

/// One archive entry; the key in [`Archive`] is its guest path without the leading `/`.
#[derive(Debug, Clone)]
pub enum Entry {
    Dir,
    /// A host file copied as is, with this permission mode.
    HostFile(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(String),
    /// Character device (major, minor).
    CharDev(u32, u32),
}

/// A set of guest paths; parents are added as directories automatically.
#[derive(Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds (or replaces) `path`, e.g. `"bin/sh"` or `"/bin/sh"`.
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            self.entries.entry(p.to_string()).or_insert(Entry::Dir);
            parent = p;
        }
        self.entries.insert(path, entry);
    }

    /// Number of entries (files, directories, links, nodes).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// Writes the archive; returns the number of bytes written.
    pub fn write(&self, out: impl Write) -> Result<u64> {
        let mut w = Counting { inner: out, n: 0 };
        // Parents sort before their children ("a" < "a/b"), as the kernel needs.
        for (ino, (path, entry)) in self.entries.iter().enumerate() {
            let ino = ino as u32 + 1;
            match entry {
                Entry::Dir => header(&mut w, ino, 0o040755, 2, 0, (0, 0), path)?,
                Entry::HostFile(src, mode) => {
                    let data = std::fs::read(src)
                        .with_context(|| format!("reading {} for the initramfs", src.display()))?;
                    header(&mut w, ino, 0o100000 | mode, 1, data.len(), (0, 0), path)?;
                    w.write_all(&data)?;
                    pad(&mut w)?;
                }
                Entry::Bytes(data, mode) => {
                    header(&mut w, ino, 0o100000 | mode, 1, data.len(), (0, 0), path)?;
                    w.write_all(data)?;
                    pad(&mut w)?;
                }
                Entry::Symlink(target) => {
                    header(&mut w, ino, 0o120777, 1, target.len(), (0, 0), path)?;
                    w.write_all(target.as_bytes())?;
                    pad(&mut w)?;
                }
                Entry::CharDev(major, minor) => {
                    header(&mut w, ino, 0o020600, 1, 0, (*major, *minor), path)?
                }
            }
        }
        header(&mut w, 0, 0, 1, 0, (0, 0), "TRAILER!!!")?;
        w.inner.flush()?;
        Ok(w.n)
    }
}

struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<W>) -> io::Result<()> {
    let rem = (4 - (w.n % 4) as usize) % 4;
    w.write_all(&[0u8; 3][..rem])
}

fn header<W: Write>(
    w: &mut Counting<W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: usize,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        size as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    let mut h = String::with_capacity(110);
    h.push_str("070701");
    for f in fields {
        h.push_str(&format!("{f:08X}"));
    }
    w.write_all(h.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    pad(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_has_parents() {
        let mut a = Archive::default();
        a.add("/usr/local/bin/x", Entry::Bytes(b"hello".to_vec(), 0o755));
        assert!(a.contains("usr/local"));
        let mut buf = Vec::new();
        let n = a.write(&mut buf).unwrap();
        assert_eq!(n as usize, buf.len());
        assert_eq!(buf.len() % 4, 0);
        assert!(buf.starts_with(b"070701"));
        let text = String::from_utf8_lossy(&buf);
        assert!(text.contains("usr/local/bin/x\0"));
        assert!(text.contains("TRAILER!!!\0"));
    }
}
