//! Durable writes: build under a hidden temporary name in the same
//! directory, fsync, rename into place, fsync the directory. A reader never
//! sees a half-written file or directory under its final name, and after a
//! crash the leftover has a name that says it is one ([`is_temp_name`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, IoContext, Result};

/// The marker in every temporary name opskit creates.
pub const TEMP_MARKER: &str = ".opskit-tmp.";

/// The hidden temporary name for `final_name`:
/// `.<final_name>.opskit-tmp.<pid>.<nanos>`.
pub fn temp_name(final_name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".{final_name}{TEMP_MARKER}{}.{nanos:09}",
        std::process::id()
    )
}

/// The marker of a directory being deleted.
pub const TRASH_MARKER: &str = ".opskit-trash.";

/// The hidden name a directory is renamed to before it is removed, so a
/// crash half-way through the removal never leaves something that looks
/// like what it was: `.<name>.opskit-trash.<pid>.<nanos>`.
pub fn trash_name(name: &str) -> String {
    temp_name(name).replacen(TEMP_MARKER, TRASH_MARKER, 1)
}

/// Whether a file name is a trash name.
pub fn is_trash_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TRASH_MARKER)
}

/// Whether a file name is one of opskit's temporary names.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// The final name a temporary name was building, and the pid that built it.
pub fn parse_temp_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix('.')?;
    let i = rest.rfind(TEMP_MARKER)?;
    let (final_name, tail) = (&rest[..i], &rest[i + TEMP_MARKER.len()..]);
    let pid = tail.split('.').next()?.parse().ok()?;
    Some((final_name, pid))
}

