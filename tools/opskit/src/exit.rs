//! Exit statuses (the second contract between tools) and the error type that
//! carries one.

use std::fmt;
use std::io;
use std::path::Path;

/// The exit status of a run: 0 done, 1 a check failed, 2 the job could
/// not be done, 3 UNKNOWN (healthcheck), 64 usage (README "Exit status").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything asked for was done and every check passed.
    #[default]
    Ok,
    /// The run worked, but something it checked failed (WARNING for healthcheck).
    CheckFailed,
    /// The job could not be done (CRITICAL for healthcheck).
    Failure,
    /// healthcheck only: the check itself could not run.
    Unknown,
    /// Usage or configuration error (EX_USAGE).
    Usage,
}

impl Exit {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::CheckFailed => 1,
            Exit::Failure => 2,
            Exit::Unknown => 3,
            Exit::Usage => 64,
        }
    }

    /// The more severe of two statuses (usage > unknown > failure > check > ok).
    pub fn worst(self, other: Exit) -> Exit {
        self.max(other)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An error that ends a run: a one-line message and the status it exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub exit: Exit,
    pub msg: String,
    /// Set only by [`Error::stdout_closed`]: the one error that ends a run
    /// quietly. An error that merely carries [`Exit::Ok`] is reported.
    stdout_closed: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(exit: Exit, msg: impl Into<String>) -> Self {
        Error {
            exit,
            msg: msg.into(),
            stdout_closed: false,
        }
    }
    /// A usage or configuration error (exit 64).
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(Exit::Usage, msg)
    }
    /// The job could not be done (exit 2).
    pub fn failure(msg: impl Into<String>) -> Self {
        Self::new(Exit::Failure, msg)
    }
    /// A check failed (exit 1).
    pub fn check(msg: impl Into<String>) -> Self {
        Self::new(Exit::CheckFailed, msg)
    }

    /// The reader of the record stream went away (`tool | head -1`): the
    /// run ends early and quietly, with status 0, as Unix tools end on
    /// SIGPIPE, but through `main` so that cleanup guards run.
    pub fn stdout_closed() -> Self {
        Error {
            stdout_closed: true,
            ..Self::new(Exit::Ok, "stdout closed")
        }
    }

    /// Whether this is [`Error::stdout_closed`] (not merely an error that
    /// carries [`Exit::Ok`]).
    pub fn is_stdout_closed(&self) -> bool {
        self.stdout_closed
    }

    /// An I/O error while doing `what` on `path`, worded for an operator:
    /// a full disk says "no space left on <path>".
    pub fn io(what: &str, path: &Path, err: &io::Error) -> Self {
        Self::failure(describe_io(what, path, err))
    }

    /// Prefix the message with more context ("while X: <msg>").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
}

/// The operator's wording of an I/O error on a path.
/// The error's causes are named too, and the system's error among them is
/// the one classified: a library that wraps a write's error in its own
/// ("failed to unpack `base/1/16384`") hides a full disk otherwise.
pub fn describe_io(what: &str, path: &Path, err: &io::Error) -> String {
    let p = path.display();
    let mut os = err.raw_os_error();
    let mut words = vec![strip_os_code(err)];
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        match e.downcast_ref::<io::Error>() {
            Some(io) => {
                os = os.or(io.raw_os_error());
                words.push(strip_os_code(io));
            }
            None => words.push(e.to_string()),
        }
        cause = e.source();
    }
    match os {
        Some(libc::ENOSPC) => format!("no space left on {p} ({what})"),
        Some(libc::EDQUOT) => format!("disk quota exceeded on {p} ({what})"),
        Some(libc::EFBIG) => format!("file size limit exceeded on {p} ({what})"),
        _ => format!("{what} {p}: {}", words.join(": ")),
    }
}

/// `io::Error`'s Display appends " (os error N)"; operators need the words.
fn strip_os_code(err: &io::Error) -> String {
    let s = err.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// Attach "what" and "where" to an `io::Result`.
pub trait IoContext<T> {
    /// `file.write_all(b).at("writing", &path)?`
    fn at(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_wrapped_by_a_library_is_still_named() {
        #[derive(Debug)]
        struct Wrapped(io::Error);
        impl fmt::Display for Wrapped {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("failed to unpack `base/1/16384`")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let full = io::Error::other(Wrapped(io::Error::from_raw_os_error(libc::ENOSPC)));
        let msg = describe_io("unpacking into", Path::new("/var/lib/x"), &full);
        assert_eq!(msg, "no space left on /var/lib/x (unpacking into)");
        let other = io::Error::other(Wrapped(io::Error::other("its content holds more")));
        let msg = describe_io("unpacking into", Path::new("/x"), &other);
        assert_eq!(
            msg,
            "unpacking into /x: failed to unpack `base/1/16384`: its content holds more"
        );
    }

    #[test]
    fn codes_match_design() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::CheckFailed.code(), 1);
        assert_eq!(Exit::Failure.code(), 2);
        assert_eq!(Exit::Unknown.code(), 3);
        assert_eq!(Exit::Usage.code(), 64);
    }

    #[test]
    fn worst_orders_by_severity() {
        assert_eq!(Exit::Ok.worst(Exit::CheckFailed), Exit::CheckFailed);
        assert_eq!(Exit::Failure.worst(Exit::CheckFailed), Exit::Failure);
        assert_eq!(Exit::Usage.worst(Exit::Failure), Exit::Usage);
    }

    #[test]
    fn full_disk_is_named() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let err = Error::io("writing", Path::new("/var/backups/x"), &e);
        assert_eq!(err.exit, Exit::Failure);
        assert_eq!(err.msg, "no space left on /var/backups/x (writing)");
        let big = io::Error::from_raw_os_error(libc::EFBIG);
        assert!(
            Error::io("writing", Path::new("/f"), &big)
                .msg
                .contains("file size limit")
        );
    }

    #[test]
    fn other_io_errors_name_path_without_os_code() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        let err = Error::io("opening", Path::new("/etc/shadow"), &e);
        assert_eq!(err.msg, "opening /etc/shadow: Permission denied");
    }

    #[test]
    fn only_a_closed_stdout_ends_a_run_quietly() {
        let closed = Error::stdout_closed();
        assert!(closed.is_stdout_closed());
        assert_eq!(closed.exit, Exit::Ok);
        assert!(closed.context("emitting").is_stdout_closed());
        // An error that carries Exit::Ok, even with the same words, is not it.
        assert!(!Error::new(Exit::Ok, "stdout closed").is_stdout_closed());
        assert!(!Error::failure("boom").is_stdout_closed());
        assert_ne!(
            Error::new(Exit::Ok, "stdout closed"),
            Error::stdout_closed()
        );
    }

    #[test]
    fn context_prefixes() {
        let e = Error::failure("boom").context("dumping app");
        assert_eq!(e.to_string(), "dumping app: boom");
    }
}
