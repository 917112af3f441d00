//! The records of `offsite`: `push`, `remote_set` (list), `pull`,
//! `remote_verify`, and their summary's counts. Its `prune` records are
//! prune's own type.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::record::{Fields, Record};

/// `push`: one per set offered to `offsite push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Push {
    #[serde(flatten)]
    pub extra: Fields,
    pub ok: bool,
    pub set: String,
    /// The local set.
    pub path: String,
    /// `s3://bucket/prefix/set/`.
    pub url: String,
    pub encrypted: bool,
    /// Objects uploaded by this run.
    pub uploaded: u64,
    /// Objects already there with the same content.
    pub skipped: u64,
    /// Bytes uploaded by this run.
    pub bytes: u64,
    /// Why the set was not pushed, or not completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_s: f64,
}

impl Record for Push {
    const EVENT: &'static str = "push";
}

/// Where a set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Local,
    Remote,
    Both,
}

/// `remote_set`: one per set of `offsite list`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteSet {
    pub set: String,
    pub location: Location,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// The set's files, as its manifest lists them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
    /// The remote copy has its manifest (a copy without one is an
    /// interrupted push, not a set) and, an incremental base set, every
    /// set of its chain whole in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// The sets of an incremental set's chain the bucket does not hold
    /// whole: it cannot be restored from there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_links: Vec<String>,
    /// The local verification verdict (verified.ndjson).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
    /// The latest `offsite verify` verdict of the remote copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Record for RemoteSet {
    const EVENT: &'static str = "remote_set";
}

/// `pull`: one per set downloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Pull {
    pub ok: bool,
    pub set: String,
    pub url: String,
    /// The local set it became.
    pub path: String,
    pub bytes: u64,
    pub duration_s: f64,
}

impl Record for Pull {
    const EVENT: &'static str = "pull";
}

/// `remote_verify`: one per remote set checked by `offsite verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RemoteVerify {
    pub ok: bool,
    pub set: String,
    pub url: String,
    /// Files of the set, as its manifest lists them.
    pub files: u64,
    /// Files read back and hashed this run (all, or a `--sample`).
    pub checked: u64,
    pub bytes: u64,
    /// What was wrong, each naming its object.
    pub problems: Vec<String>,
    pub duration_s: f64,
}

impl Record for RemoteVerify {
    const EVENT: &'static str = "remote_verify";
}

/// offsite's summary.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OffsiteCounts {
    /// Sets considered.
    pub sets: u64,
    /// Sets pushed, pulled, verified or kept, as the subcommand does.
    pub done: u64,
    pub failed: u64,
    /// Bytes moved.
    pub bytes: u64,
}
