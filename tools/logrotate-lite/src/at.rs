//! Files in a log directory, which the application's user can write: each
//! is reached through an open directory fd (`openat`, `renameat`,
//! `unlinkat`), never through a symlink planted there, and what is opened
//! is checked with `fstat` -- as logrotate does.
//!
//! The log's own directory is opened as the config names it (an admin's
//! symlink such as /var/log/app -> /srv/log/app is followed); every name
//! below it (an olddir, the rotations, the log itself) is not followed.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use serde::{Deserialize, Serialize};

/// What a file is, whatever its name now: to tell that the log opened is
/// the log that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(m: &Metadata) -> FileId {
        FileId {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC);

/// What went wrong doing `what` to `path`, in an operator's words.
pub fn io_err(what: &str, path: &Path, e: impl Into<io::Error>) -> String {
    opskit::exit::describe_io(what, path, &e.into())
}

/// A directory: below `logdir` (the log's directory, opened as named),
/// each component past it is opened without following a symlink;
/// elsewhere (an absolute olddir) its parent as named and itself not
/// followed. `Ok(None)`: it does not exist.
pub fn open_dir(dir: &Path, logdir: &Path) -> Result<Option<OwnedFd>, String> {
    let (base, rest) = match dir.strip_prefix(logdir) {
        Ok(rest) => (logdir, rest),
        Err(_) => match (dir.parent(), dir.file_name()) {
            (Some(p), Some(n)) => (p, Path::new(n)),
            _ => (dir, Path::new("")),
        },
    };
    let Some(mut fd) = open_named(base)? else {
        return Ok(None);
    };
    let mut shown = base.to_path_buf();
    for c in rest.components() {
        shown.push(c);
        fd = match rustix::fs::openat(&fd, c.as_os_str(), DIR | OFlags::NOFOLLOW, Mode::empty()) {
            Ok(next) => next,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(refusal(&fd, c.as_os_str(), &shown, "opening directory", e)),
        };
    }
    Ok(Some(fd))
}

/// A directory as its path names it (symlinks followed); None: absent.
fn open_named(dir: &Path) -> Result<Option<OwnedFd>, String> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    match rustix::fs::openat(CWD, dir, DIR, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err("opening directory", dir, e)),
    }
}

/// Why `name` in `dir` could not be opened: a symlink or another kind of
/// file is named as such, anything else as the error it was.
fn refusal(dir: &OwnedFd, name: &OsStr, shown: &Path, what: &str, e: rustix::io::Errno) -> String {
    match lstat(dir, name) {
        Ok(Some(m)) if m.file_type().is_symlink() => format!(
            "{} is a symbolic link: refused (never followed in a directory others can write)",
            shown.display()
        ),
        Ok(Some(m)) if !m.is_file() && !m.is_dir() => format!(
            "{} is {}, not a regular file: refused",
            shown.display(),
            opskit::safefs::kind_of(&m)
        ),
        _ => io_err(what, shown, e),
    }
}

