//! Files a user names: the inputs (`predict --profile`, `plot FILE`), read only if they are
//! regular files and only up to a cap, and the outputs (`--profile-out`, `--hdr-log`,
//! `plot -o`), opened so that a symlink at the path is never written through.
//!
//! Inputs ([`read_capped`]): `O_NONBLOCK` at open, so a FIFO is not waited on, the type
//! checked on the open file, and at most the caller's cap read (`plot /dev/zero` took
//! 1.5 GB in 1.2 s before).
//!
//! migtrace runs as root, often with its files in a shared, sticky `/tmp`, and not every host
//! has `fs.protected_symlinks=1` or `fs.protected_hardlinks=1`: a symlink another user
//! planted at `/tmp/vm.hlog` pointing at `/etc/passwd` made `watch --hdr-log /tmp/vm.hlog`
//! overwrite it, and a hard link would have done the same. What is at an output path decides
//! how it is written ([`Way`]):
//! - nothing, a regular file, or a symlink another user (not root) owns: a new file, created
//!   `O_CREAT | O_EXCL` under a random name beside the path (a link planted at a guessed name
//!   fails the create instead of being followed), then renamed over the path. A planted
//!   symlink or a hard link at the path is replaced, never written through;
//! - a symlink of our own or root's (`/dev/stdout`, a link the operator made) or a device
//!   (`/dev/null`): written through, as a shell's `>` would. Renaming over them as root
//!   would replace the system's `/dev/stdout` or `/dev/null` for every process, and no other
//!   user can make either;
//! - a folder, a FIFO or a socket: refused (a FIFO another user made is not written to).
//!
//! [`replace`] renames once the whole file is written, so a reader never sees half of it;
//! [`create_stream`] renames at once and hands out the new file, for a log written as the run
//! goes.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

/// Permission bits of the files migtrace writes (before the umask).
const MODE: u32 = 0o644;

/// Why an input file was not read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// Not a regular file: what it is, in words.
    NotAFile(&'static str),
    /// Larger than the cap.
    TooLarge,
}

/// Reads the regular file at `path`, at most `max` bytes (a larger one is refused, also
/// when it grows while read or reports no size, as /proc files do).
pub fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    // O_NONBLOCK: opening a FIFO does not wait for a writer; O_NOCTTY: a terminal does
    // not become ours. The type is checked on the open file, so it cannot change after.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(ReadError::Io)?;
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(file_kind(meta.file_type())));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

/// The kind of a file that is not a regular one, in words.
pub fn file_kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

/// How an output path is written (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// A new file renamed over the path.
    New,
    /// Opened and written through (our own symlink, a device).
    Through,
}

/// How `path` is written, or why it is refused.
fn way(path: &Path) -> io::Result<Way> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Way::New),
        Err(e) => return Err(e),
        Ok(m) => m,
    };
    let ft = m.file_type();
    if ft.is_symlink() {
        // Ours, or root's (only root made it: `/dev/stdout` for any user); anyone else's
        // is a link planted for us.
        // SAFETY: geteuid has no preconditions.
        if m.uid() != unsafe { libc::geteuid() } && m.uid() != 0 {
            return Ok(Way::New);
        }
        return match std::fs::metadata(path) {
            Ok(t) if t.is_dir() => Err(io::Error::from(io::ErrorKind::IsADirectory)),
            _ => Ok(Way::Through),
        };
    }
    if ft.is_dir() {
        Err(io::Error::from(io::ErrorKind::IsADirectory))
    } else if ft.is_file() {
        Ok(Way::New)
    } else if ft.is_char_device() || ft.is_block_device() {
        Ok(Way::Through)
    } else {
        Err(io::Error::other(format!(
            "is {}: not written to (give a file's path)",
            file_kind(ft)
        )))
    }
}

