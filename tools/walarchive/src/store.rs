//! `walarchive push` and `fetch` on the archive: `ROOT/wal/<timeline>/`
//! `<name>.zst[.age]` and its `<name>.sha256` (the original's sha256, size
//! and the stored file's name), written last. The layout is
//! `opskit::walstore`'s.

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
use opskit::sidecar::{LastXact, Sidecar};
use opskit::sign::{SigningKey, Trust};
use opskit::walstore;
use opskit::{Done, Emitter, Error, Exit, IoContext, Result};

pub struct Archive {
    root: PathBuf,
}

/// How `push` stores a file.
pub struct Push<'a> {
    pub compression: Compression,
    /// Encrypt to these (None: plaintext, allowed by the caller).
    pub seal: Option<&'a Recipients>,
    /// Sign the checksum file.
    pub key: Option<&'a SigningKey>,
}

impl Archive {
    pub fn new(root: &Path) -> Archive {
        Archive {
            root: root.to_path_buf(),
        }
    }

    /// The timeline directory of WAL file `name`, which must be a WAL
    /// file name.
    fn tli_dir(&self, name: &str) -> Result<PathBuf> {
        walstore::timeline_dir(&self.root, name).ok_or_else(|| {
            Error::usage(format!(
                "'{name}' is not a WAL file name (a segment, NNNNNNNN.history or a .backup label)"
            ))
        })
    }

    /// Archive `src` as `name`, signing its checksum with `key`.
    pub fn push(
        &self,
        src: &Path,
        name: &str,
        how: &Push,
        em: &mut Emitter,
    ) -> Result<Done<WalCounts>> {
        let start = Instant::now();
        let dir = self.tli_dir(name)?;
        make_dirs(&dir)?;
        // The loser of two pushes of one name waits, then compares.
        let _lock = walstore::lock_timeline(&dir)?;
        walstore::remove_stale_temps(&dir);
        let side = dir.join(walstore::sidecar_name(name));
        if let Some(have) = Sidecar::read(&side)? {
            let got = same_content(src, name, &dir, &have)?;
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
        let (compression, seal) = (how.compression, how.seal);
        let stored_name = walstore::stored_name(name, compression, seal.is_some());
        let stored = dir.join(&stored_name);
        let tmp = dir.join(walstore::temp_name(&stored_name));
        // One core: the archiver runs beside the database it archives.
        let compression = Compression {
            threads: 1,
            ..compression
        };
        // A segment's last transaction (the recovery window's newest
        // point), read by pg_waldump while the segment is compressed.
        let xact = (walstore::segment_of(name, walstore::DEFAULT_SEGMENT_SIZE).is_some()
            && src.file_name().is_some_and(|f| f == name))
        .then(|| opskit::waldump::spawn(src.to_path_buf()));
        let written = write_stored(src, &tmp, compression, seal);
        let (orig, stored_bytes) = match written {
            Ok(w) => w,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        fs::rename(&tmp, &stored).at("renaming into place", &stored)?;
        let xact = xact
            .map(|h| h.join().unwrap_or(LastXact::Unread))
            .unwrap_or(LastXact::Unread);
        let line = Sidecar {
            sha256: orig.sha256.clone(),
            bytes: orig.bytes,
            stored: stored_name.clone(),
            xact,
            signature: None,
        }
        .render(name, how.key)?;
        write_sidecar(&dir, name, &line)?;
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

    /// Hand `name` back at `dest`, its checksum's signature checked with
    /// `trust` and what it hands back checked against that checksum.
    pub fn fetch(
        &self,
        name: &str,
        dest: &Path,
        ids: Option<&Identities>,
        trust: &Trust,
        em: &mut Emitter,
    ) -> Result<Done<WalCounts>> {
        let start = Instant::now();
        let dir = self.tli_dir(name)?;
        let side = dir.join(walstore::sidecar_name(name));
        let Some(have) = Sidecar::read(&side)? else {
            let archive = walstore::dir(&self.root);
            log::info!("{name} is not in the archive {}", archive.display());
            return Ok(Done::new(Exit::CheckFailed, WalCounts::default()));
        };
        have.check(name, trust)
            .map_err(|e| Error::failure(format!("{}: {e}; not handed back", side.display())))?;
        let stored = dir.join(&have.stored);
        let file = opskit::safefs::open_nofollow(&stored, fs::OpenOptions::new().read(true))?;
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
            // Stop one byte past the archived size: a forged file must not fill pg_wal.
            io::copy(&mut (&mut src).take(have.bytes.saturating_add(1)), &mut out)
                .map_err(|e| Error::failure(format!("{}: {e}", stored.display())))?;
            let (f, bytes, sha) = out.finish();
            if bytes > have.bytes {
                let (s, b) = (stored.display(), have.bytes);
                let msg = format!("{s} is damaged: it gives more than the {b} bytes archived");
                return Err(Error::failure(msg));
            }
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
        let sha = copied.inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })?;
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

/// Refuse to archive in plaintext into a root whose newest set is
/// encrypted: the WAL holds every row written since, and would lie beside
/// the encrypted sets unencrypted.
pub fn refuse_plaintext(root: &Path) -> Result<()> {
    // A root that does not exist yet holds no sets.
    let Some(newest) = opskit::root::sets(root).ok().and_then(|mut s| s.pop()) else {
        return Ok(());
    };
    let set = &newest.name;
    match newest.manifest() {
        Ok(m) if m.encryption.is_some() => Err(Error::usage(format!(
            "{} holds encrypted sets ({set}): refusing to archive WAL there in plaintext; give the recipients (--encrypt-to-file FILE in archive_command, or OPSKIT_AGE_RECIPIENTS_FILE) or --allow-unencrypted",
            root.display()
        ))),
        _ => Ok(()),
    }
}

/// The original's sha256 and size when `src` is what `have` archived
/// under `name` in `dir`; a failure naming both when not.
fn same_content(
    src: &Path,
    name: &str,
    dir: &Path,
    have: &Sidecar,
) -> Result<opskit::crypt::Plaintext> {
    let f = File::open(src).at("reading", src)?;
    let got = HashRead::new(f).finish().at("reading", src)?;
    if got.sha256 == have.sha256 && got.bytes == have.bytes {
        return Ok(got);
    }
    Err(Error::failure(format!(
        "{name} is already archived with other content ({}: sha256 {}, {} bytes; {}: sha256 {}, {} bytes); not overwritten",
        dir.join(&have.stored).display(),
        have.sha256,
        have.bytes,
        src.display(),
        got.sha256,
        got.bytes
    )))
}

/// Write the checksum file of `name` in `dir` (under its temporary name,
/// fsynced, renamed into place, the directory fsynced): it is archived.
fn write_sidecar(dir: &Path, name: &str, text: &str) -> Result<()> {
    let side = dir.join(walstore::sidecar_name(name));
    let tmp = dir.join(walstore::temp_name(&walstore::sidecar_name(name)));
    let mut f = durable::create_new(&tmp, 0o600)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).at("writing", &tmp)?;
    durable::sync_file(&f, &tmp)?;
    fs::rename(&tmp, &side).at("renaming into place", &side)?;
    durable::fsync_dir(dir).at("syncing", dir)
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
