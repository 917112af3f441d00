//! The end of every set: its manifest and SHA256SUMS written and fsynced,
//! the staging directory renamed into place, the `backup` record.

use std::path::Path;
use std::time::Instant;

use chrono::{SubsecRound, Utc};
use opskit::backupset::{self, DatabaseInfo, Encryption, FileEntry, Manifest, PhysicalInfo};
use opskit::durable::{self, StagingDir};
use opskit::record::Fields;
use opskit::records::{Backup, BackupCounts, FallbackKind, SetFile};
use opskit::sign::SigningKey;
use opskit::{Done, Emitter, Error, Exit, IoContext, Result, units};

use crate::sink::Encoding;

/// A set being made: its staging directory, name and start.
pub(crate) struct NewSet<'a> {
    pub stage: StagingDir,
    pub name: String,
    pub started_at: chrono::DateTime<Utc>,
    pub start: Instant,
    /// Signs the manifest (`MANIFEST.json.minisig`).
    pub signer: Option<&'a SigningKey>,
    /// Why a full base set was taken where an incremental was asked for.
    pub fallback: Option<(FallbackKind, String)>,
}

impl NewSet<'_> {
    /// Write the manifest and SHA256SUMS, rename the set into place, report.
    pub fn finish(
        self,
        database: Option<DatabaseInfo>,
        physical: Option<PhysicalInfo>,
        enc: &Encoding,
        files: Vec<FileEntry>,
        em: &mut Emitter,
    ) -> Result<Done<BackupCounts>> {
        let manifest = Manifest {
            format: backupset::FORMAT.into(),
            set: crate::file_name(self.stage.dest()),
            name: self.name,
            tool: "pgbackup".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started_at: self.started_at,
            finished_at: Utc::now().trunc_subsecs(3),
            duration_s: opskit::record::secs(self.start.elapsed()),
            database,
            physical,
            encryption: encryption(enc),
            files,
        };
        write_manifest(self.stage.path(), &manifest, self.signer)?;
        let set_path = self.stage.commit()?;
        report(em, &manifest, &set_path, self.start, self.fallback)
    }
}

fn encryption(enc: &Encoding) -> Option<Encryption> {
    enc.seal.as_ref().map(|r| Encryption {
        scheme: opskit::crypt::SCHEME.into(),
        recipients: r.strings(),
    })
}

/// The `backup` record, and the counts for the summary.
fn report(
    em: &mut Emitter,
    m: &Manifest,
    set_path: &Path,
    start: Instant,
    fallback: Option<(FallbackKind, String)>,
) -> Result<Done<BackupCounts>> {
    let total: u64 = m.files.iter().map(|e| e.bytes).sum();
    let duration_s = opskit::record::secs(start.elapsed());
    log::info!(
        "wrote {} ({}) in {duration_s:.1}s",
        set_path.display(),
        units::format_size(total)
    );
    let db = m.database.as_ref();
    let version = db
        .map(|d| d.server_version.clone())
        .or_else(|| m.physical.as_ref().map(|p| p.server_version.clone()));
    em.emit(&Backup {
        extra: Fields::new(),
        ok: true,
        set: m.set.clone(),
        path: set_path.display().to_string(),
        database: db.map(|d| d.name.clone()).unwrap_or_default(),
        server_version: version.unwrap_or_default(),
        files: m.files.iter().map(SetFile::from).collect(),
        encrypted: m.encryption.is_some(),
        bytes: total,
        parent: m
            .physical
            .as_ref()
            .and_then(|p| p.parent())
            .map(str::to_string),
        fallback_kind: fallback.as_ref().map(|f| f.0),
        fallback: fallback.map(|f| f.1),
        duration_s,
    })?;
    Ok(Done::new(
        Exit::Ok,
        BackupCounts {
            sets: 1,
            failed: 0,
            bytes: total,
        },
    ))
}

/// `MANIFEST.json`, its signature, then `SHA256SUMS` (which also covers
/// the manifest), each 0600 and fsynced.
fn write_manifest(dir: &Path, m: &Manifest, signer: Option<&SigningKey>) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(m).map_err(|e| Error::failure(format!("manifest: {e}")))?;
    text.push('\n');
    let mpath = dir.join(backupset::MANIFEST);
    write_synced(&mpath, text.as_bytes())?;
    if let Some(key) = signer {
        // Base sets are signed as such: readers trust the database server
        // user's key for them and for WAL, another key for dumps.
        let comment = match m.physical {
            Some(_) => opskit::sign::base_comment(&m.set),
            None => opskit::sign::set_comment(&m.set),
        };
        let sig = key.sign(text.as_bytes(), &comment)?;
        write_synced(&dir.join(opskit::sign::SET_SIGNATURE), sig.as_bytes())?;
    }
    let sums = backupset::expected_sums(m, &opskit::gz::sha256_hex(text.as_bytes()));
    write_synced(&dir.join(backupset::SUMS), sums.as_bytes())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = durable::create_new(path, 0o600)?;
    f.write_all(bytes).at("writing", path)?;
    durable::sync_file(&f, path)
}
