//! Unpacking a tar from a set, which may have been written by an attacker.
//!
//! GNU tar run as root keeps owners, modes and device nodes: a files
//! archive with a root-owned setuid shell gives root to whoever can run it.
//! Here every entry is checked before it is written:
//!
//! * regular files, directories, symlinks and hard links are unpacked;
//!   device nodes, FIFOs and anything else are skipped and named;
//! * no owner is restored (files belong to the user unpacking) and the
//!   setuid, setgid and sticky bits are dropped (named);
//! * nothing lands outside the target, also not through a symlink the
//!   archive made earlier (tar's own `unpack_in` check), and an absolute
//!   or `..` path is refused.

use std::io::Read;
use std::path::Path;

use crate::{Error, IoContext, Result};

/// What an unpack did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unpacked {
    /// Entries written.
    pub entries: u64,
    /// Entries not written, with why (`dev/sda (block device)`).
    pub skipped: Vec<String>,
    /// Entries written without their setuid/setgid/sticky bits.
    pub stripped: Vec<String>,
}

impl Unpacked {
    /// One line for a record: counts and the first few names.
    pub fn describe(&self) -> String {
        let mut s = format!("{} entries", self.entries);
        let first = |v: &[String]| {
            let mut t = v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
            if v.len() > 5 {
                t.push_str(&format!(" and {} more", v.len() - 5));
            }
            t
        };
        if !self.skipped.is_empty() {
            s.push_str(&format!(
                "; skipped {}: {}",
                self.skipped.len(),
                first(&self.skipped)
            ));
        }
        if !self.stripped.is_empty() {
            s.push_str(&format!(
                "; setuid/setgid/sticky bits dropped from {}",
                first(&self.stripped)
            ));
        }
        s
    }
}

/// Whether an archive may hold links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Symlinks and hard links are made (an application's files have them;
    /// nothing is written through one out of the target).
    Allow,
    /// An archive with a link is refused: a base backup's tar has none, and
    /// one pointing at `pg_wal` or a tablespace elsewhere would make the
    /// cluster started from it write there.
    Refuse,
}

/// Unpack the tar stream `src` into the existing directory `dest`; `what`
/// names the archive in errors.
pub fn unpack(src: impl Read, dest: &Path, what: &Path) -> Result<Unpacked> {
    unpack_with(src, dest, what, Links::Allow)
}

/// [`unpack`], with links allowed or refused.
pub fn unpack_with(src: impl Read, dest: &Path, what: &Path, links: Links) -> Result<Unpacked> {
    use tar::EntryType as T;
    let mut ar = tar::Archive::new(src);
    ar.set_preserve_permissions(false);
    ar.set_preserve_ownerships(false);
    ar.set_unpack_xattrs(false);
    let mut out = Unpacked::default();
    for entry in ar.entries().at("reading", what)? {
        let mut e = entry.at("reading", what)?;
        let name = e
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "?".into());
        let kind = e.header().entry_type();
        let skip = match kind {
            T::Regular | T::Continuous | T::GNUSparse | T::Directory | T::Symlink | T::Link => None,
            T::Char => Some("character device"),
            T::Block => Some("block device"),
            T::Fifo => Some("FIFO"),
            _ => Some("unknown entry type"),
        };
        if let Some(why) = skip {
            out.skipped.push(format!("{name} ({why})"));
            continue;
        }
        if links == Links::Refuse && matches!(kind, T::Symlink | T::Link) {
            return Err(Error::check(format!(
                "{}: entry {name} is a link, which this archive may not hold; refused",
                what.display()
            )));
        }
        if e.header().mode().is_ok_and(|m| m & 0o7000 != 0) {
            out.stripped.push(name.clone());
        }
        if !e.unpack_in(dest).at("unpacking into", dest)? {
            return Err(Error::check(format!(
                "{}: entry {name} would land outside {}; refused",
                what.display(),
                dest.display()
            )));
        }
        out.entries += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    #[test]
    fn setuid_devices_and_escapes_are_not_unpacked() {
        let mut b = tar::Builder::new(Vec::new());
        let body = b"#!/bin/sh\nid\n";
        let mut h = header(tar::EntryType::Regular, 0o4755, body.len() as u64);
        b.append_data(&mut h, "rootshell", &body[..]).unwrap();
        let mut h = header(tar::EntryType::Char, 0o666, 0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "null", &[][..]).unwrap();
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("/tmp").unwrap();
        b.append_data(&mut h, "out", &[][..]).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "out/escaped", &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();

        let d = tempfile::tempdir().unwrap();
        let r = unpack(&bytes[..], d.path(), Path::new("files.tar"));
        let shell = d.path().join("rootshell").metadata().unwrap();
        assert_eq!(shell.permissions().mode() & 0o7777, 0o755);
        assert_eq!(shell.uid(), crate::sys::euid());
        assert!(!d.path().join("null").exists());
        assert!(!Path::new("/tmp/escaped").exists());
        let e = r.unwrap_err();
        assert!(e.msg.contains("outside"), "{}", e.msg);
    }

    #[test]
    fn links_are_refused_where_an_archive_may_hold_none() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        h.set_link_name("/var/lib/postgresql/15/main/pg_wal")
            .unwrap();
        b.append_data(&mut h, "pg_wal", &[][..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let e =
            unpack_with(&bytes[..], d.path(), Path::new("base.tar"), Links::Refuse).unwrap_err();
        assert!(e.msg.contains("is a link"), "{}", e.msg);
        assert!(d.path().join("pg_wal").symlink_metadata().is_err());
    }

    #[test]
    fn describes_what_it_skipped() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(tar::EntryType::Fifo, 0o644, 0);
        b.append_data(&mut h, "pipe", &[][..]).unwrap();
        let mut h = header(tar::EntryType::Regular, 0o2755, 1);
        b.append_data(&mut h, "sgid", &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let r = unpack(&bytes[..], d.path(), Path::new("f.tar")).unwrap();
        assert_eq!(r.entries, 1);
        assert_eq!(
            r.describe(),
            "1 entries; skipped 1: pipe (FIFO); setuid/setgid/sticky bits dropped from sgid"
        );
    }
}
