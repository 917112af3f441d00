//! The records of backup sets: pgbackup's `backup`, verify-backup's
//! `verify`, prune's `prune`, and their summaries' counts.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backupset::{FileEntry, FileKind};
use crate::record::{Fields, Record};

/// One file of a set as records show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SetFile {
    pub name: String,
    pub kind: FileKind,
    pub bytes: u64,
    pub sha256: String,
}

impl From<&FileEntry> for SetFile {
    fn from(e: &FileEntry) -> Self {
        SetFile {
            name: e.name.clone(),
            kind: e.kind,
            bytes: e.bytes,
            sha256: e.sha256.clone(),
        }
    }
}

/// `backup`: one per set written, after the set is in place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Backup {
    #[serde(flatten)]
    pub extra: Fields,
    pub ok: bool,
    pub set: String,
    pub path: String,
    pub database: String,
    pub server_version: String,
    pub files: Vec<SetFile>,
    /// Whether the set's files are age-encrypted.
    #[serde(default)]
    pub encrypted: bool,
    pub bytes: u64,
    /// An incremental base set: the set it builds on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `--incremental` took a full set instead, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// The kind of that reason, for scripts and alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_kind: Option<FallbackKind>,
    pub duration_s: f64,
}

/// Why `--incremental` took a full base set. The first two are planned
/// (the chain is due for its full set, or the server cannot take
/// incrementals); the others are a chain that should have continued and
/// could not, which an operator can fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FallbackKind {
    /// The chain's full set is `--full-every` old.
    Scheduled,
    /// A server before PostgreSQL 17 (with `--fallback-full`).
    ServerVersion,
    /// No base set of the series passed verification.
    NoParent,
    /// The parent is of another cluster, lacks its `backup_manifest`, or
    /// an ancestor of it is gone.
    ParentUnusable,
    /// The server is on another timeline than the parent (a promotion).
    Timeline,
    /// `summarize_wal` is off.
    SummarizeWalOff,
    /// The server's WAL summaries do not cover the changes since the
    /// parent (`wal_summary_keep_time`, or summaries removed).
    SummariesGone,
}

impl FallbackKind {
    /// A full set that was planned, not a chain that broke.
    pub fn planned(self) -> bool {
        matches!(self, FallbackKind::Scheduled | FallbackKind::ServerVersion)
    }
}

impl Record for Backup {
    const EVENT: &'static str = "backup";
}

/// pgbackup's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackupCounts {
    pub sets: u64,
    pub failed: u64,
    pub bytes: u64,
}

/// How deep verify-backup looked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Depth {
    Quick,
    Structural,
    Restore,
}

impl Depth {
    pub fn as_str(self) -> &'static str {
        match self {
            Depth::Quick => "quick",
            Depth::Structural => "structural",
            Depth::Restore => "restore",
        }
    }
}

/// The checks verify-backup runs on a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SetCheckName {
    /// `MANIFEST.json.minisig`: the manifest signed by a trusted key, for
    /// this set (checked before anything else in the set is trusted).
    Signature,
    Manifest,
    Permissions,
    Unlisted,
    Sums,
    Exists,
    Size,
    Sha256,
    Gzip,
    Zstd,
    Read,
    Tar,
    Toc,
    Complete,
    /// An encrypted file's age header has one recipient stanza per key the
    /// manifest lists (no key needed).
    AgeHeader,
    /// An encrypted file decrypted with the identity: every chunk
    /// authenticated, the plaintext's sha256 as the manifest records it.
    Decrypt,
    /// `contents.json.age` decrypts and parses.
    Contents,
    /// A base set's tar holds every file its `backup_manifest` lists, at
    /// the listed size, and a `backup_label`.
    BackupManifest,
    /// `pg_verifybackup` passed the unpacked base set (checksums, WAL).
    Verifybackup,
    /// An incremental base set's ancestors are all in the root, signed,
    /// the ones it records, in WAL order on one timeline, none failed.
    Chain,
    /// The WAL archive beside a base set holds every segment from its start
    /// to the newest archived one (timelines followed).
    Wal,
    /// A scratch cluster started from a base set replayed WAL to a
    /// consistent point and was promoted.
    Replay,
    Restore,
    TablesReadable,
    RowCounts,
    /// `--globals`: the set's roles restored on the server first.
    Globals,
    /// `--files-into`: a files archive unpacked (no owners, no setuid or
    /// setgid bits, no devices, nothing outside the directory).
    Unpack,
}

