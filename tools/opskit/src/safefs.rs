//! Opening files in directories that someone else may write.
//!
//! opskit runs as root over directories owned by others: a postgres-owned
//! backup root, the application's log directory, a state directory. A
//! symlink or hard link planted there must not make a root process write
//! through it, and a FIFO must not make a reader hang. Every file opened
//! in such a place goes through here:
//!
//! * [`open_nofollow`]: `O_NOFOLLOW` on the last component, then `fstat` of
//!   what was opened: a regular file with one link, or an error naming it;
//! * [`open_regular`] / [`read_regular`]: a reader that refuses anything but
//!   a regular file before it blocks (`O_NONBLOCK` open, `fstat`), and reads
//!   at most a bound;
//! * [`check_private`]: a configuration file only its owner (root or the
//!   running user) can write.

use std::fs::{self, File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, IoContext, Result};

/// What kind of file `meta` describes, for a message ("a directory").
pub fn kind_of(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Open `path` with `opts` without following a symlink at its last
/// component, and check that what was opened is a regular file with a
/// single link (a hard link to a file elsewhere is refused as well).
/// `O_NONBLOCK` is added so that opening a FIFO never waits for a writer.
pub fn open_nofollow(path: &Path, opts: &mut OpenOptions) -> Result<File> {
    open_nofollow_meta(path, opts).map(|(f, _)| f)
}

/// [`open_nofollow`], with the metadata of the file opened (the `fstat`
/// it checked).
pub fn open_nofollow_meta(path: &Path, opts: &mut OpenOptions) -> Result<(File, Metadata)> {
    let file = opts
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::failure(format!(
                "{} is a symbolic link: refused (opskit never opens a file through a link in a directory others can write)",
                path.display()
            )),
            _ => Error::io("opening", path, &e),
        })?;
    let meta = file.metadata().at("checking", path)?;
    if !meta.is_file() {
        return Err(Error::failure(format!(
            "{} is {}, not a regular file: refused",
            path.display(),
            kind_of(&meta)
        )));
    }
    if meta.nlink() > 1 {
        return Err(Error::failure(format!(
            "{} has {} hard links: refused (it may be a link to a file elsewhere)",
            path.display(),
            meta.nlink()
        )));
    }
    Ok((file, meta))
}

/// Open an existing regular file for reading; a FIFO, device, socket or
/// directory is refused with a message naming it, without blocking.
/// Symlinks are followed (use [`open_nofollow`] where they must not be).
pub fn open_regular(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .at("opening", path)?;
    let meta = file.metadata().at("checking", path)?;
    if !meta.is_file() {
        return Err(Error::usage(format!(
            "{} is {}, not a regular file: refused",
            path.display(),
            kind_of(&meta)
        )));
    }
    Ok(file)
}

/// Read a whole regular file of at most `max` bytes ([`open_regular`]);
/// a larger one is refused naming its size and the bound.
pub fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = open_regular(path)?;
    read_bounded(file, path, max)
}

/// Read at most `max` bytes from an open file; more is an error naming `path`.
pub fn read_bounded(file: impl Read, path: &Path, max: u64) -> Result<Vec<u8>> {
    read_bounded_sized(file, path, max, 0)
}

/// [`read_bounded`] of a file expected to hold `size` bytes (its `fstat`):
/// read in one call instead of a growing buffer's many.
pub fn read_bounded_sized(file: impl Read, path: &Path, max: u64, size: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size.min(max) as usize + 1);
    file.take(max + 1)
        .read_to_end(&mut buf)
        .at("reading", path)?;
    if buf.len() as u64 > max {
        return Err(Error::usage(format!(
            "{} is larger than {}: refused",
            path.display(),
            crate::units::format_size(max)
        )));
    }
    Ok(buf)
}

/// Refuse a configuration file that someone other than its owner can
/// change: it must be owned by root or the running user, and not writable
/// by group or others (the rule `ssh` applies to `authorized_keys`).
pub fn check_private(path: &Path, meta: &Metadata) -> Result<()> {
    let euid = crate::sys::euid();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(Error::usage(format!(
            "{} is owned by uid {} ({}), not by root or the running user: refused (chown it)",
            path.display(),
            meta.uid(),
            crate::sys::user_name(meta.uid()).unwrap_or_else(|| "?".into())
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::usage(format!(
            "{} is mode {mode:04o}: writable by group or others, refused (chmod go-w it)",
            path.display()
        )));
    }
    Ok(())
}

/// Refuse a directory in which someone other than root or the running
/// user could rename, replace or plant what this process creates: it must
/// be a real directory (not a link) owned by one of them, and not writable
/// by group or others unless it is sticky (as /tmp). Root writing into a
/// directory another user owns would otherwise write wherever that user
/// points a link put in place of its staging directory.
pub fn check_dir_private(dir: &Path) -> Result<()> {
    let m = dir.symlink_metadata().at("checking", dir)?;
    if !m.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory (or is a symbolic link): refused",
            dir.display()
        )));
    }
    let trusted_owner = m.uid() == 0 || m.uid() == crate::sys::euid();
    let sticky = m.permissions().mode() & 0o1000 != 0;
    if trusted_owner && sticky {
        return Ok(());
    }
    check_private(dir, &m).map_err(|e| {
        if sticky {
            e
        } else {
            Error::usage(format!("{}, and it is not sticky", e.msg))
        }
    })
}

