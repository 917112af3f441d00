//! logrotate-lite's records: `rotate`, `script`, `warning`, and its
//! summary's counts.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// What happened to a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RotateAction {
    #[serde(rename = "rotated")]
    Rotated,
    #[serde(rename = "skipped")]
    Skipped,
    #[serde(rename = "failed")]
    Failed,
    /// `--dry-run`.
    #[serde(rename = "would rotate")]
    WouldRotate,
    /// A rotation an interrupted run left half-done, completed.
    #[serde(rename = "finished")]
    Finished,
}

/// `rotate`: one per log considered, in the order of the config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rotate {
    pub path: String,
    /// `file:line` of the config block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_before: Option<u64>,
    pub action: RotateAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compressed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
    /// `--dry-run`: what would be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<String>>,
}

impl Record for Rotate {
    const EVENT: &'static str = "rotate";
}

impl Rotate {
    /// A record for `path` with only the action set.
    pub fn new(path: impl Into<String>, block: Option<&str>, action: RotateAction) -> Self {
        Rotate {
            path: path.into(),
            block: block.map(str::to_string),
            bytes_before: None,
            action,
            reason: None,
            bytes_after: None,
            created: None,
            compressed: None,
            deleted: None,
            warnings: None,
            steps: None,
        }
    }
    pub fn reason(mut self, why: impl Into<String>) -> Self {
        self.reason = Some(why.into());
        self
    }
}

/// Which script of a block ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScriptKind {
    Firstaction,
    Prerotate,
    Postrotate,
    Lastaction,
    /// Before an old rotation is removed, with its path.
    Preremove,
}

impl ScriptKind {
    pub fn name(self) -> &'static str {
        match self {
            ScriptKind::Firstaction => "firstaction",
            ScriptKind::Prerotate => "prerotate",
            ScriptKind::Postrotate => "postrotate",
            ScriptKind::Lastaction => "lastaction",
            ScriptKind::Preremove => "preremove",
        }
    }
}

/// `script`: one per script run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Script {
    pub ok: bool,
    pub which: ScriptKind,
    pub block: String,
    /// The log, or the block's patterns for shared scripts.
    pub arg: String,
    /// The script's exit status (null when it was killed by a signal).
    pub exit: Option<i32>,
}

impl Record for Script {
    const EVENT: &'static str = "script";
}

/// `warning`: something about a log that was done anyway, as logrotate does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Warning {
    pub path: String,
    pub block: String,
    pub message: String,
}

impl Record for Warning {
    const EVENT: &'static str = "warning";
}

/// logrotate-lite's summary; `--check` gives only `blocks` and `errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RotateCounts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<usize>,
    /// Config and state file problems, failed scripts.
    pub errors: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_after: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// `--check`: blocks read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<usize>,
}
