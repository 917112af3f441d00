//! Every record kind of the stream, one type each: the contract between
//! the tools, the procedures and the operator's own scripts.
//!
//! Tools emit these types and read them back (prune and healthcheck read
//! `verify` records, verify-backup reads `backup` records); nothing is
//! built from string keys. Only what is dynamic by nature stays a map: a
//! check's `values`, and the `extra` fields a record passes through from
//! the record it was made from. `docs/records.md` documents each type; a
//! test derives the field lists from [`catalog`] and checks the document
//! against them both ways.

mod health;
mod migrate;
mod offsite;
mod rotate;
mod sets;
mod wal;

pub use health::*;
pub use migrate::*;
pub use offsite::*;
pub use rotate::*;
pub use sets::*;
pub use wal::*;

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::record::{Fields, Record};

/// `error`: something went wrong. When it ended the run, `exit` is the
/// status the tool exits with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorRecord {
    /// Fields of the upstream record this error passes on.
    #[serde(flatten)]
    pub extra: Fields,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<u8>,
    /// Where a bad input line came from (`stdin`, a result log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The 1-based number of a bad input line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// `file:line` of a problem in a config or state file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    pub message: String,
}

impl Record for ErrorRecord {
    const EVENT: &'static str = "error";
}

impl ErrorRecord {
    pub fn new(message: impl Into<String>) -> Self {
        ErrorRecord {
            extra: Fields::new(),
            ok: false,
            exit: None,
            source: None,
            line: None,
            at: None,
            message: message.into(),
        }
    }
    /// The status the run exits with.
    pub fn exit(mut self, code: u8) -> Self {
        self.exit = Some(code);
        self
    }
    /// A bad input line: its 1-based number and, if given, where it came from.
    pub fn line(mut self, line: usize, source: Option<&str>) -> Self {
        self.line = Some(line);
        self.source = source.map(str::to_string);
        self
    }
    /// A problem at `file:line`.
    pub fn at(mut self, at: impl Into<String>) -> Self {
        self.at = Some(at.into());
        self
    }
}

/// `summary`: the last record of every run. `ok`, the tool's own counts,
/// `duration_s` (of the whole run). [`crate::Emitter::summary`] writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Summary<C> {
    pub ok: bool,
    #[serde(flatten)]
    pub counts: C,
    pub duration_s: f64,
}

impl<C: Serialize> Record for Summary<C> {
    const EVENT: &'static str = "summary";
}

/// The counts of a run that an error ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Failed {
    pub exit: u8,
    pub errors: u64,
}

/// A record kind as the catalog lists it.
#[derive(Debug, Clone)]
pub struct Kind {
    pub event: &'static str,
    /// The type it comes from (for messages).
    pub type_name: String,
    /// Its field names (pass-through fields excluded).
    pub fields: BTreeSet<String>,
    /// For a summary's counts: who writes them (a tool, `procedures`, or
    /// `any tool` for the counts of a run an error ended).
    pub writer: Option<&'static str>,
}

impl Kind {
    fn by(mut self, writer: &'static str) -> Self {
        self.writer = Some(writer);
        self
    }
}

fn kind<R: Record + JsonSchema>() -> Kind {
    let schema = schemars::schema_for!(R);
    let fields = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    Kind {
        event: R::EVENT,
        type_name: R::schema_name().into_owned(),
        fields,
        writer: None,
    }
}

/// Every record type the tools write, with its fields: what the records
/// test checks docs/records.md against.
pub fn catalog() -> Vec<Kind> {
    vec![
        kind::<ErrorRecord>(),
        kind::<Summary<Failed>>().by("any tool"),
        kind::<Summary<Skipped>>().by("procedures"),
        kind::<Backup>(),
        kind::<Summary<BackupCounts>>().by("pgbackup"),
        kind::<Verify>(),
        kind::<NewestVerified>(),
        kind::<Summary<VerifyCounts>>().by("verify-backup"),
        kind::<Prune>(),
        kind::<Summary<PruneCounts>>().by("prune"),
        kind::<Check>(),
        kind::<Notify>(),
        kind::<Summary<HealthCounts>>().by("healthcheck"),
        kind::<Migration>(),
        kind::<MigrationStatus>(),
        kind::<Plan>(),
        kind::<Validate>(),
        kind::<Repair>(),
        kind::<New>(),
        kind::<Summary<MigrateCounts>>().by("migrate"),
        kind::<Rotate>(),
        kind::<Script>(),
        kind::<Warning>(),
        kind::<Summary<RotateCounts>>().by("logrotate-lite"),
        kind::<Push>(),
        kind::<RemoteSet>(),
        kind::<Pull>(),
        kind::<RemoteVerify>(),
        kind::<Summary<OffsiteCounts>>().by("offsite"),
        kind::<Wal>(),
        kind::<Recovery>(),
        kind::<ControlSettings>(),
        kind::<RecoveryWindow>(),
        kind::<Pitr>(),
        kind::<Summary<WalCounts>>().by("walarchive"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_lists_flattened_counts_and_not_pass_through() {
        let cat = catalog();
        let s = cat.iter().find(|k| k.writer == Some("pgbackup")).unwrap();
        for f in ["ok", "sets", "failed", "bytes", "duration_s"] {
            assert!(s.fields.contains(f), "{f} missing from {:?}", s.fields);
        }
        let e = cat.iter().find(|k| k.event == "error").unwrap();
        assert!(e.fields.contains("message"));
        assert!(!e.fields.contains("extra"));
    }
}
