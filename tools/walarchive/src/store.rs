//! The archive: `ROOT/wal/<timeline>/<name>.zst[.age]` and its
//! `<name>.sha256` (the original's sha256, size and the stored file's
//! name), written last.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use opskit::backupset::Codec;
use opskit::codec::Compression;
use opskit::crypt::{HashRead, Identities, Recipients, Sealer};
use opskit::durable;
use opskit::gz::HashWriter;
use opskit::records::{Wal, WalCounts, WalOp};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result};

pub struct Archive {
    dir: PathBuf,
}

/// What the `.sha256` file of an archived WAL file says.
struct Sidecar {
    sha256: String,
    bytes: u64,
    stored: String,
}

/// Whether `name` is a WAL file name PostgreSQL archives: a segment
/// (24 hex digits), a timeline history file, a backup label or a partial
/// segment.
pub fn valid_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    };
    if let Some(t) = name.strip_suffix(".history") {
        return hex(t, 8);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest
            .split_once('.')
            .is_some_and(|(seg, off)| hex(seg, 24) && hex(off, 8));
    }
    hex(name, 24)
}

impl Archive {
    pub fn new(root: &Path) -> Archive {
        Archive {
            dir: root.join("wal"),
        }
    }

    fn check_name(name: &str) -> Result<()> {
        if valid_name(name) {
            Ok(())
        } else {
            Err(Error::usage(format!(
                "'{name}' is not a WAL file name (a segment, NNNNNNNN.history or a .backup label)"
            )))
        }
    }

    /// The timeline's directory.
    fn tli_dir(&self, name: &str) -> PathBuf {
        self.dir.join(&name[..8])
    }