/// `lstat` of `name` in `dir`, through an `O_PATH` fd; None when absent.
fn lstat(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<Metadata>> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => File::from(fd).metadata().map(Some),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A name in an open directory (None: the directory does not exist).
pub struct Entry {
    dir: Option<OwnedFd>,
    name: OsString,
    path: PathBuf,
}

impl Entry {
    /// `path`, in a plan whose log is in `logdir`.
    pub fn resolve(path: &Path, logdir: &Path) -> Result<Entry, String> {
        let name = path
            .file_name()
            .ok_or_else(|| format!("{}: not a file name", path.display()))?;
        let parent = path.parent().unwrap_or(Path::new(""));
        Ok(Entry {
            dir: open_dir(parent, logdir)?,
            name: name.to_os_string(),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> Result<&OwnedFd, String> {
        self.dir.as_ref().ok_or_else(|| {
            let d = self.path.parent().unwrap_or(Path::new("."));
            format!("directory {} does not exist", d.display())
        })
    }

    /// What has the name now, not following a symlink; None: nothing.
    pub fn stat(&self) -> Result<Option<Metadata>, String> {
        match &self.dir {
            None => Ok(None),
            Some(d) => lstat(d, &self.name).map_err(|e| io_err("checking", &self.path, e)),
        }
    }

    pub fn exists(&self) -> bool {
        !matches!(self.stat(), Ok(None))
    }

    /// Open the regular file that has the name now (for writing too, with
    /// `write`): a symlink, FIFO, device or directory is refused without
    /// blocking; the file and its `fstat`.
    pub fn open(&self, write: bool) -> Result<(File, Metadata), String> {
        let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
        let dir = self.dir()?;
        let file = rustix::fs::openat(dir, &self.name, flags, Mode::empty())
            .map(File::from)
            .map_err(|e| refusal(dir, &self.name, &self.path, "opening", e))?;
        let meta = file
            .metadata()
            .map_err(|e| io_err("checking", &self.path, e))?;
        if !meta.is_file() {
            return Err(format!(
                "{} is {}, not a regular file: refused",
                self.path.display(),
                opskit::safefs::kind_of(&meta)
            ));
        }
        Ok((file, meta))
    }

    /// Create the file, failing if anything (a symlink included) has the
    /// name: `O_CREAT|O_EXCL|O_NOFOLLOW`.
    pub fn create_new(&self, mode: u32) -> Result<File, CreateError> {
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC
            | OFlags::NOCTTY;
        let dir = self.dir().map_err(CreateError::Other)?;
        rustix::fs::openat(dir, &self.name, flags, Mode::from_raw_mode(mode))
            .map(File::from)
            .map_err(|e| match e {
                rustix::io::Errno::EXIST => CreateError::Exists,
                e => CreateError::Other(io_err("creating", &self.path, e)),
            })
    }

    /// `renameat` to `to` (replacing what has that name; neither name is
    /// followed).
    pub fn rename_to(&self, to: &Entry) -> Result<(), String> {
        rustix::fs::renameat(self.dir()?, &self.name, to.dir()?, &to.name)
            .map_err(|e| io_err("renaming", &self.path, e))
    }

    /// `unlinkat`: gone already is done.
    pub fn remove(&self) -> Result<bool, String> {
        let Some(dir) = &self.dir else {
            return Ok(false);
        };
        match rustix::fs::unlinkat(dir, &self.name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err("removing", &self.path, e)),
        }
    }

    /// The entry `name` in the same directory.
    fn sibling(&self, name: OsString) -> Result<Entry, String> {
        let dir = self
            .dir()?
            .try_clone()
            .map_err(|e| io_err("opening", &self.path, e))?;
        Ok(Entry {
            path: self.path.with_file_name(&name),
            dir: Some(dir),
            name,
        })
    }
}

/// Why [`Entry::create_new`] failed.
pub enum CreateError {
    /// Something has the name.
    Exists,
    Other(String),
}

/// A file written under a temporary name beside its entry (created
/// `O_EXCL|O_NOFOLLOW`), fsynced and renamed onto the entry by
/// [`Output::commit`]; dropped before, the temporary is removed.
pub struct Output<'a> {
    dest: &'a Entry,
    tmp: Option<Entry>,
    file: File,
}

impl<'a> Output<'a> {
    pub fn create(dest: &'a Entry, mode: u32) -> Result<Output<'a>, String> {
        let name = opskit::durable::temp_name(&dest.name.to_string_lossy());
        let tmp = dest.sibling(name.into())?;
        let file = tmp.create_new(mode).map_err(|e| match e {
            CreateError::Exists => format!("{} already exists", tmp.path.display()),
            CreateError::Other(msg) => msg,
        })?;
        Ok(Output {
            dest,
            tmp: Some(tmp),
            file,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The name it will have.
    pub fn path(&self) -> &Path {
        self.dest.path()
    }

    /// The temporary's name, for messages.
    pub fn temp_path(&self) -> &Path {
        self.tmp.as_ref().map_or(self.dest.path(), |t| t.path())
    }

    /// fsync, rename onto the entry, fsync the directory; the file, still
    /// open (now under the entry's name).
    pub fn commit(mut self) -> Result<File, String> {
        let tmp = self.tmp.take().expect("committed once");
        self.file
            .sync_all()
            .map_err(|e| io_err("syncing", tmp.path(), e))?;
        if let Err(e) = tmp.rename_to(self.dest) {
            let _ = tmp.remove();
            return Err(e);
        }
        rustix::fs::fsync(self.dest.dir()?)
            .map_err(|e| io_err("syncing directory of", self.dest.path(), e))?;
        self.file
            .try_clone()
            .map_err(|e| io_err("opening", self.dest.path(), e))
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = tmp.remove();
        }
    }
}

/// Remove the temporary files in `dir` (below `logdir`) that `stale` says
/// were left by a run no longer alive.
pub fn clear_temps(dir: &Path, logdir: &Path, stale: impl Fn(&str) -> bool) {
    let Ok(Some(fd)) = open_dir(dir, logdir) else {
        return;
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if stale(&name) {
            let _ = rustix::fs::unlinkat(&fd, e.file_name(), AtFlags::empty());
        }
    }
}

/// Make directory `dir` (an olddir, below `logdir` or absolute) if it is
/// missing, each new component with `mode`; the directory's fd, opened
/// without following a symlink, to set its owner through.
pub fn make_dir(dir: &Path, logdir: &Path, mode: u32) -> Result<OwnedFd, String> {
    if let Some(fd) = open_dir(dir, logdir)? {
        return Ok(fd);
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let name = dir
        .file_name()
        .ok_or_else(|| format!("{}: not a directory name", dir.display()))?;
    let pfd = if parent.starts_with(logdir) && parent != logdir {
        make_dir(parent, logdir, mode)?
    } else {
        std::fs::create_dir_all(parent).map_err(|e| io_err("creating", parent, e))?;
        open_named(parent)?
            .ok_or_else(|| format!("directory {} does not exist", parent.display()))?
    };
    match rustix::fs::mkdirat(&pfd, name, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
        Err(e) => return Err(io_err("creating", dir, e)),
    }
    rustix::fs::openat(&pfd, name, DIR | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| refusal(&pfd, name, dir, "opening directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_below_the_log_directory_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let (logs, elsewhere) = (d.path().join("logs"), d.path().join("elsewhere"));
        std::fs::create_dir_all(&elsewhere).unwrap();
        // The log directory itself may be an admin's symlink.
        std::fs::create_dir(d.path().join("real")).unwrap();
        symlink(d.path().join("real"), &logs).unwrap();
        symlink(&elsewhere, logs.join("old")).unwrap();
        let e = Entry::resolve(&logs.join("old/a.log.1"), &logs)
            .err()
            .unwrap();
        assert!(e.contains("old is a symbolic link: refused"), "{e}");
        std::fs::write(elsewhere.join("victim"), "keep").unwrap();
        symlink(elsewhere.join("victim"), logs.join("a.log")).unwrap();
        let at = Entry::resolve(&logs.join("a.log"), &logs).unwrap();
        assert!(at.open(true).err().unwrap().contains("symbolic link"));
        assert!(matches!(at.create_new(0o644), Err(CreateError::Exists)));
        assert!(at.stat().unwrap().unwrap().file_type().is_symlink());
        assert!(at.remove().unwrap(), "the link itself is removed");
        assert_eq!(
            std::fs::read_to_string(elsewhere.join("victim")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn output_appears_complete_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let at = Entry::resolve(&d.path().join("a.gz"), d.path()).unwrap();
        {
            let out = Output::create(&at, 0o640).unwrap();
            out.file().write_all(b"partial").unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
        let out = Output::create(&at, 0o640).unwrap();
        out.file().write_all(b"whole").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read_to_string(at.path()).unwrap(), "whole");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        let missing = Entry::resolve(&d.path().join("no/such/x"), d.path()).unwrap();
        assert!(!missing.exists() && !missing.remove().unwrap());
    }

    #[test]
    fn make_dir_creates_below_the_log_directory_without_following() {
        let d = tempfile::tempdir().unwrap();
        make_dir(&d.path().join("a/b"), d.path(), 0o750).unwrap();
        assert!(d.path().join("a/b").is_dir());
        symlink(d.path().join("a"), d.path().join("link")).unwrap();
        let e = make_dir(&d.path().join("link/c"), d.path(), 0o750).unwrap_err();
        assert!(e.contains("link is a symbolic link: refused"), "{e}");
        assert!(!d.path().join("a/c").exists());
    }
}
