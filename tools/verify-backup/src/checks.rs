//! The checks of one set: quick (manifest, sizes, sha256, permissions, no
//! unlisted files, SHA256SUMS) and structural (every gzip stream to its
//! end, every tar entry readable, the dump's table of contents lists, plain
//! dumps end with pg_dump's completion marker). One read of each file does
//! the hashing and the decompression at once, on two cores.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use opskit::backupset::{self, Codec, DumpFormat, FileEntry, FileKind, Manifest};
use opskit::crypt::Identities;
use opskit::gz::HashedReader;
use opskit::pgtools::{ChildGuard, PgTool, StderrTail};
use opskit::physical::MAX_BACKUP_MANIFEST;
use opskit::progress::Progress;
use opskit::safefs::FileId;

pub use opskit::records::{Depth, SetCheck as Check, SetCheckName as Name};

/// Set-level checks that need no file contents: permissions, unlisted
/// files, and SHA256SUMS agreeing with the manifest.
pub fn layout(set: &Path, m: &Manifest, manifest_sha: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let mut loose = Vec::new();
    if let Ok(meta) = fs::metadata(set)
        && meta.permissions().mode() & 0o077 != 0
    {
        loose.push(format!(
            "set directory is {:o}",
            meta.permissions().mode() & 0o777
        ));
    }
    let listed: BTreeSet<&str> = m.files.iter().map(|f| f.name.as_str()).collect();
    let mut unlisted = Vec::new();
    match fs::read_dir(set) {
        Ok(rd) => {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(meta) = e.path().symlink_metadata()
                    && meta.permissions().mode() & 0o077 != 0
                {
                    loose.push(format!("{name} is {:o}", meta.permissions().mode() & 0o777));
                }
                if name != backupset::MANIFEST
                    && name != backupset::SUMS
                    && name != opskit::sign::SET_SIGNATURE
                    && !listed.contains(name.as_str())
                {
                    unlisted.push(name);
                }
            }
        }
        Err(e) => out.push(Check::fail(
            Name::Unlisted,
            None,
            format!("cannot list the set: {e}"),
        )),
    }
    out.push(if loose.is_empty() {
        Check::pass(
            Name::Permissions,
            None,
            "set 0700-like, files not group/world readable",
        )
    } else {
        Check::fail(
            Name::Permissions,
            None,
            format!("group/world access: {}", loose.join(", ")),
        )
    });
    unlisted.sort();
    out.push(if unlisted.is_empty() {
        Check::pass(Name::Unlisted, None, "no files beyond the manifest")
    } else {
        Check::fail(
            Name::Unlisted,
            None,
            format!("files not in the manifest: {}", unlisted.join(", ")),
        )
    });
    out.push(sums(set, m, manifest_sha));
    out
}

/// SHA256SUMS must list exactly the manifest's files with the same hashes,
/// and the manifest itself with its actual hash (so a changed manifest is
/// caught even when it still parses).
fn sums(set: &Path, m: &Manifest, manifest_sha: &str) -> Check {
    let path = set.join(backupset::SUMS);
    // Not signed: read without following a link, and bounded.
    let read = opskit::safefs::open_nofollow(&path, fs::OpenOptions::new().read(true))
        .and_then(|f| opskit::safefs::read_bounded(f, &path, 1 << 20));
    let text = match read {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => return Check::fail(Name::Sums, Some(backupset::SUMS), e.msg),
    };
    let want = backupset::expected_sums_entries(m, manifest_sha);
    let expected = backupset::sums_text(&want);
    if text == expected {
        Check::pass(
            Name::Sums,
            Some(backupset::SUMS),
            "agrees with the manifest",
        )
    } else {
        let mut problems = Vec::new();
        for (name, sha) in &want {
            if !text.lines().any(|l| l == format!("{sha}  {name}")) {
                problems.push(name.clone());
            }
        }
        let detail = if problems.is_empty() {
            "differs from the manifest (extra or malformed lines)".to_string()
        } else {
            format!("wrong or missing entries for {}", problems.join(", "))
        };
        Check::fail(Name::Sums, Some(backupset::SUMS), detail)
    }
}