    fn read_sidecar(path: &Path) -> Result<Option<Sidecar>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("reading", path, &e)),
        };
        let mut w = text.split_whitespace();
        match (w.next(), w.next().and_then(|b| b.parse().ok()), w.next()) {
            (Some(sha), Some(bytes), Some(stored)) if sha.len() == 64 && durable_name(stored) => {
                Ok(Some(Sidecar {
                    sha256: sha.into(),
                    bytes,
                    stored: stored.into(),
                }))
            }
            _ => Err(Error::failure(format!(
                "{}: not an archive checksum file",
                path.display()
            ))),
        }
    }

    /// Archive `src` as `name`.
    pub fn push(
        &self,
        src: &Path,
        name: &str,
        compression: Compression,
        seal: Option<&Recipients>,
        em: &mut Emitter,
    ) -> Result<Done<WalCounts>> {
        let start = Instant::now();
        Self::check_name(name)?;
        let dir = self.tli_dir(name);
        make_dirs(&dir)?;
        remove_stale_temps(&dir);
        let side = dir.join(format!("{name}.sha256"));
        if let Some(have) = Self::read_sidecar(&side)? {
            let f = File::open(src).at("reading", src)?;
            let got = HashRead::new(f).finish().at("reading", src)?;
            if got.sha256 != have.sha256 || got.bytes != have.bytes {
                return Err(Error::failure(format!(
                    "{name} is already archived with other content ({}: sha256 {}, {} bytes; {}: sha256 {}, {} bytes); not overwritten",
                    dir.join(&have.stored).display(),
                    have.sha256,
                    have.bytes,
                    src.display(),
                    got.sha256,
                    got.bytes
                )));
            }
            let stored = dir.join(&have.stored);
            let stored_bytes = fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
            log::info!("{name} was archived before with the same content");
            return report(
                em,
                WalOp::Push,
                name,
                &stored,
                got.bytes,
                got.sha256,
                stored_bytes,
                true,
                start,
            );
        }
        let age = if seal.is_some() {
            opskit::crypt::EXT
        } else {
            ""
        };
        let stored_name = format!("{name}{}{age}", compression.ext());
        let stored = dir.join(&stored_name);
        let tmp = dir.join(format!(".{stored_name}.tmp.{}", std::process::id()));
        // One core: the archiver runs beside the database it archives.
        let compression = Compression {
            threads: 1,
            ..compression
        };
        let written = write_stored(src, &tmp, compression, seal);
        let (orig, stored_bytes) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &stored).at("renaming into place", &stored)?;
        let line = format!("{} {} {stored_name}\n", orig.sha256, orig.bytes);
        let side_tmp = dir.join(format!(".{name}.sha256.tmp.{}", std::process::id()));
        let mut f = durable::create_new(&side_tmp, 0o600)?;
        std::io::Write::write_all(&mut f, line.as_bytes()).at("writing", &side_tmp)?;
        durable::sync_file(&f, &side_tmp)?;
        fs::rename(&side_tmp, &side).at("renaming into place", &side)?;
        durable::fsync_dir(&dir).at("syncing", &dir)?;
        report(
            em,
            WalOp::Push,
            name,
            &stored,
            orig.bytes,
            orig.sha256,
            stored_bytes,
            false,
            start,
        )
    }

    /// Hand `name` back at `dest`, checked against its sha256.
    pub fn fetch(
        &self,
        name: &str,
        dest: &Path,
        ids: Option<&Identities>,
        em: &mut Emitter,
    ) -> Result<Done<WalCounts>> {
        let start = Instant::now();
        Self::check_name(name)?;
        let dir = self.tli_dir(name);
        let Some(have) = Self::read_sidecar(&dir.join(format!("{name}.sha256")))? else {
            log::info!("{name} is not in the archive {}", self.dir.display());
            return Ok(Done::new(Exit::CheckFailed, WalCounts::default()));
        };
        let stored = dir.join(&have.stored);
        let file = File::open(&stored).at("reading", &stored)?;
        let stored_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let raw: Box<dyn Read> = if have.stored.ends_with(opskit::crypt::EXT) {
            let ids = ids.ok_or_else(|| {
                Error::failure(format!(
                    "{} is encrypted: give the identity (--identity FILE or OPSKIT_AGE_IDENTITY)",
                    stored.display()
                ))
            })?;
            Box::new(
                ids.open(file)
                    .map_err(|e| Error::failure(format!("{}: {e}", stored.display())))?,
            )
        } else {
            Box::new(file)
        };
        let mut src = opskit::codec::reader(Codec::of_name(&have.stored), raw)
            .map_err(|e| Error::failure(format!("{}: {e}", stored.display())))?;
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".walarchive.{name}.{}", std::process::id()));
        let copied = (|| {
            let f = durable::create_new(&tmp, 0o600)?;
            let mut out = HashWriter::new(f);
            io::copy(&mut src, &mut out)
                .map_err(|e| Error::failure(format!("{}: {e}", stored.display())))?;
            let (f, bytes, sha) = out.finish();
            if sha != have.sha256 || bytes != have.bytes {
                return Err(Error::failure(format!(
                    "{} is damaged: it gives {bytes} bytes, sha256 {sha}; archived were {} bytes, sha256 {}",
                    stored.display(),
                    have.bytes,
                    have.sha256
                )));
            }
            durable::sync_file(&f, &tmp)?;
            fs::rename(&tmp, dest).at("renaming into place", dest)?;
            Ok(sha)
        })();
        let sha = match copied {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        report(
            em,
            WalOp::Fetch,
            name,
            &stored,
            have.bytes,
            sha,
            stored_bytes,
            false,
            start,
        )
    }
}

/// What the archive holds: its segments per timeline, the newest, and the
/// segments missing between each timeline's first and last.
#[derive(Debug, Default)]
pub struct Survey {
    /// Archived WAL files (segments, history files, backup labels).
    pub files: u64,
    pub segments: u64,
    pub timelines: u64,
    /// The most recently archived file and when (its `.sha256`'s mtime).
    pub newest: Option<(String, std::time::SystemTime)>,
    /// How many segments are missing, and the first of them.
    pub missing: u64,
    pub first_missing: Option<String>,
}

