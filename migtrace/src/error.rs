//! The one error type whose kind decides the exit code.
//!
//! Library code returns `anyhow::Result` so that causes can be chained with context; where
//! the user must act (a bad flag, a bad file, a missing privilege, a target or kernel that
//! cannot do what was asked) the innermost cause is an [`Error`]. `main` prints the whole
//! chain as one line and exits with [`exit_code`]: 2 for every [`Error`] kind, 1 for any
//! other failure (an I/O error mid-run, a kernel program that fails to load for a reason
//! the user cannot fix).
use thiserror::Error as ThisError;

/// What the user must fix. Every kind exits with code 2; the kinds keep the messages apart
/// (a missing privilege names what is needed) and let tests tell them apart.
#[derive(Debug, ThisError, Clone, PartialEq, Eq)]
pub enum Error {
    /// A bad flag value or combination of flags.
    #[error("{0}")]
    Usage(String),
    /// An input file that cannot be read or is not valid (a profile, a fixture).
    #[error("{0}")]
    Input(String),
    /// Missing privileges: the message says which (root, CAP_BPF, CAP_PERFMON, ptrace).
    #[error("{0}")]
    Privilege(String),
    /// The target or the kernel cannot do what was asked: no such pid, a kernel thread,
    /// a kernel without soft-dirty, soft-dirty already in use by someone else.
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// The process exit code for this kind.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Input(_) | Error::Privilege(_) | Error::Unsupported(_) => 2,
        }
    }
}

/// Exit code for a failure: the code of the first [`Error`] in the chain, else 1.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map_or(1, Error::exit_code)
}

/// The raw OS error number anywhere in an error's chain (`std::io::Error`), so callers test
/// for EPERM by errno rather than by matching message strings.
pub fn os_errno(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_exit_2_others_exit_1() {
        let usage = anyhow::Error::new(Error::Usage("bad".into())).context("outer");
        assert_eq!(exit_code(&usage), 2);
        let privilege = anyhow::Error::new(Error::Privilege("root".into()));
        assert_eq!(exit_code(&privilege), 2);
        assert_eq!(exit_code(&anyhow::anyhow!("io failed")), 1);
    }

    #[test]
    fn errno_is_found_through_the_chain() {
        let io = std::io::Error::from_raw_os_error(libc::EPERM);
        let wrapped = anyhow::Error::new(io).context("loading");
        let dynerr: &(dyn std::error::Error + 'static) = wrapped.as_ref();
        assert_eq!(os_errno(dynerr), Some(libc::EPERM));
    }
}