/// Read one file once: size, sha256 and, at structural depth, its
/// structure. `pg_restore` is needed for a database dump in custom format;
/// the identities for the structure of an encrypted file (the caller
/// lowers the depth to quick without them). Also gives what identifies the
/// file read ([`FileId`]): a restore later uses only that same file.
pub fn file(
    set: &Path,
    f: &FileEntry,
    m: &Manifest,
    depth: Depth,
    pg_restore: Option<&PgTool>,
    ids: Option<&Identities>,
    progress: &Progress,
) -> (Vec<Check>, Option<FileId>) {
    let mut id = None;
    let checks = file_checks(set, f, m, (depth, pg_restore, ids), &mut id, progress);
    (checks, id)
}

fn file_checks(
    set: &Path,
    f: &FileEntry,
    m: &Manifest,
    (depth, pg_restore, ids): (Depth, Option<&PgTool>, Option<&Identities>),
    id: &mut Option<FileId>,
    progress: &Progress,
) -> Vec<Check> {
    let name = f.name.as_str();
    let path = set.join(name);
    let meta = match path.symlink_metadata() {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return vec![Check::fail(Name::Exists, Some(name), "missing")];
        }
        Err(e) => {
            return vec![Check::fail(
                Name::Exists,
                Some(name),
                format!("cannot stat: {e}"),
            )];
        }
    };
    if !meta.is_file() {
        return vec![Check::fail(
            Name::Exists,
            Some(name),
            "not a regular file (a symlink or directory)",
        )];
    }
    let mut out = Vec::new();
    out.push(if meta.len() == f.bytes {
        Check::pass(Name::Size, Some(name), format!("{} bytes", f.bytes))
    } else {
        Check::fail(
            Name::Size,
            Some(name),
            format!("expected {} bytes, found {}", f.bytes, meta.len()),
        )
    });
    let file = match opskit::safefs::open_nofollow(&path, std::fs::OpenOptions::new().read(true)) {
        Ok(fh) => fh,
        Err(e) => {
            out.push(Check::fail(Name::Sha256, Some(name), e.msg));
            return out;
        }
    };
    *id = file.metadata().ok().map(|m| FileId::of(&m));
    let file = progress.reader(file);
    if f.encrypted() {
        out.push(crate::sealed::header(&path, f, m));
        if let Some(ids) = ids.filter(|_| depth >= Depth::Structural) {
            out.extend(crate::sealed::read(file, f, m, pg_restore, ids));
            return out;
        }
    }
    // No further than the manifest's size: a file still growing (or
    // endless) is not read for ever.
    let mut reader = HashedReader::new(opskit::codec::AtMost::new(file, f.bytes, "the file"));
    if depth >= Depth::Structural {
        out.extend(structure(&mut reader, f, m, pg_restore));
    }
    out.push(sha256(f, reader.finish()));
    out
}

/// The sha256 check of a file from what reading it gave.
pub fn sha256(f: &FileEntry, read: io::Result<(u64, String)>) -> Check {
    let name = Some(f.name.as_str());
    match read {
        Ok((_, sha)) if sha == f.sha256 => Check::pass(Name::Sha256, name, "matches"),
        Ok((_, sha)) => Check::fail(
            Name::Sha256,
            name,
            format!("expected {}, found {sha}", f.sha256),
        ),
        Err(e) => Check::fail(Name::Sha256, name, format!("read error: {e}")),
    }
}

/// The content checks for one file, reading from `src` (the hashed
/// stream, or its decrypted plaintext).
pub fn structure(
    src: &mut dyn Read,
    f: &FileEntry,
    m: &Manifest,
    pg_restore: Option<&PgTool>,
) -> Vec<Check> {
    let name = f.name.as_str();
    let mut content: Box<dyn Read + '_> = match opskit::codec::content_reader(f, src) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                Name::Read,
                Some(name),
                format!("cannot start decompressing: {e}"),
            )];
        }
    };
    let db_format = m
        .database
        .as_ref()
        .map(|d| d.format)
        .unwrap_or(DumpFormat::Custom);
    let mut checks = Vec::new();
    let outcome = match f.kind {
        FileKind::Files => tar_walk(&mut content, f, &mut checks),
        FileKind::Database if db_format == DumpFormat::Custom => {
            toc(&mut content, name, pg_restore, &mut checks)
        }
        FileKind::Database => marker(
            &mut content,
            name,
            "-- PostgreSQL database dump complete",
            &mut checks,
        ),
        FileKind::Globals => marker(
            &mut content,
            name,
            "-- PostgreSQL database cluster dump complete",
            &mut checks,
        ),
        FileKind::Contents => crate::sealed::contents(&mut content, name, &mut checks),
        FileKind::Base => base_walk(&mut content, name, &mut checks),
        FileKind::BackupManifest => kept_manifest(&mut content, name, &mut checks),
    };
    let (stream, proof) = match f.compression {
        Some(Codec::Gzip) => (
            Name::Gzip,
            "every member inflates with valid CRC and length",
        ),
        Some(Codec::Zstd) => (Name::Zstd, "every frame decompresses with a valid checksum"),
        None => (Name::Read, ""),
    };
    if let Err(e) = outcome {
        checks.push(Check::fail(
            stream,
            Some(name),
            format!("stream broken: {e}"),
        ));
    } else if f.compression.is_some() {
        checks.push(Check::pass(stream, Some(name), proof));
    }
    checks
}

