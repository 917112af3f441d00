//! An exclusive lock file (`flock`), so two runs never work on the same
//! thing at once. The holder writes its pid and start time into the file; a
//! run that cannot get the lock says who has it.
//!
//! The file is never deleted: deleting a lock file lets a third run lock a
//! new inode while the second still waits on the old one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, IoContext, Result};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Take the lock at `path`, waiting up to `wait` (zero: fail at once).
pub fn acquire(path: &Path, wait: Duration) -> Result<Lock> {
    // The root may belong to another user (postgres): never write
    // through a symlink or hard link planted in it.
    let mut file = crate::safefs::open_nofollow(
        path,
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
    )
    .map_err(|e| e.context("opening lock file"))?;
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(Error::failure(format!(
                        "another run holds {} {}; {}",
                        path.display(),
                        holder(&mut file),
                        if wait.is_zero() {
                            "not waiting (see --lock-wait)".to_string()
                        } else {
                            format!(
                                "gave up after waiting {}",
                                crate::units::format_duration(wait)
                            )
                        }
                    )));
                }
                if !logged {
                    log::info!("waiting for {} {}", path.display(), holder(&mut file));
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(100).min(wait));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", path, &e)),
        }
    }
    let stamp = format!(
        "pid={}\nsince={}\n",
        std::process::id(),
        crate::record::now_ts()
    );
    file.set_len(0).at("writing lock file", path)?;
    file.seek(SeekFrom::Start(0))
        .at("writing lock file", path)?;
    file.write_all(stamp.as_bytes())
        .at("writing lock file", path)?;
    Ok(Lock {
        _file: file,
        path: path.to_path_buf(),
    })
}

/// "since <time>, pid N" from the holder's stamp, as far as it can be read.
fn holder(file: &mut File) -> String {
    let mut s = String::new();
    if file.seek(SeekFrom::Start(0)).is_err() || file.take(4096).read_to_string(&mut s).is_err() {
        return "(holder unknown)".into();
    }
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k).map(str::to_string))
    };
    match (get("since="), get("pid=")) {
        (Some(since), Some(pid)) => format!("since {since}, pid {pid}"),
        (None, Some(pid)) => format!("pid {pid}"),
        _ => "(holder unknown)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_fails_naming_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let held = acquire(&p, Duration::ZERO).unwrap();
        let err = acquire(&p, Duration::ZERO).unwrap_err();
        assert_eq!(err.exit, crate::Exit::Failure);
        assert!(err.msg.starts_with("another run holds "), "{}", err.msg);
        assert!(
            err.msg.contains(&format!("pid {}", std::process::id())),
            "{}",
            err.msg
        );
        assert!(err.msg.contains("since 20"), "{}", err.msg);
        drop(held);
        acquire(&p, Duration::ZERO).unwrap();
    }

    #[test]
    fn waiting_gets_the_lock_when_released() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let held = acquire(&p, Duration::ZERO).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let start = Instant::now();
        acquire(&p, Duration::from_secs(10)).unwrap();
        assert!(start.elapsed() >= Duration::from_millis(250));
        t.join().unwrap();
    }

    #[test]
    fn waiting_times_out() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let _held = acquire(&p, Duration::ZERO).unwrap();
        let start = Instant::now();
        let err = acquire(&p, Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(err.msg.contains("gave up after waiting"), "{}", err.msg);
    }

    #[test]
    fn a_planted_symlink_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("shadow");
        std::fs::write(&victim, "root:secret\n").unwrap();
        let p = d.path().join(".lock");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        let err = acquire(&p, Duration::ZERO).unwrap_err();
        assert!(err.msg.contains("symbolic link"), "{}", err.msg);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n");
    }

    #[test]
    fn unopenable_lock_names_path() {
        let err = acquire(Path::new("/nonexistent-dir/.lock"), Duration::ZERO).unwrap_err();
        assert!(err.msg.contains("/nonexistent-dir/.lock"), "{}", err.msg);
    }
}