/// [`check_dir_private`] for every directory `path` passes through, from
/// `/` down to `path` itself, following links as the kernel does: a link
/// is only as safe as the directory it lives in, and whoever can write
/// `/var/backups` can repoint `/var/backups/opskit`.
pub fn check_path_private(path: &Path) -> Result<()> {
    let abs = std::path::absolute(path).at("resolving", path)?;
    let mut cur = PathBuf::from("/");
    check_dir_private(&cur)?;
    // The names still to walk, the next last.
    let names = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .rev()
            .filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n.to_os_string()),
                std::path::Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut todo = names(&abs);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let m = next.symlink_metadata().at("checking", &next)?;
        if m.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return Err(Error::usage(format!("{}: too many links", path.display())));
            }
            let target = fs::read_link(&next).at("reading the link", &next)?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            todo.extend(names(&target));
            continue;
        }
        cur = next;
        check_dir_private(&cur)?;
    }
    Ok(())
}

/// What a file's content is known by: its inode, size and change times. A
/// rename over it, or any write to it, changes one of them (the change
/// time cannot be set back by its owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl FileId {
    pub fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }
}

/// Open `path` again for reading ([`open_nofollow`]) and check that it is
/// still the file `seen` describes, unchanged since it was checked: a file
/// replaced or written between a verification and its use is refused
/// before a byte of it is used.
pub fn reopen_unchanged(path: &Path, seen: &FileId) -> Result<File> {
    let file = open_nofollow(path, OpenOptions::new().read(true))?;
    let now = FileId::of(&file.metadata().at("checking", path)?);
    if &now != seen {
        return Err(Error::check(format!(
            "{} changed after it was verified (replaced or written): refused",
            path.display()
        )));
    }
    Ok(file)
}

/// Whether `path` is a real directory (a symlink to one is not).
pub fn is_real_dir(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// Whether `path` is a real regular file (a symlink to one is not).
pub fn is_real_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_hard_links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_nofollow(&link, OpenOptions::new().write(true)).unwrap_err();
        assert!(e.msg.contains("symbolic link"), "{}", e.msg);
        let hard = d.path().join("hard");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = open_nofollow(&hard, OpenOptions::new().write(true)).unwrap_err();
        assert!(e.msg.contains("2 hard links"), "{}", e.msg);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let plain = d.path().join("plain");
        open_nofollow(&plain, OpenOptions::new().write(true).create(true)).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let st = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(st.success());
        let e = read_regular(&fifo, 10).unwrap_err();
        assert!(e.msg.contains("a FIFO, not a regular file"), "{}", e.msg);
        let e = open_nofollow(&fifo, OpenOptions::new().read(true)).unwrap_err();
        assert!(e.msg.contains("a FIFO"), "{}", e.msg);
        let e = read_regular(d.path(), 10).unwrap_err();
        assert!(e.msg.contains("a directory"), "{}", e.msg);
    }

    #[test]
    fn reads_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, "0123456789").unwrap();
        assert_eq!(read_regular(&p, 10).unwrap().len(), 10);
        let e = read_regular(&p, 9).unwrap_err();
        assert!(e.msg.contains("larger than"), "{}", e.msg);
    }

    #[test]
    fn a_file_replaced_or_written_after_its_check_is_refused() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("db.dump");
        std::fs::write(&p, "verified").unwrap();
        let seen = FileId::of(&std::fs::metadata(&p).unwrap());
        reopen_unchanged(&p, &seen).unwrap();
        // Replaced by a rename (the attacker's file, same size).
        let forged = d.path().join("forged");
        std::fs::write(&forged, "forgery!").unwrap();
        std::fs::rename(&forged, &p).unwrap();
        let e = reopen_unchanged(&p, &seen).unwrap_err();
        assert!(e.msg.contains("changed after it was verified"), "{}", e.msg);
        // Written in place, same size, mtime set back: the change time moves.
        let seen = FileId::of(&std::fs::metadata(&p).unwrap());
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all(b"FORGERY!").unwrap();
        f.set_modified(mtime).unwrap();
        drop(f);
        assert!(reopen_unchanged(&p, &seen).is_err());
    }

    #[test]
    fn private_config() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("env");
        std::fs::write(&p, "A=1\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_private(&p, &std::fs::metadata(&p).unwrap()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = check_private(&p, &std::fs::metadata(&p).unwrap()).unwrap_err();
        assert!(e.msg.contains("mode 0664"), "{}", e.msg);
        assert_eq!(e.exit, crate::Exit::Usage);
    }
}