/// Read to the end, keeping the last bytes; the text must contain `want`
/// near its end (current pg_dump writes `\unrestrict` after the marker).
fn marker(src: &mut dyn Read, name: &str, want: &str, checks: &mut Vec<Check>) -> io::Result<()> {
    let mut tail: Vec<u8> = Vec::with_capacity(8192);
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let text = String::from_utf8_lossy(&tail);
    checks.push(if text.contains(want) {
        Check::pass(
            Name::Complete,
            Some(name),
            format!("{total} bytes, ends with pg_dump's completion marker"),
        )
    } else {
        Check::fail(
            Name::Complete,
            Some(name),
            format!("no '{want}' near the end: the dump was cut short"),
        )
    });
    Ok(())
}

/// Walk the archive to its end, reading every entry, then drain the rest
/// of the stream so gzip's trailer is checked.
fn tar_walk(src: &mut dyn Read, f: &FileEntry, checks: &mut Vec<Check>) -> io::Result<()> {
    let name = f.name.as_str();
    let mut count = 0u64;
    let walked: io::Result<()> = (|| {
        let mut ar = tar::Archive::new(&mut *src);
        for entry in ar.entries()? {
            let mut e = entry?;
            io::copy(&mut e, &mut io::sink())?;
            count += 1;
        }
        Ok(())
    })();
    match walked {
        Ok(()) => {
            // Bytes after the end-of-archive marker (padding) still count.
            io::copy(src, &mut io::sink())?;
            checks.push(match f.entries {
                Some(n) if n != count => Check::fail(
                    Name::Tar,
                    Some(name),
                    format!("expected {n} entries, found {count}"),
                ),
                _ => Check::pass(
                    Name::Tar,
                    Some(name),
                    format!("{count} entries, every one readable"),
                ),
            });
            Ok(())
        }
        Err(e) => {
            checks.push(Check::fail(
                Name::Tar,
                Some(name),
                format!("archive broken after {count} entries: {e}"),
            ));
            // The stream itself may be fine (or not): read it to its end.
            io::copy(src, &mut io::sink()).map(|_| ())
        }
    }
}

/// Walk a base set's tar to its end, noting every regular file's size;
/// `backup_manifest` (pg_basebackup writes it last) must list exactly
/// those sizes, and a `backup_label` must be there. The checksums in it
/// are pg_verifybackup's to check, at the restore depth.
/// The `backup_manifest` a base set keeps beside its tar (what the next
/// incremental is taken against) parses as one.
fn kept_manifest(src: &mut dyn Read, name: &str, checks: &mut Vec<Check>) -> io::Result<()> {
    let mut text = Vec::new();
    src.take(MAX_BACKUP_MANIFEST + 1).read_to_end(&mut text)?;
    io::copy(src, &mut io::sink())?;
    let parsed = if text.len() as u64 > MAX_BACKUP_MANIFEST {
        Err(format!("larger than {MAX_BACKUP_MANIFEST} bytes"))
    } else {
        opskit::physical::PgBackupManifest::parse(&text)
    };
    checks.push(match parsed {
        Ok(m) => Check::pass(
            Name::BackupManifest,
            Some(name),
            format!("a backup manifest of {} files", m.files.len()),
        ),
        Err(e) => Check::fail(Name::BackupManifest, Some(name), e),
    });
    Ok(())
}

