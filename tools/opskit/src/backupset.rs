//! Backup sets: the directory layout and `MANIFEST.json` that pgbackup
//! writes and verify-backup, prune and healthcheck read.
//!
//! A set is `<root>/<name>-<UTC YYYYmmddTHHMMSSZ>/` holding its files, a
//! `MANIFEST.json` and a `SHA256SUMS`. A directory without a manifest is not
//! a set.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod trusted;
pub use trusted::*;

pub const MANIFEST: &str = "MANIFEST.json";
/// The lock a backup root's writers (pgbackup, prune) take.
pub const LOCK_FILE: &str = ".opskit.lock";
pub const SUMS: &str = "SHA256SUMS";
/// verify-backup's result log in a backup root (prune and healthcheck read it).
pub const VERIFIED_LOG: &str = "verified.ndjson";
/// The manifest format this version writes.
pub const FORMAT: &str = "opskit-set/1";
/// The timestamp in a set's directory name.
pub const TS_FORMAT: &str = "%Y%m%dT%H%M%SZ";
/// The largest manifest read (a manifest is a few KiB; refuse anything absurd).
pub const MAX_MANIFEST: u64 = 16 << 20;

/// What a file in a set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// The database dump.
    Database,
    /// Roles and tablespaces (`pg_dumpall --globals-only`).
    Globals,
    /// A tar archive of a directory.
    Files,
    /// What an encrypted set keeps from inside the database (table names,
    /// row counts): `contents.json.age`, [`SealedContents`].
    Contents,
    /// A whole cluster's data directory as `pg_basebackup` writes it to a
    /// tar stream: its `backup_manifest` and the WAL from the backup's
    /// start to its end inside (`base.tar.zst`).
    Base,
    /// A base set's `backup_manifest` (the one inside its tar), kept plain
    /// beside it: what the next incremental set is taken against
    /// (`pg_basebackup --incremental`) without decrypting anything. It
    /// lists the data directory's file names, sizes and CRC-32C checksums
    /// and the WAL range, no row of data.
    BackupManifest,
}

/// How a file of a set is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    Gzip,
    Zstd,
}

impl Codec {
    /// The file name extension, with its dot.
    pub fn ext(self) -> &'static str {
        match self {
            Codec::Gzip => ".gz",
            Codec::Zstd => ".zst",
        }
    }

    /// The codec a file name says (`.gz`, `.zst`, before any `.age`;
    /// `.tgz`-style names are not made by opskit).
    pub fn of_name(name: &str) -> Option<Codec> {
        let name = name.strip_suffix(crate::crypt::EXT).unwrap_or(name);
        if name.ends_with(".gz") {
            Some(Codec::Gzip)
        } else if name.ends_with(".zst") {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// The stock command that writes the decompressed file to stdout.
    pub fn cat_command(self) -> &'static str {
        match self {
            Codec::Gzip => "gunzip -c",
            Codec::Zstd => "zstd -dc",
        }
    }
}

/// One file of a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub kind: FileKind,
    pub bytes: u64,
    pub sha256: String,
    /// Absent for an uncompressed file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Codec>,
    /// Size before compression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_bytes: Option<u64>,
    /// The directory a `files` archive was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Entries in a `files` archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Paths left out of a `files` archive, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// For an encrypted file: the size and sha256 of what decrypting it
    /// gives (`age -d FILE | sha256sum`), so a decrypting read proves the
    /// content and not only the ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plaintext_sha256: Option<String>,
}

impl FileEntry {
    /// Whether the file is age-encrypted.
    pub fn encrypted(&self) -> bool {
        self.plaintext_sha256.is_some()
    }
}

/// How a set is encrypted: the scheme and the public keys (recipients) its
/// files are encrypted to. The identities are not on the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Encryption {
    /// `age`.
    pub scheme: String,
    /// `age1…` X25519 public keys.
    pub recipients: Vec<String>,
}

/// `contents.json.age`: the part of an encrypted set's description that
/// comes from inside the database, readable only with the identity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SealedContents {
    /// Exact per-table row counts in the dump's snapshot (`schema.table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<BTreeMap<String, u64>>,
    /// 256 random bits, so that the readable manifest's `plaintext_sha256`
    /// of this small file is no oracle: without them, hashing guessed
    /// table names and counts would confirm them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The file name of [`SealedContents`] in an encrypted set.
pub const CONTENTS: &str = "contents.json.age";

/// The format of a database dump.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    /// pg_dump's custom format, restored with pg_restore.
    Custom,
    /// Plain SQL, restored with psql.
    Plain,
}

/// The database part of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    pub name: String,
    /// Where it was dumped from, redacted (`host:port` or socket).
    pub server: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_dump_version: String,
    pub format: DumpFormat,
    /// The set file holding the dump.
    pub file: String,
    /// A one-line restore with stock tools; `$TARGET_DB` is the database
    /// (name or URL) to restore into, created beforehand, and for an
    /// encrypted set `$AGE_IDENTITY` the identity file.
    pub restore_command: String,
    /// Exact per-table row counts in the dump's snapshot (`schema.table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<BTreeMap<String, u64>>,
}