/// The outcome of one check of a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SetCheck {
    pub name: SetCheckName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub ok: bool,
    pub detail: String,
}

impl SetCheck {
    pub fn pass(name: SetCheckName, file: Option<&str>, detail: impl Into<String>) -> Self {
        SetCheck {
            name,
            file: file.map(str::to_string),
            ok: true,
            detail: detail.into(),
        }
    }
    pub fn fail(name: SetCheckName, file: Option<&str>, detail: impl Into<String>) -> Self {
        SetCheck {
            ok: false,
            ..Self::pass(name, file, detail)
        }
    }
    /// `sha256 db.dump.gz`: the check and its file, for messages.
    pub fn label(&self) -> String {
        let n = serde_json::to_value(self.name)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match &self.file {
            Some(f) => format!("{n} {f}"),
            None => n,
        }
    }
}

/// `verify`: one per set verified. On stdin input, the incoming record's
/// fields that verify does not own are passed through in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Verify {
    #[serde(flatten)]
    pub extra: Fields,
    pub ok: bool,
    pub set: String,
    pub path: String,
    pub depth: Depth,
    pub failed_checks: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_s: Option<f64>,
    pub checks: Vec<SetCheck>,
    pub duration_s: f64,
}

impl Record for Verify {
    const EVENT: &'static str = "verify";
}

/// What kind of set.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum SetKind {
    /// A dump of one database (what restore-system.sh restores).
    Dump,
    /// A base set of the whole cluster (pgbackup --physical).
    Base,
}

/// `newest_verified`: the set a restore takes (`verify-backup
/// --newest-verified ROOT`): the newest set of its kind whose latest
/// verification passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NewestVerified {
    pub set: String,
    pub path: String,
    pub kind: SetKind,
    pub created_at: DateTime<Utc>,
    /// The deepest verification it passed since it last failed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<Depth>,
    /// When its latest verification was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at: Option<DateTime<Utc>>,
}

impl Record for NewestVerified {
    const EVENT: &'static str = "newest_verified";
}

/// verify-backup's summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyCounts {
    pub sets: u64,
    pub passed: u64,
    pub failed: u64,
    /// Unreadable input lines and upstream failures.
    pub errors: u64,
    pub depth: Depth,
}

/// What prune does with an entry of the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PruneAction {
    Keep,
    Delete,
    /// Failed verification; kept unless `--delete-corrupt`.
    Corrupt,
    /// Not a candidate.
    Ignored,
    /// An interrupted run's temporary directory.
    Leftover,
}

/// `prune`: one per entry of the backup root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Prune {
    pub path: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    pub action: PruneAction,
    /// The rules that kept it (absent for leftovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasons: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// The deepest verification it passed: `quick` is checksums only (an
    /// encrypted set verified without its identity), `structural` and
    /// `restore` are verified in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_depth: Option<Depth>,
    /// Bytes freed by deleting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// For `delete`/`leftover`: whether it was actually removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// Why a deletion failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record for Prune {
    const EVENT: &'static str = "prune";
}

/// prune's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PruneCounts {
    pub kept: u64,
    pub deleted: u64,
    pub corrupt: u64,
    pub ignored: u64,
    pub leftovers_removed: u64,
    pub bytes_freed: u64,
    pub dry_run: bool,
    /// Why nothing was deleted (dry run, an upstream failure, unreadable
    /// verification records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<u64>,
}

/// The summary a procedure writes for a step it did not run
/// (`backup-system.sh`'s prune after a failed night).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Skipped {
    pub skipped: bool,
}
