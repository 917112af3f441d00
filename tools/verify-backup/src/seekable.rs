//! The copy a parallel restore reads: `pg_restore --jobs` works only from
//! a file it can seek in, never from a pipe. The dump is decrypted and
//! decompressed into a 0600 file in a 0700 directory of this run,
//! `.opskit-restore-<pid>`, on the disk the operator chose, its sha256
//! checked as it streams. The directory is removed on every path; one left
//! by a run that was killed is removed by the next run.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use opskit::backupset::FileEntry;
use opskit::crypt::Identities;
use opskit::{Error, Result};

use crate::restore::Source;

const PREFIX: &str = ".opskit-restore-";

/// How a custom-format dump is restored: `jobs` at once from a copy in
/// `dir`, or (1) streamed into `pg_restore` with no copy.
#[derive(Debug, Clone)]
pub struct Parallel {
    pub jobs: usize,
    pub dir: PathBuf,
}

/// The copy; its directory is removed when this is dropped.
pub(crate) struct Copy {
    dir: PathBuf,
    pub file: PathBuf,
}

impl Drop for Copy {
    fn drop(&mut self) {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => log::debug!("removed {}", self.dir.display()),
            Err(e) => log::warn!(
                "could not remove the restore copy {}: {e}; remove it by hand",
                self.dir.display()
            ),
        }
    }
}

/// The bytes the copy of `entry` takes: what decrypting and decompressing
/// it gives.
pub(crate) fn size(entry: &FileEntry) -> u64 {
    entry
        .content_bytes
        .or(entry.plaintext_bytes)
        .unwrap_or(entry.bytes)
}

/// Refuse, before anything is written, a copy the disk of `dir` has no
/// room for (with 1/64 to spare). Copies left by killed runs are removed
/// first: they are what most often fills it.
pub(crate) fn check_room(entry: &FileEntry, p: &Parallel) -> Result<()> {
    remove_leftovers(&p.dir);
    let need = size(entry);
    let avail = opskit::sys::statvfs(&p.dir)
        .map_err(|e| Error::failure(format!("{}: {e}", p.dir.display())))?
        .avail;
    if avail < need.saturating_add(need / 64) {
        return Err(Error::failure(format!(
            "{}: a restore with --jobs {} reads a copy of the dump, which needs {} free in {} and {} are: free some, put the copy on another disk (--scratch DIR or OPSKIT_SCRATCH_DIR), or restore with --jobs 1 (streamed, no copy); nothing was restored",
            entry.name,
            p.jobs,
            opskit::units::format_size(need),
            p.dir.display(),
            opskit::units::format_size(avail)
        )));
    }
    Ok(())
}

/// Remove the copies in `dir` of runs whose process is gone (killed, the
/// machine restarted). Only directories of this user are touched.
pub(crate) fn remove_leftovers(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = opskit::sys::euid();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = e.path();
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() && m.uid() == me => {}
            _ => continue,
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => log::info!(
                "removed {}, the restore copy of an interrupted run (pid {pid})",
                path.display()
            ),
            Err(e) => log::warn!("could not remove {}: {e}", path.display()),
        }
    }
}

/// Decrypt and decompress `source` into a new copy in `dir`, its sha256
/// checked as it streams; stops at an interruption.
pub(crate) fn copy(
    source: &Source,
    ids: Option<&Identities>,
    dir: &Path,
    interrupted: &AtomicBool,
) -> std::result::Result<Copy, String> {
    let path = source.path();
    let d = dir.join(format!("{PREFIX}{}", std::process::id()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&d)
        .map_err(|e| format!("creating {}: {e}", d.display()))?;
    let copy = Copy {
        file: d.join(&source.entry.name),
        dir: d,
    };
    // O_EXCL: never through a link planted under that name.
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&copy.file)
        .map_err(|e| format!("creating {}: {e}", copy.file.display()))?;
    let mut reader = source.open(ids)?;
    {
        let mut src = opskit::codec::reader(source.entry.compression, &mut reader)
            .map_err(|e| format!("{}: cannot start decompressing: {e}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if interrupted.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            let n = src
                .read(&mut buf)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(|e| format!("writing {}: {e}", copy.file.display()))?;
        }
    }
    reader
        .finish(source.entry)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    log::info!(
        "copied {} ({}) to {} for pg_restore to read in parallel",
        source.entry.name,
        opskit::units::format_size(size(source.entry)),
        copy.file.display()
    );
    Ok(copy)
}

/// The default place of the copy: the directory holding the restore
/// server's data directory, where the restored data goes anyway, when it
/// is on this machine and this user can make a directory there; else the
/// temp directory.
pub(crate) fn beside_data(spec: &opskit::pgconn::ConnSpec) -> PathBuf {
    let data = spec.connect().ok().and_then(|mut c| {
        c.query_one("SHOW data_directory", &[])
            .ok()
            .map(|r| PathBuf::from(r.get::<_, String>(0)))
    });
    let beside = data.as_deref().and_then(Path::parent).filter(|p| {
        let probe = p.join(format!("{PREFIX}{}", std::process::id()));
        let made = fs::DirBuilder::new().mode(0o700).create(&probe).is_ok();
        made && fs::remove_dir(&probe).is_ok()
    });
    match beside {
        Some(p) => p.to_path_buf(),
        None => {
            let tmp = std::env::temp_dir();
            log::debug!(
                "the restore server's data directory is not on this machine or not writable here: the copy for parallel restores goes to {} (--scratch)",
                tmp.display()
            );
            tmp
        }
    }
}