/// The physical part of a base set's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhysicalInfo {
    /// Where it was copied from, redacted (`host:port` or socket).
    pub server: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_basebackup_version: String,
    /// `pg_control_system()`'s: WAL from another cluster does not apply.
    pub system_identifier: String,
    /// The bootstrap superuser (the role with OID 10): a restored copy is
    /// checked as it.
    #[serde(default)]
    pub superuser: String,
    pub timeline: u32,
    /// The WAL location the backup starts at (replay begins there) and
    /// the one it must replay to before it is consistent.
    pub start_lsn: String,
    pub end_lsn: String,
    /// The WAL segment holding `start_lsn`: every archived segment from
    /// it on is needed to recover from this set to a later time.
    pub start_wal: String,
    pub wal_segment_size: u64,
    /// The set file holding the tar (`base.tar.zst[.age]`).
    pub file: String,
    /// The server's `archive_mode` when the set was taken (`on`, `always`
    /// or `off`): whether its WAL was being archived. Sets made before it
    /// was recorded lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_mode: Option<String>,
    /// What the set was read from: `primary`, or a `standby` (in recovery
    /// when it was taken; its WAL is the primary's). Older sets lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An incremental set (`pgbackup --physical --incremental`, PostgreSQL
    /// 17+): its parent and the chain back to a full set. Restoring it
    /// needs every set of the chain (`pg_combinebackup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
}

/// Where an incremental set sits in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    /// The set it holds the changes since (a set directory's name, in the
    /// same root).
    pub parent: String,
    /// Every ancestor, the full set first and the parent last.
    pub chain: Vec<ChainLink>,
}

/// One ancestor of an incremental set, as its own manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub set: String,
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
}

impl PhysicalInfo {
    /// This set as a link of its children's chains.
    pub fn link(&self, set: &str) -> ChainLink {
        ChainLink {
            set: set.to_string(),
            timeline: self.timeline,
            start_lsn: self.start_lsn.clone(),
            end_lsn: self.end_lsn.clone(),
        }
    }

    /// The set it depends on, if incremental.
    pub fn parent(&self) -> Option<&str> {
        self.incremental.as_ref().map(|i| i.parent.as_str())
    }
}

/// `MANIFEST.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub set: String,
    pub name: String,
    pub tool: String,
    pub tool_version: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseInfo>,
    /// A base set (`pgbackup --physical`): the cluster, and where in its
    /// WAL the backup starts and ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical: Option<PhysicalInfo>,
    /// Present when the set's files are encrypted; then `database` holds no
    /// row counts (they are in `contents.json.age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    /// The bytes of every file the set lists (saturating: a forged size
    /// cannot wrap the sum).
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.bytes)
            .fold(0, u64::saturating_add)
    }

    /// Whether the set is of `kind`: a dump holds a database dump (what
    /// restore-system.sh restores), a base set a base backup.
    pub fn is_of(&self, kind: crate::records::SetKind) -> bool {
        match kind {
            crate::records::SetKind::Dump => self.database.is_some(),
            crate::records::SetKind::Base => self.physical.is_some(),
        }
    }
}

/// Whether `name` is usable as a set name prefix: `[A-Za-z0-9._-]`, not
/// starting with a dot, at most 100 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `raw` made usable as a name: characters outside `[A-Za-z0-9._-]`
/// become `_`, leading dots go, and an empty result is `fallback`.
pub fn sanitize_name(raw: &str, fallback: &str) -> String {
    let s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        fallback.to_string()
    } else {
        s.to_string()
    }
}

/// `<name>-<UTC timestamp>`.
pub fn set_dir_name(name: &str, at: DateTime<Utc>) -> String {
    format!("{name}-{}", at.format(TS_FORMAT))
}

/// Split a set directory name into its name and time.
pub fn parse_set_dir_name(dir: &str) -> Option<(&str, DateTime<Utc>)> {
    let (name, ts) = dir.rsplit_once('-')?;
    let t = NaiveDateTime::parse_from_str(ts, TS_FORMAT).ok()?;
    valid_name(name).then(|| (name, t.and_utc()))
}

/// Whether a set's time (from its name) is later than any clock we trust
/// could have made it: more than a day ahead of `now`. Such a set would be
/// "the newest" for ever; a name is easy to forge, so it is never taken
/// for a restore point.
pub fn dated_ahead(t: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    t > now + chrono::Duration::days(1)
}

/// Whether a file name inside a set is safe to open: a plain name, no
/// directories, no `..`, not absolute, not hidden.
pub fn safe_member_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\0')
        && name != MANIFEST
        && name != SUMS
        && name != crate::sign::SET_SIGNATURE
}