fn parent_of(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// fsync a directory, making the renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A file written under a temporary name and renamed into place by
/// [`AtomicFile::commit`]; dropped without commit, the temporary is removed.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    /// Start writing `dest` with permission bits `mode` (e.g. 0o600).
    pub fn create(dest: &Path, mode: u32) -> Result<Self> {
        let name = dest
            .file_name()
            .ok_or_else(|| Error::usage(format!("not a file path: {}", dest.display())))?;
        let tmp = parent_of(dest).join(temp_name(&name.to_string_lossy()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .at("creating", &tmp)?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dest
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The open temporary file (to set its owner, mode or times, or to
    /// write to it through `&File`).
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("AtomicFile used after commit")
    }

    /// fsync the file, rename it over `dest`, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("AtomicFile used after commit");
        file.sync_all().at("syncing", &self.tmp)?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).at("renaming into place", &self.dest)?;
        // Renamed: nothing left for Drop to clean up.
        self.tmp = PathBuf::new();
        fsync_dir(parent_of(&self.dest)).at("syncing directory of", &self.dest)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("write after commit").write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("flush after commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Write `bytes` to `dest` atomically and durably.
pub fn write_file(dest: &Path, mode: u32, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.write_all(bytes).at("writing", f.temp_path())?;
    f.commit()
}

/// A directory built under a hidden temporary name and renamed into place
/// by [`StagingDir::commit`]; dropped without commit, it is removed with
/// everything in it.
pub struct StagingDir {
    dest: PathBuf,
    tmp: PathBuf,
    committed: bool,
}

impl StagingDir {
    /// Create the hidden directory beside `dest` with permission bits `mode`.
    /// Fails if `dest` already exists.
    pub fn create(dest: &Path, mode: u32) -> Result<Self> {
        if dest.symlink_metadata().is_ok() {
            return Err(Error::failure(format!("{} already exists", dest.display())));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| Error::usage(format!("not a directory path: {}", dest.display())))?;
        let tmp = parent_of(dest).join(temp_name(&name.to_string_lossy()));
        fs::DirBuilder::new()
            .mode(mode)
            .create(&tmp)
            .at("creating", &tmp)?;
        Ok(StagingDir {
            dest: dest.to_path_buf(),
            tmp,
            committed: false,
        })
    }

    /// Where to write the directory's contents now.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The name it will have.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// fsync the directory, rename it into place, fsync its parent. The
    /// files in it must already be synced (see [`sync_file`]).
    pub fn commit(mut self) -> Result<PathBuf> {
        fsync_dir(&self.tmp).at("syncing", &self.tmp)?;
        if self.dest.symlink_metadata().is_ok() {
            return Err(Error::failure(format!(
                "{} appeared while it was being built; left it alone",
                self.dest.display()
            )));
        }
        fs::rename(&self.tmp, &self.dest).at("renaming into place", &self.dest)?;
        self.committed = true;
        fsync_dir(parent_of(&self.dest)).at("syncing directory of", &self.dest)?;
        Ok(self.dest.clone())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Create a new file for writing with `mode`, failing if it exists.
pub fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .at("creating", path)
}

/// fsync a file by path.
pub fn sync_file(f: &File, path: &Path) -> Result<()> {
    f.sync_all().at("syncing", path)
}

/// Let writes past `ulimit -f` fail with EFBIG instead of killing the
/// process with SIGXFSZ, so a full disk or file limit is reported like any
/// other write error and temporary files are cleaned up.
#[allow(unsafe_code)]
pub fn ignore_sigxfsz() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler
    // code and is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Ask for a 1 MiB pipe buffer (Linux; the default is 64 KiB), so a fast
/// producer such as pg_dump and its reader switch less often. Best effort:
/// the kernel may cap it (`/proc/sys/fs/pipe-max-size`).
#[allow(unsafe_code)]
pub fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a valid, owned descriptor only changes the
    // pipe's capacity; failure is reported through the return value.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
    if r < 0 {
        log::debug!("could not widen pipe: {}", io::Error::last_os_error());
    }
}

/// A file that starts writing its data back to disk every few MiB while it
/// is being written (`sync_file_range`), so the fsync at the end waits for
/// the last few MiB instead of the whole file, and a large backup does not
/// pile up gigabytes of dirty pages on a busy server.
pub struct WritebackFile {
    file: File,
    written: u64,
    flushed: u64,
}

/// How much is written between writeback starts.
const WRITEBACK_CHUNK: u64 = 8 << 20;

impl WritebackFile {
    pub fn new(file: File) -> Self {
        WritebackFile {
            file,
            written: 0,
            flushed: 0,
        }
    }

    pub fn into_inner(self) -> File {
        self.file
    }

    #[allow(unsafe_code)]
    fn start_writeback(&mut self) {
        use std::os::fd::AsRawFd;
        let len = self.written - self.flushed;
        // SAFETY: sync_file_range on an owned, open descriptor with an
        // in-bounds range only schedules I/O; errors come back as -1.
        let r = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                self.flushed as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if r == 0 {
            self.flushed = self.written;
        }
    }
}

impl Write for WritebackFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= WRITEBACK_CHUNK {
            self.start_writeback();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_names_are_recognised() {
        let n = temp_name("app-20261123T030000Z");
        assert!(is_temp_name(&n), "{n}");
        let (fin, pid) = parse_temp_name(&n).unwrap();
        assert_eq!(fin, "app-20261123T030000Z");
        assert_eq!(pid, std::process::id());
        assert!(!is_temp_name("app-20261123T030000Z"));
        assert!(!is_temp_name(".bashrc"));
        assert!(parse_temp_name(".x.opskit-tmp.notapid.1").is_none());
        let t = trash_name("app-20261123T030000Z");
        assert!(is_trash_name(&t) && !is_temp_name(&t), "{t}");
    }

    #[test]
    fn atomic_file_appears_only_on_commit() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("state");
        fs::write(&dest, "old").unwrap();
        let mut f = AtomicFile::create(&dest, 0o600).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
        f.commit().unwrap();
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temp left");
    }

    #[test]
    fn atomic_file_dropped_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("x");
        {
            let mut f = AtomicFile::create(&dest, 0o600).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn atomic_file_in_missing_dir_names_it() {
        let err = AtomicFile::create(Path::new("/nonexistent-dir/x"), 0o600)
            .err()
            .unwrap();
        assert!(err.msg.contains("/nonexistent-dir/"), "{}", err.msg);
    }

    #[test]
    fn staging_dir_commit_and_drop() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("set-1");
        let s = StagingDir::create(&dest, 0o700).unwrap();
        fs::write(s.path().join("f"), "data").unwrap();
        assert!(!dest.exists());
        let listed: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(is_temp_name(&listed[0]));
        s.commit().unwrap();
        assert_eq!(fs::read_to_string(dest.join("f")).unwrap(), "data");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let dest2 = d.path().join("set-2");
        {
            let s = StagingDir::create(&dest2, 0o700).unwrap();
            fs::write(s.path().join("f"), "data").unwrap();
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "only set-1");
    }

    #[test]
    fn staging_dir_refuses_existing_dest() {
        let d = tempfile::tempdir().unwrap();
        let err = StagingDir::create(d.path(), 0o700).err().unwrap();
        assert!(err.msg.contains("already exists"));
    }
}