fn base_walk(src: &mut dyn Read, name: &str, checks: &mut Vec<Check>) -> io::Result<()> {
    use opskit::physical::{BACKUP_MANIFEST, PgBackupManifest};
    let mut held = std::collections::BTreeMap::new();
    let mut manifest = None;
    let walked: io::Result<()> = (|| {
        let mut ar = tar::Archive::new(&mut *src);
        for entry in ar.entries()? {
            let mut e = entry?;
            let path = e.path()?.to_string_lossy().into_owned();
            if path == BACKUP_MANIFEST {
                let mut text = Vec::new();
                (&mut e)
                    .take(MAX_BACKUP_MANIFEST + 1)
                    .read_to_end(&mut text)?;
                if text.len() as u64 > MAX_BACKUP_MANIFEST {
                    return Err(io::Error::other(format!(
                        "{BACKUP_MANIFEST} is larger than {MAX_BACKUP_MANIFEST} bytes"
                    )));
                }
                manifest = Some(text);
            } else {
                let size = io::copy(&mut e, &mut io::sink())?;
                if e.header().entry_type().is_file() {
                    held.insert(path.trim_start_matches("./").to_string(), size);
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = walked {
        checks.push(Check::fail(
            Name::Tar,
            Some(name),
            format!("archive broken after {} files: {e}", held.len()),
        ));
        return io::copy(src, &mut io::sink()).map(|_| ());
    }
    io::copy(src, &mut io::sink())?;
    checks.push(Check::pass(
        Name::Tar,
        Some(name),
        format!("{} files, every one readable", held.len()),
    ));
    let verdict = match &manifest {
        None => Err(format!(
            "no {BACKUP_MANIFEST} in the tar: not a complete pg_basebackup"
        )),
        Some(_) if !held.contains_key("backup_label") => {
            Err("no backup_label in the tar: a restore would not know where to start".into())
        }
        Some(text) => PgBackupManifest::parse(text).and_then(|m| m.compare(&held)),
    };
    checks.push(match verdict {
        Ok(n) => Check::pass(
            Name::BackupManifest,
            Some(name),
            format!("all {n} files {BACKUP_MANIFEST} lists are there at their size"),
        ),
        Err(e) => Check::fail(Name::BackupManifest, Some(name), e),
    });
    Ok(())
}

/// Feed the dump to `pg_restore --list` until it has read the table of
/// contents, while reading the whole stream to its end.
fn toc(
    src: &mut dyn Read,
    name: &str,
    pg_restore: Option<&PgTool>,
    checks: &mut Vec<Check>,
) -> io::Result<()> {
    let Some(tool) = pg_restore else {
        checks.push(Check::fail(
            Name::Toc,
            Some(name),
            "no pg_restore available to list the dump",
        ));
        return io::copy(src, &mut io::sink()).map(|_| ());
    };
    let child = Command::new(&tool.path)
        .arg("--list")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut guard = match child {
        Ok(c) => ChildGuard(Some(c)),
        Err(e) => {
            checks.push(Check::fail(
                Name::Toc,
                Some(name),
                format!("cannot run pg_restore: {e}"),
            ));
            return io::copy(src, &mut io::sink()).map(|_| ());
        }
    };
    let tail = StderrTail::start(guard.child(), "pg_restore");
    let mut stdout = guard.child().stdout.take().expect("piped");
    let listing = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut stdin = guard.child().stdin.take();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read_err = None;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                read_err = Some(e);
                break;
            }
        };
        if let Some(w) = stdin.as_mut()
            && w.write_all(&buf[..n]).is_err()
        {
            // pg_restore has what it needs (or gave up): keep reading.
            stdin = None;
        }
    }
    drop(stdin);
    let status = guard.wait();
    let listing = listing.join().unwrap_or_default();
    let msg = tail.summary();
    let entries = listing
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count();
    checks.push(match status {
        Ok(s) if s.success() && listing.contains("Format: CUSTOM") => Check::pass(
            Name::Toc,
            Some(name),
            format!("pg_restore --list: {entries} entries"),
        ),
        Ok(_) => Check::fail(
            Name::Toc,
            Some(name),
            format!("pg_restore --list failed: {msg}"),
        ),
        Err(e) => Check::fail(Name::Toc, Some(name), format!("pg_restore --list: {e}")),
    });
    match read_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
