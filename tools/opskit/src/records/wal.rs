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

/// walarchive's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WalCounts {
    pub files: u64,
    pub bytes: u64,
}
