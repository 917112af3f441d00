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
    /// Files in the base set's tar.
    pub files: u64,
    pub duration_s: f64,
}

impl Record for Recovery {
    const EVENT: &'static str = "recovery";
}

/// walarchive's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WalCounts {
    pub files: u64,
    pub bytes: u64,
}
