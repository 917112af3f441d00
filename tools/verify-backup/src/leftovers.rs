//! Directories a run makes in the scratch directory (a dump's restore
//! copy, a base set's scratch cluster) hold a lock for as long as the run
//! lives. A run killed before it could clean up (SIGKILL, the OOM killer,
//! a reboot) leaves its directory behind, often as large as the database:
//! the next run removes it, so that killed runs do not fill the disk.

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The lock file's name in each directory.
pub(crate) const LOCK: &str = "lock";

/// Create the lock of the new directory `dir` and hold it: the
/// directory is this run's until the returned file is closed (also when
/// the process dies, however it dies).
pub(crate) fn lock(dir: &Path) -> std::io::Result<File> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(LOCK))?;
    f.try_lock().map_err(std::io::Error::other)?;
    Ok(f)
}

/// Remove from `root` the directories named `prefix…` of runs that are
/// gone: this user's own (never a link, never another user's) whose lock
/// nobody holds. `what` names them in the log; `busy` may keep one,
/// saying why (a server still running in it).
pub(crate) fn remove(
    root: &Path,
    prefix: &str,
    what: &str,
    busy: impl Fn(&Path) -> Option<String>,
) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    let me = opskit::sys::euid();
    for e in entries.flatten() {
        if !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = e.path();
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() && m.uid() == me => {}
            _ => continue,
        }
        if !abandoned(&path) {
            continue;
        }
        if let Some(why) = busy(&path) {
            log::warn!("{} ({what}) is left: {why}", path.display());
            continue;
        }
        match fs::remove_dir_all(&path) {
            Ok(()) => log::info!("removed {}, {what}", path.display()),
            Err(e) => log::warn!("could not remove {}: {e}", path.display()),
        }
    }
}

/// Whether the run that made `dir` is gone: its lock is free (and was
/// made over a second ago: a run creates it, then locks it), or (killed
/// before it made one) the directory is over a minute old.
fn abandoned(dir: &Path) -> bool {
    let older_than = |p: &Path, secs: u64| {
        p.symlink_metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs_f64() > secs as f64)
    };
    match opskit::safefs::open_nofollow(&dir.join(LOCK), fs::OpenOptions::new().read(true)) {
        Ok(f) => older_than(&dir.join(LOCK), 1) && f.try_lock().is_ok(),
        Err(_) => older_than(dir, 60),
    }
}