/// Opens `path` for writing, following it (only for [`Way::Through`]).
fn open_through(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(MODE)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path`: a new file renamed over it once written, or through it.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if way(path)? == Way::Through {
        return open_through(path)?.write_all(bytes);
    }
    let (tmp, mut f) = create_temp_beside(path)?;
    let written = f.write_all(bytes).and_then(|_| f.sync_all());
    let done = written.and_then(|_| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Checks that [`replace`] can write `path` later: it is not refused, and for a new file
/// its folder exists and takes new files. Leaves nothing behind and does not touch `path`.
pub fn check_replaceable(path: &Path) -> io::Result<()> {
    if way(path)? == Way::Through {
        return Ok(());
    }
    let (tmp, _f) = create_temp_beside(path)?;
    std::fs::remove_file(tmp)
}

/// An empty file at `path` for writing as the run goes: a new file renamed over the path at
/// once (whatever was there, a file, a planted symlink or a hard link, is replaced, never
/// opened), or the path opened through.
pub fn create_stream(path: &Path) -> io::Result<File> {
    if way(path)? == Way::Through {
        return open_through(path);
    }
    let (tmp, f) = create_temp_beside(path)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(f)
}

/// A new file beside `path` under a random name, created with `O_EXCL` (which does not
/// follow a symlink at that name either).
fn create_temp_beside(path: &Path) -> io::Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..8 {
        let tmp = format!(".{name}.{:016x}.tmp", rand::random::<u64>());
        let tmp: PathBuf = dir.map_or_else(|| tmp.clone().into(), |d| d.join(&tmp));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("migtrace-outfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The planted link of issue 17: a symlink, owned by another user (nobody), at the
    /// output path to a file that must stay as it was. `None`, with the reason printed,
    /// where the test cannot give a link away (not root).
    fn planted(d: &Path) -> Option<(PathBuf, PathBuf)> {
        let victim = d.join("passwd");
        std::fs::write(&victim, "root:x:0:0\n").unwrap();
        let link = d.join("out");
        symlink(&victim, &link).unwrap();
        if let Err(e) = std::os::unix::fs::lchown(&link, Some(65534), Some(65534)) {
            eprintln!("skipped: giving the planted link to another user needs root ({e})");
            return None;
        }
        Some((victim, link))
    }

    #[test]
    fn replace_replaces_a_symlink_and_never_writes_through_it() {
        let d = dir("replace");
        let Some((victim, link)) = planted(&d) else {
            return;
        };
        replace(&link, b"ours\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "ours\n");
        // Nothing left beside it but the two files.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The planted links of issue 17, a symlink and a hard link: replaced by a new file,
    /// their targets as they were. A FIFO and a folder are refused.
    #[test]
    fn create_stream_replaces_planted_links_and_refuses_fifos() {
        let d = dir("stream");
        let Some((victim, link)) = planted(&d) else {
            return;
        };
        let mut h = create_stream(&link).unwrap();
        h.write_all(b"log").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "log");
        let hard = d.join("hard");
        std::fs::hard_link(&victim, &hard).unwrap();
        create_stream(&hard).unwrap().write_all(b"x").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = create_stream(&fifo).unwrap_err().to_string();
        assert!(e.contains("is a FIFO"), "{e}");
        assert!(create_stream(&d).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// `/dev/stdout` and `/dev/null` as root: written through, never renamed over (that
    /// would replace them for the whole host). Our own symlink is followed.
    #[test]
    fn own_links_and_devices_are_written_through() {
        let d = dir("through");
        let own = d.join("own");
        symlink("/dev/null", &own).unwrap();
        replace(&own, b"x").unwrap();
        create_stream(&own).unwrap().write_all(b"x").unwrap();
        assert!(std::fs::symlink_metadata(&own).unwrap().is_symlink());
        replace(Path::new("/dev/null"), b"x").unwrap();
        check_replaceable(Path::new("/dev/stdout")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let null = std::fs::symlink_metadata("/dev/null").unwrap().file_type();
        assert!(null.is_char_device());
        assert!(std::fs::symlink_metadata("/dev/stdout")
            .unwrap()
            .is_symlink());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn read_capped_refuses_devices_fifos_and_large_files() {
        let d = dir("read");
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), 1 << 20),
            Err(ReadError::NotAFile("a character device"))
        ));
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_capped(&fifo, 1 << 20),
            Err(ReadError::NotAFile("a FIFO"))
        ));
        let f = d.join("f");
        std::fs::write(&f, vec![b'x'; 100]).unwrap();
        assert!(matches!(read_capped(&f, 99), Err(ReadError::TooLarge)));
        assert_eq!(read_capped(&f, 100).unwrap().len(), 100);
        // No size reported, more than the cap: refused all the same.
        assert!(matches!(
            read_capped(Path::new("/proc/self/maps"), 10),
            Err(ReadError::TooLarge)
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn check_replaceable_leaves_the_path_alone() {
        let d = dir("check");
        let Some((victim, link)) = planted(&d) else {
            return;
        };
        check_replaceable(&link).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(check_replaceable(&d).is_err());
        assert!(check_replaceable(&d.join("no/such/dir/file")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
