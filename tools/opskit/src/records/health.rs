//! healthcheck's records: `check`, `notify`, and its summary's counts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Exit;
use crate::record::{Fields, Record};

/// The monitoring-plugins statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Ok,
    Warning,
    Critical,
    Unknown,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    /// Severity for "worst of": UNKNOWN ranks below CRITICAL as the
    /// plugins' aggregators rank it, but above WARNING.
    pub fn severity(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Unknown => 2,
            Status::Critical => 3,
        }
    }

    pub fn worst(self, other: Status) -> Status {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The plugin exit status: 0, 1, 2, 3.
    pub fn exit(self) -> Exit {
        match self {
            Status::Ok => Exit::Ok,
            Status::Warning => Exit::CheckFailed,
            Status::Critical => Exit::Failure,
            Status::Unknown => Exit::Unknown,
        }
    }
}

/// What a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Http,
    Postgres,
    Tcp,
    Disk,
    Tls,
    Cert,
    Backup,
    Migrations,
    Offsite,
    Wal,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Postgres => "postgres",
            CheckKind::Tcp => "tcp",
            CheckKind::Disk => "disk",
            CheckKind::Tls => "tls",
            CheckKind::Cert => "cert",
            CheckKind::Backup => "backup",
            CheckKind::Migrations => "migrations",
            CheckKind::Offsite => "offsite",
            CheckKind::Wal => "wal",
        }
    }
}

/// The level of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Expect,
    Warn,
    Crit,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Expect => "expect",
            Level::Warn => "warn",
            Level::Crit => "crit",
        }
    }
}

/// One condition of a check and what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Condition {
    pub level: Level,
    pub expr: String,
    /// The field's value (any JSON value, null where there is none).
    pub value: Value,
    pub met: bool,
    pub status: Status,
}

/// `check`: one per check, in the order the checks were given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
    pub target: String,
    pub status: Status,
    pub ok: bool,
    pub detail: String,
    /// The check's fields, by kind (see `healthcheck --help`): dynamic by
    /// nature, so a map.
    pub values: Fields,
    pub conditions: Vec<Condition>,
    pub attempts: u32,
    pub duration_s: f64,
}

impl Record for Check {
    const EVENT: &'static str = "check";
}

/// `notify`: after the `check` records, when `--notify` announced changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Notify {
    pub ok: bool,
    pub url: String,
    pub events: Vec<String>,
    /// Why the POST failed (null when it worked).
    pub error: Option<String>,
}

impl Record for Notify {
    const EVENT: &'static str = "notify";
}

/// healthcheck's summary. `--announce-failure` has no checks and writes
/// only `ok`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealthCounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok_checks: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<usize>,
    /// Polls made by `--wait`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<u32>,
}
