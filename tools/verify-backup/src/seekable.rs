//! The copy a parallel restore reads: `pg_restore --jobs` works only from
//! a file it can seek in, never from a pipe. The dump is decrypted and
//! decompressed into a 0600 file in a 0700 directory of this run,
//! `.opskit-restore-<random>`, in a scratch directory the operator chose,
//! its sha256 checked as it streams, its data offsets learned on the way
//! past and written into its table of contents once the set checks out
//! ([`crate::dumpindex`]); pg_restore and its workers read that
//! very file through their standard input (`/dev/stdin`), never a path
//! someone could swap. The run holds a lock in its directory; a directory
//! whose lock nobody holds is a killed run's, removed by the next run.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use opskit::backupset::FileEntry;
use opskit::crypt::Identities;
use opskit::{Error, Result};

use crate::dumpindex::{self, Index, Unindexed};
use crate::restore::Source;

const PREFIX: &str = ".opskit-restore-";

/// How a custom-format dump is restored: `jobs` at once from a copy in
/// `dir`, or (1) streamed into `pg_restore` with no copy.
#[derive(Debug, Clone)]
pub struct Parallel {
    pub jobs: usize,
    pub dir: PathBuf,
    /// Asked for (--jobs, OPSKIT_RESTORE_JOBS): a scratch directory that
    /// is unsafe or too small is refused. The default (the machine's
    /// cores) streams instead, saying why.
    pub asked: bool,
}

/// How many jobs a restore runs when not told: the machine's cores (at
/// most 8; pg_restore's workers each hold a connection).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// The copy, open; its directory is removed when this is dropped (first:
/// fields drop in order), the lock released after.
pub(crate) struct Copy {
    _dir: tempfile::TempDir,
    _lock: File,
    pub file: File,
}

/// The bytes the copy of `entry` takes: what decrypting and decompressing
/// it gives.
pub(crate) fn size(entry: &FileEntry) -> u64 {
    entry
        .content_bytes
        .or(entry.plaintext_bytes)
        .unwrap_or(entry.bytes)
}

/// A scratch directory a run as root may write in: a real directory (not
/// a symlink) owned by this user or root, and writable by nobody else
/// (`safefs::check_private`) unless sticky (`/tmp`), so that nobody can
/// rename what this run makes there.
fn check_dir(dir: &Path) -> Result<()> {
    opskit::safefs::check_dir_private(dir).map_err(|e| {
        Error::usage(format!(
            "scratch directory {}; choose another (--scratch DIR or OPSKIT_SCRATCH_DIR)",
            e.msg
        ))
    })
}

/// Refuse, before anything is written, a scratch directory that is not
/// safe, or whose disk has no room for the copy (with 1/64 to spare).
/// Copies left by killed runs are removed first: they are what most often
/// fills it.
///
/// Not asked for (the default), the copy must leave as much again free:
/// the scratch directory may be on the database's disk, which the
/// restored database fills too.
pub(crate) fn check_room(entry: &FileEntry, p: &Parallel) -> Result<()> {
    check_dir(&p.dir)?;
    crate::leftovers::remove(
        &p.dir,
        PREFIX,
        "the restore copy of an interrupted run",
        |_| None,
    );
    let copy = size(entry);
    let need = if p.asked {
        copy.saturating_add(copy / 64)
    } else {
        copy.saturating_mul(2)
    };
    let avail = opskit::sys::statvfs(&p.dir)
        .map_err(|e| Error::failure(format!("{}: {e}", p.dir.display())))?
        .avail;
    if avail < need {
        let room = opskit::units::format_size;
        return Err(Error::failure(format!(
            "{}: a restore with --jobs {} reads a copy of the dump, which needs {} free in {}{} and {} are: free some, put the copy on another disk (--scratch DIR or OPSKIT_SCRATCH_DIR), or restore with --jobs 1 (streamed, no copy)",
            entry.name,
            p.jobs,
            room(copy),
            p.dir.display(),
            if p.asked {
                String::new()
            } else {
                format!(
                    " (by default, {} with as much again for the restored database)",
                    room(need)
                )
            },
            room(avail)
        )));
    }
    Ok(())
}

/// Why the copy was not made: the scratch directory failed it (no room
/// after all, read-only, gone), or the set did (damaged, changed,
/// interrupted).
pub(crate) enum CopyFailed {
    Scratch(String),
    Set(String),
}

impl From<CopyFailed> for String {
    fn from(f: CopyFailed) -> String {
        match f {
            CopyFailed::Scratch(m) | CopyFailed::Set(m) => m,
        }
    }
}

