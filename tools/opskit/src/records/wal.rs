//! The records of `walarchive`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// What walarchive did with a WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WalOp {
    Push,
    Fetch,
}

/// `wal`: one per WAL file archived (`push`) or handed back (`fetch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Wal {
    pub ok: bool,
    pub op: WalOp,
    /// The WAL file's name (`%f`).
    pub name: String,
    /// The archived file in the backup root.
    pub stored: String,
    /// The WAL file's size and sha256.
    pub bytes: u64,
    pub sha256: String,
    /// The archived file's size (compressed, encrypted).
    pub stored_bytes: u64,
    /// push: it was archived before with the same content (PostgreSQL
    /// archives again after a crash); nothing was written.
    pub already: bool,
    pub duration_s: f64,
}

impl Record for Wal {
    const EVENT: &'static str = "wal";
}

/// `recovery`: `walarchive restore` prepared a data directory to recover
/// to a point in time from a base set and the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Recovery {
    pub ok: bool,
    /// The base set it starts from, and when that backup ended.
    pub set: String,
    pub base_finished_at: chrono::DateTime<chrono::Utc>,
    /// The data directory written.
    pub pgdata: String,
    /// `time` (with `target_time`), `latest` (all archived WAL) or
    /// `immediate` (the base set's own consistent point).
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_time: Option<chrono::DateTime<chrono::Utc>>,
    /// The role to connect as when checking the recovered cluster.
    pub superuser: String,
    /// `pg_ctl -o` text that starts the recovered cluster with every
    /// setting that runs a command, loads a library or connects out forced
    /// to opskit's value (the set's own configuration is not trusted); add
    /// the port and socket directory.
    pub start_options: String,
    /// The same settings, by name.
    pub overrides: std::collections::BTreeMap<String, String>,
    /// What every connection to it sends at its start (PGOPTIONS), so
    /// that the set's per-role settings (`search_path`, preloaded
    /// libraries) and login event triggers do not apply.
    pub session_options: String,
    /// Files in the base set's tar.
    pub files: u64,
    pub duration_s: f64,
}

impl Record for Recovery {
    const EVENT: &'static str = "recovery";
}

/// `control_settings`: `walarchive control-settings`, the settings a
/// cluster recovering in a data directory needs at least the primary's
/// values of, as its control file has them (`pg_controldata`): the
/// recovery writes each change it replays there. restore-pitr.sh restarts
/// a copy that paused or stopped for them with these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ControlSettings {
    /// The data directory read.
    pub pgdata: String,
    /// max_connections and four more, by name.
    pub settings: std::collections::BTreeMap<String, u64>,
    /// The same as `-c name=value` options for `pg_ctl -o`.
    pub options: String,
}

impl Record for ControlSettings {
    const EVENT: &'static str = "control_settings";
}

/// `window`: `walarchive window`, the points in time one place (the
/// backup root, or the bucket) recovers to (`opskit::window`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RecoveryWindow {
    /// `local` (a backup root) or `remote` (a bucket).
    pub location: String,
    /// The root's path or the bucket's URL.
    pub at: String,
    /// Point-in-time recovery: continuous ranges, oldest first.
    pub pitr: Vec<WindowRange>,
    /// Verified base sets with their whole chain, which start the ranges.
    pub base_sets: u64,
    /// Base sets left out: never verified, failed, or missing a parent.
    pub bases_unusable: u64,
    /// Dump sets: each is a point.
    pub dump_sets: u64,
    pub dumps_verified: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_oldest: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_newest: Option<chrono::DateTime<chrono::Utc>>,
    /// The oldest and newest point anything here recovers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
}

/// One continuous point-in-time range of a [`RecoveryWindow`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WindowRange {
    /// The end of its oldest base set: the earliest time it recovers to.
    pub from: chrono::DateTime<chrono::Utc>,
    /// Its last archived transaction's commit time (null: not recorded).
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Where that transaction's record starts in the WAL.
    pub to_lsn: Option<String>,
    pub timeline: u32,
    /// How many base sets start inside it, and the oldest of them.
    pub base_sets: u64,
    pub first_base: String,
    /// The last segment archived with none missing before it.
    pub newest_segment: Option<String>,
}

impl Record for RecoveryWindow {
    const EVENT: &'static str = "window";
}

/// `pitr`: written by `restore-pitr.sh` (`restore-system.sh --to`) once
/// the recovered cluster is up: where it stopped, and where to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pitr {
    pub ok: bool,
    /// The target time asked, or `latest`.
    pub target: String,
    /// From the start of `walarchive restore` to the promoted cluster.
    pub recovered_in_s: f64,
    /// `pg_last_xact_replay_timestamp()` of the recovered cluster, or `none`.
    pub last_transaction_replayed: String,
    /// PostgreSQL's own "recovery stopping before/after …" line, if any.
    pub stop: String,
    /// The recovered data directory.
    pub pgdata: String,
    /// The socket directory and port it listens on (no TCP).
    pub socket: String,
    pub port: u16,
}

impl Record for Pitr {
    const EVENT: &'static str = "pitr";
}

/// walarchive's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WalCounts {
    pub files: u64,
    pub bytes: u64,
}
