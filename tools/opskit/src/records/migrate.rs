//! migrate's records: `migration`, `status`, `plan`, `validate`, `repair`,
//! `new`, and its summary's counts (which depend on the command).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// Which way a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// `migration`: one per migration run by `up` or `down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Migration {
    pub ok: bool,
    pub version: String,
    pub name: String,
    pub direction: Direction,
    pub statements: usize,
    pub duration_s: f64,
    /// On failure: `file:line: PostgreSQL's message (SQLSTATE) (statement N of the section)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Record for Migration {
    const EVENT: &'static str = "migration";
}

/// `status`: one per known version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigrationStatus {
    pub version: String,
    pub name: Option<String>,
    pub applied: bool,
    pub applied_at: Option<String>,
    /// Null when unknown (not applied, or applied before checksums).
    pub checksum_ok: Option<bool>,
    pub dirty: bool,
    pub file_missing: bool,
}

impl Record for MigrationStatus {
    const EVENT: &'static str = "status";
}

/// `plan`: what `up` or `down` would run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Plan {
    pub version: String,
    pub name: String,
    pub direction: Direction,
    pub statements: usize,
    pub transaction: bool,
    pub file: String,
}

impl Record for Plan {
    const EVENT: &'static str = "plan";
}

/// `validate`: one per problem (also printed by `up` when it refuses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Validate {
    pub ok: bool,
    pub version: String,
    pub problem: String,
}

impl Record for Validate {
    const EVENT: &'static str = "validate";
}

/// What `repair` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RepairAction {
    RepairApplied,
    RepairRolledBack,
    RepairAcceptChecksum,
}

impl RepairAction {
    pub fn name(self) -> &'static str {
        match self {
            RepairAction::RepairApplied => "repair-applied",
            RepairAction::RepairRolledBack => "repair-rolled-back",
            RepairAction::RepairAcceptChecksum => "repair-accept-checksum",
        }
    }
}

/// `repair`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Repair {
    pub ok: bool,
    pub version: String,
    pub action: RepairAction,
}

impl Record for Repair {
    const EVENT: &'static str = "repair";
}

/// `new`: the migration file created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct New {
    pub ok: bool,
    pub version: String,
    pub path: String,
}

impl Record for New {
    const EVENT: &'static str = "new";
}

/// migrate's summary: the counts of the command that ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MigrateCounts {
    /// `up`; `status`: versions applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<usize>,
    /// `up`, `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<usize>,
    /// `down`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<usize>,
    /// `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<usize>,
    /// `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned: Option<usize>,
    /// `validate`, and `up` when it refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<usize>,
    /// `baseline`: the version, and how many versions it marked applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked: Option<u64>,
    /// `repair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repaired: Option<usize>,
    /// `wait`: how long the database took to accept connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_s: Option<f64>,
}