impl Archive {
    /// Look at every timeline directory: a segment is archived when its
    /// `.sha256` is there. Gaps are counted per timeline, from its first
    /// archived segment to its last, with the segment size the archive
    /// records (16 MiB by default: 256 segments per log file number).
    pub fn survey(&self) -> Result<Survey> {
        let mut out = Survey::default();
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io("reading", &self.dir, &e)),
        };
        for tli in rd.flatten() {
            let mut numbers: Vec<u64> = Vec::new();
            let mut per_log = 256u64;
            for e in fs::read_dir(tli.path())
                .at("reading", &tli.path())?
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(wal) = name.strip_suffix(".sha256") else {
                    continue;
                };
                if !valid_name(wal) {
                    continue;
                }
                out.files += 1;
                let mtime = e.metadata().and_then(|m| m.modified()).ok();
                if let Some(t) = mtime
                    && out.newest.as_ref().is_none_or(|(_, n)| t > *n)
                {
                    out.newest = Some((wal.to_string(), t));
                }
                if wal.len() == 24 {
                    let log = u64::from_str_radix(&wal[8..16], 16).unwrap_or(0);
                    let seg = u64::from_str_radix(&wal[16..24], 16).unwrap_or(0);
                    if let Ok(Some(side)) = Self::read_sidecar(&e.path())
                        && side.bytes > 0
                    {
                        per_log = (1u64 << 32) / side.bytes;
                    }
                    numbers.push(log * per_log + seg);
                }
            }
            if numbers.is_empty() {
                continue;
            }
            out.timelines += 1;
            out.segments += numbers.len() as u64;
            numbers.sort_unstable();
            numbers.dedup();
            let tli_name = tli.file_name().to_string_lossy().into_owned();
            for w in numbers.windows(2) {
                if w[1] > w[0] + 1 {
                    out.missing += w[1] - w[0] - 1;
                    if out.first_missing.is_none() {
                        let n = w[0] + 1;
                        out.first_missing =
                            Some(format!("{tli_name}{:08X}{:08X}", n / per_log, n % per_log));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Compress (and encrypt) `src` into `tmp`, fsynced: the original's size
/// and sha256, and the stored size.
fn write_stored(
    src: &Path,
    tmp: &Path,
    compression: Compression,
    seal: Option<&Recipients>,
) -> Result<(opskit::crypt::Plaintext, u64)> {
    let f = durable::create_new(tmp, 0o600)?;
    let hw = HashWriter::new(f);
    let sealed = match seal {
        Some(r) => r.seal(hw).at("encrypting into", tmp)?,
        None => Sealer::Open(hw),
    };
    let mut comp = compression.writer(sealed).at("compressing into", tmp)?;
    let mut input = HashRead::new(File::open(src).at("reading", src)?);
    io::copy(&mut input, &mut comp).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::io("reading", src, &e),
        _ => Error::io("writing", tmp, &e),
    })?;
    let orig = input.finish().at("reading", src)?;
    let sealed = comp.finish().at("writing", tmp)?;
    let (hw, _) = sealed.finish().at("writing", tmp)?;
    let (f, stored_bytes, _) = hw.finish();
    durable::sync_file(&f, tmp)?;
    Ok((orig, stored_bytes))
}

/// Remove the temporary files of pushes that were killed (their process
/// is gone); a running push's are left alone.
fn remove_stale_temps(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(".tmp.")) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            log::warn!("removing {}, left by a killed push", e.path().display());
            let _ = fs::remove_file(e.path());
        }
    }
}

/// `dir` and its parents, 0700, each new one's parent fsynced.
fn make_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(p) = dir.parent() {
        make_dirs(p)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("creating", dir, &e)),
    }
    if let Some(p) = dir.parent() {
        durable::fsync_dir(p).at("syncing", p)?;
    }
    Ok(())
}

/// A stored file's name: no path, not hidden.
fn durable_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/')
}

#[allow(clippy::too_many_arguments)]
fn report(
    em: &mut Emitter,
    op: WalOp,
    name: &str,
    stored: &Path,
    bytes: u64,
    sha256: String,
    stored_bytes: u64,
    already: bool,
    start: Instant,
) -> Result<Done<WalCounts>> {
    em.emit(&Wal {
        ok: true,
        op,
        name: name.into(),
        stored: stored.display().to_string(),
        bytes,
        sha256,
        stored_bytes,
        already,
        duration_s: opskit::record::secs(start.elapsed()),
    })?;
    Ok(Done::new(Exit::Ok, WalCounts { files: 1, bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names() {
        for ok in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "00000001000000000000000g",
            "000000010000000000000001.zst",
            "0000000100000000000000001",
            "000000010000000000000001/x",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