/// Decrypt and decompress `source` into a new copy in `dir`, its sha256
/// checked as it streams; stops at an interruption. The copy is returned
/// open, for pg_restore to read as its standard input.
pub(crate) fn copy(
    source: &Source,
    ids: Option<&Identities>,
    dir: &Path,
    interrupted: &AtomicBool,
) -> std::result::Result<Copy, CopyFailed> {
    let path = source.path();
    let scratch = CopyFailed::Scratch;
    let made = tempfile::Builder::new()
        .prefix(PREFIX)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .map_err(|e| scratch(format!("creating a directory in {}: {e}", dir.display())))?;
    let new = |name: &str| {
        let p = made.path().join(name);
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| scratch(format!("creating {}: {e}", p.display())))
    };
    let lock = crate::leftovers::lock(made.path())
        .map_err(|e| scratch(format!("locking {}: {e}", made.path().display())))?;
    let out = new(&source.entry.name)?;
    let copy_path = made.path().join(&source.entry.name);
    let mut reader = source.open(ids).map_err(CopyFailed::Set)?;
    let started = std::time::Instant::now();
    let scanned = {
        let src = opskit::codec::content_reader(source.entry, &mut reader)
            .map_err(|e| format!("{}: cannot start decompressing: {e}", path.display()))
            .map_err(CopyFailed::Set)?;
        write_scanned(src, &out, interrupted, (&path, &copy_path))?
    };
    reader
        .finish(source.entry)
        .map_err(|e| CopyFailed::Set(format!("{}: {e}", path.display())))?;
    // The set checked whole: its offsets into the copy's table of contents.
    match scanned.map(|index| dumpindex::apply(&out, &index)) {
        Ok(Ok(n)) => log::debug!(
            "{}: data offsets of {n} entries written",
            copy_path.display()
        ),
        Ok(Err(e)) => log::warn!(
            "{}: data offsets not written ({e}); pg_restore scans for them",
            copy_path.display()
        ),
        Err(why) => log::info!(
            "{}: data offsets not learned ({why}); pg_restore scans for them",
            copy_path.display()
        ),
    }
    log::info!(
        "copied {} ({}) to {} in {:.1}s for pg_restore to read in parallel",
        source.entry.name,
        opskit::units::format_size(size(source.entry)),
        copy_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(Copy {
        _dir: made,
        _lock: lock,
        file: out,
    })
}

/// Write `src` into `out` on a thread of its own while this one reads,
/// decrypts, decompresses and scans it for its data offsets (two cores,
/// and pg_restore has not started yet); stops at an interruption, a
/// failed read or a failed write. `names`: the set's file and the copy,
/// for messages. Returns what the scan learned.
fn write_scanned(
    src: impl Read,
    out: &File,
    interrupted: &AtomicBool,
    (path, copy_path): (&Path, &Path),
) -> std::result::Result<std::result::Result<Index, Unindexed>, CopyFailed> {
    let (scanned, drained, stopped, written) = std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let (back, spare) = mpsc::channel::<Vec<u8>>();
        let writer = s.spawn(move || -> io::Result<()> {
            for buf in rx {
                (&*out).write_all(&buf)?;
                let _ = back.send(buf);
            }
            Ok(())
        });
        let mut tee = Tee {
            src,
            tx,
            spare,
            interrupted,
            stopped: false,
        };
        let mut buffered = BufReader::with_capacity(1 << 20, &mut tee);
        let scanned = dumpindex::scan(&mut buffered);
        // The rest, where the scan stopped at what it does not index; a
        // failed read stops the copy there.
        let drained = match &scanned {
            Err(Unindexed::Io(_)) => Ok(0),
            _ => io::copy(&mut buffered, &mut io::sink()),
        };
        drop(buffered);
        let stopped = tee.stopped;
        drop(tee);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the writing thread panicked")));
        (scanned, drained, stopped, written)
    });
    if let Err(e) = written {
        return Err(CopyFailed::Scratch(format!(
            "writing {}: {e}",
            copy_path.display()
        )));
    }
    if stopped {
        return Err(CopyFailed::Set("interrupted".into()));
    }
    match (scanned, drained) {
        (Err(Unindexed::Io(e)), _) | (_, Err(e)) => {
            Err(CopyFailed::Set(format!("reading {}: {e}", path.display())))
        }
        (scanned, Ok(_)) => Ok(scanned),
    }
}

/// The copy's reader: what it reads is handed to the writing thread; an
/// interruption, or that thread gone (its write failed), stops it.
struct Tee<'a, R> {
    src: R,
    tx: mpsc::SyncSender<Vec<u8>>,
    spare: mpsc::Receiver<Vec<u8>>,
    interrupted: &'a AtomicBool,
    /// Stopped by the interruption.
    stopped: bool,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.interrupted.load(Ordering::SeqCst) {
            self.stopped = true;
            return Err(io::Error::other("interrupted"));
        }
        let n = self.src.read(buf)?;
        if n > 0 {
            let mut copy = self.spare.try_recv().unwrap_or_default();
            copy.clear();
            copy.extend_from_slice(&buf[..n]);
            // The writer is gone only when a write failed: it says why.
            if self.tx.send(copy).is_err() {
                return Err(io::Error::other("the copy could not be written"));
            }
        }
        Ok(n)
    }
}
