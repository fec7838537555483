//! Files a user names: the inputs (`predict --profile`, `plot FILE`), read only if they are
//! regular files and only up to a cap, and the outputs (`--profile-out`, `--hdr-log`,
//! `plot -o`), opened so that a symlink at the path is never written through.
//!
//! Inputs ([`read_capped`]): `O_NONBLOCK` at open, so a FIFO is not waited on, the type
//! checked on the open file, and at most the caller's cap read (`plot /dev/zero` took
//! 1.5 GB in 1.2 s before).
//!
//! migtrace runs as root, often with its files in a shared, sticky `/tmp`, and not every host
//! has `fs.protected_symlinks=1`: a symlink another user planted at `/tmp/vm.hlog` pointing
//! at `/etc/passwd` made `watch --hdr-log /tmp/vm.hlog` overwrite it. Two ways, by what the
//! file is:
//! - a file written whole at the end ([`replace`]): a temporary file beside it, created with
//!   `O_CREAT | O_EXCL` under a random name (so a symlink planted at a guessed temporary name
//!   fails the create instead of being followed), then renamed over the path; a symlink at
//!   the path is replaced, never followed, and a reader never sees half a file;
//! - a file written as the run goes ([`create_stream`]): opened with `O_NOFOLLOW`, so a
//!   symlink at the path is refused (ELOOP), and it must be a regular file (a FIFO is not
//!   waited on: `O_NONBLOCK` at open).
//!
//! Decision: a symlink at a streamed path is refused rather than resolved, including
//! `/dev/stdout` (itself a symlink): the cost is one spelling, the gain is that no planted
//! link can point a root process's writes anywhere.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

const NOT_REGULAR: &str = "is not a regular file (a device, FIFO or socket is not written to)";

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

/// Writes `bytes` to `path` through a fresh temporary file beside it and a rename. A path
/// that is a device, FIFO, socket or folder is refused: renaming over `/dev/null` as root
/// would replace the device.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    refuse_special(path)?;
    let (tmp, mut f) = create_temp_beside(path)?;
    let written = f.write_all(bytes).and_then(|_| f.sync_all());
    let done = written.and_then(|_| std::fs::rename(&tmp, path));
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Checks that [`replace`] can write `path` later: its folder exists and takes new files,
/// and `path` is not a folder. Leaves nothing behind and does not touch `path`.
pub fn check_replaceable(path: &Path) -> io::Result<()> {
    refuse_special(path)?;
    let (tmp, _f) = create_temp_beside(path)?;
    std::fs::remove_file(tmp)
}

/// Creates (or truncates) `path` for writing as the run goes, refusing a symlink at the
/// path and anything but a regular file.
pub fn create_stream(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other(
                "is a symlink: refusing to write through it (give the file's real path)",
            ),
            // A FIFO with no reader (O_NONBLOCK): not waited on.
            Some(libc::ENXIO) => io::Error::other(NOT_REGULAR),
            _ => e,
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(NOT_REGULAR));
    }
    // Truncated only once it is known to be a regular file of the path's own.
    f.set_len(0)?;
    Ok(f)
}

/// Refuses a path that exists as anything but a regular file or a symlink (which
/// [`replace`] replaces).
fn refuse_special(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::from(io::ErrorKind::IsADirectory)),
        Ok(m) if !m.is_file() && !m.is_symlink() => Err(io::Error::other(NOT_REGULAR)),
        _ => Ok(()),
    }
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

    /// The planted link of issue 17: a symlink at the output path to a file that must
    /// stay as it was.
    fn planted(d: &Path) -> (PathBuf, PathBuf) {
        let victim = d.join("passwd");
        std::fs::write(&victim, "root:x:0:0\n").unwrap();
        let link = d.join("out");
        symlink(&victim, &link).unwrap();
        (victim, link)
    }

    #[test]
    fn replace_replaces_a_symlink_and_never_writes_through_it() {
        let d = dir("replace");
        let (victim, link) = planted(&d);
        replace(&link, b"ours\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "ours\n");
        // Nothing left beside it but the two files.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 2);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn create_stream_refuses_a_symlink_and_a_fifo() {
        let d = dir("stream");
        let (victim, link) = planted(&d);
        let e = create_stream(&link).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = create_stream(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A regular file is truncated and written.
        let f = d.join("log");
        std::fs::write(&f, "old contents").unwrap();
        let mut h = create_stream(&f).unwrap();
        h.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "new");
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
        let (victim, link) = planted(&d);
        check_replaceable(&link).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert!(check_replaceable(&d).is_err());
        let e = check_replaceable(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(replace(Path::new("/dev/null"), b"x").is_err());
        assert!(check_replaceable(&d.join("no/such/dir/file")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