/// Parse a manifest's bytes (`origin` names it in errors), refusing
/// anything that would make a reader open a path outside the set: every
/// file name, the dump's and the base tar's included.
pub fn parse_manifest(text: &[u8], origin: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(text)
        .map_err(|e| Error::check(format!("{origin}: not a valid manifest: {e}")))?;
    if !m.format.starts_with("opskit-set/") {
        return Err(Error::check(format!(
            "{origin}: unknown manifest format '{}'",
            m.format
        )));
    }
    let named = m
        .files
        .iter()
        .map(|f| &f.name)
        .chain(m.database.as_ref().map(|d| &d.file))
        .chain(m.physical.as_ref().map(|p| &p.file));
    for name in named {
        if !safe_member_name(name) {
            return Err(Error::check(format!(
                "{origin}: lists unsafe file name {name:?} (outside the set); refused"
            )));
        }
    }
    for (what, file) in [
        ("database.file", m.database.as_ref().map(|d| &d.file)),
        ("physical.file", m.physical.as_ref().map(|p| &p.file)),
    ] {
        if let Some(file) = file
            && !m.files.iter().any(|f| &f.name == file)
        {
            return Err(Error::check(format!(
                "{origin}: {what} {file:?} is not one of the set's files; refused"
            )));
        }
    }
    Ok(m)
}

/// The bytes of a set's `MANIFEST.json`: a regular file (no symlink, no
/// FIFO), at most [`MAX_MANIFEST`].
pub fn read_manifest_bytes(set: &Path) -> Result<Vec<u8>> {
    let path = set.join(MANIFEST);
    let (f, meta) = crate::safefs::open_nofollow_meta(&path, fs::OpenOptions::new().read(true))
        .map_err(|e| Error::check(e.msg))?;
    if meta.len() > MAX_MANIFEST {
        return Err(Error::check(format!(
            "{} is {} bytes, larger than any manifest pgbackup writes",
            path.display(),
            meta.len()
        )));
    }
    crate::safefs::read_bounded_sized(f, &path, MAX_MANIFEST, meta.len())
        .map_err(|e| Error::check(e.msg))
}

/// Read and parse a set's manifest ([`parse_manifest`]). Also returns the
/// sha256 of the manifest's bytes (SHA256SUMS records it), from the same
/// read. The signature is not checked: see [`load_trusted`].
pub fn read_manifest(set: &Path) -> Result<(Manifest, String)> {
    let text = read_manifest_bytes(set)?;
    let m = parse_manifest(&text, &set.join(MANIFEST).display().to_string())?;
    Ok((m, crate::gz::sha256_hex(&text)))
}

/// What a set's `SHA256SUMS` lists: every file of the manifest with its
/// sha256, then `MANIFEST.json` with `manifest_sha` (the sha256 of its bytes).
pub fn expected_sums_entries(m: &Manifest, manifest_sha: &str) -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = m
        .files
        .iter()
        .map(|f| (f.name.clone(), f.sha256.clone()))
        .collect();
    want.push((MANIFEST.into(), manifest_sha.into()));
    want
}

/// The `SHA256SUMS` text a set with manifest `m` has: what pgbackup writes,
/// and what verify-backup and offsite compare with.
pub fn expected_sums(m: &Manifest, manifest_sha: &str) -> String {
    sums_text(&expected_sums_entries(m, manifest_sha))
}

/// The `SHA256SUMS` text for a manifest's files (`sha256sum -c` format).
pub fn sums_text(entries: &[(String, String)]) -> String {
    entries
        .iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn set_names_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 5).unwrap();
        let d = set_dir_name("app-prod", t);
        assert_eq!(d, "app-prod-20261123T030005Z");
        assert_eq!(parse_set_dir_name(&d), Some(("app-prod", t)));
        assert_eq!(parse_set_dir_name("app-2026"), None);
        assert_eq!(parse_set_dir_name(".app-20261123T030005Z"), None);
        assert_eq!(parse_set_dir_name("lost+found"), None);
    }

    #[test]
    fn names() {
        assert!(valid_name("app_db.prod-1"));
        for bad in ["", ".hidden", "a/b", "a b", "é"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn member_names_cannot_escape() {
        assert!(safe_member_name("db.dump.gz"));
        for bad in ["../x", "/etc/passwd", "a/b", "", ".hidden", "MANIFEST.json"] {
            assert!(!safe_member_name(bad), "{bad}");
        }
    }

    #[test]
    fn manifest_with_escaping_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let m = serde_json::json!({
            "format": FORMAT, "set": "a-20261123T030005Z", "name": "a", "tool": "pgbackup",
            "tool_version": "0", "started_at": "2026-11-23T03:00:05Z",
            "finished_at": "2026-11-23T03:00:06Z", "duration_s": 1.0,
            "files": [{"name": "../x", "kind": "files", "bytes": 1, "sha256": "00"}]
        });
        fs::write(d.path().join(MANIFEST), m.to_string()).unwrap();
        let e = read_manifest(d.path()).unwrap_err();
        assert!(e.msg.contains("unsafe file name"), "{}", e.msg);
        fs::write(d.path().join(MANIFEST), "{not json").unwrap();
        let e = read_manifest(d.path()).unwrap_err();
        assert!(e.msg.contains("not a valid manifest"), "{}", e.msg);
        assert_eq!(e.exit, crate::Exit::CheckFailed);
    }

    #[test]
    fn sums_format() {
        let s = sums_text(&[("a".into(), "00ff".into())]);
        assert_eq!(s, "00ff  a\n");
    }
}
