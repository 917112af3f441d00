//! The verdict logs of a backup root: `verified.ndjson` (verify-backup's
//! `verify` records) and `offsite-verified.ndjson` (offsite's
//! `remote_verify` records). One writer and one reader for both:
//!
//! * [`VerdictLog::append`]: a line appended under an exclusive lock,
//!   fsynced, the file opened without following a link (the root may be
//!   another user's) and created 0600;
//! * [`VerdictLog::latest`]: the **latest** verdict of each set, read one
//!   way: a set that passed and then failed a later verification is failed.
//!   A record of another kind is skipped; an unreadable line is skipped by
//!   `latest` and reported by [`VerdictLog::read`] (prune holds deletion
//!   on it: the lost line may have been a failure).
//!
//! [`Verdict::fold`] is the one rule for a newer verdict, used for the logs
//! and for the records prune reads on stdin.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::reader::LineError;
use crate::records::{Depth, SetCheck};
use crate::{IoContext, Result, backupset, root};

/// A root's verdict log.
#[derive(Debug, Clone)]
pub struct VerdictLog {
    path: PathBuf,
}

/// What the log says of one set.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// The latest verdict.
    pub ok: bool,
    /// When it was given (the record's `ts`).
    pub at: Option<DateTime<Utc>>,
    /// The deepest verification passed since the set last failed one.
    pub depth: Option<Depth>,
    /// Why the latest one failed (its failed checks, for a record).
    pub why: String,
    /// The latest restore test's duration and time.
    pub restore: Option<(f64, Option<DateTime<Utc>>)>,
}

/// One verdict record, whichever log or stream it came from.
#[derive(Debug, Clone, Default)]
pub struct Said {
    pub ok: bool,
    /// How deep the verification went.
    pub depth: Option<Depth>,
    /// Why it failed (empty when it passed).
    pub why: String,
    /// The restore test's duration, if one ran.
    pub restore_s: Option<f64>,
    /// The record's `ts`.
    pub at: Option<DateTime<Utc>>,
}

impl Verdict {
    /// A newer verdict on the same set replaces this one; a pass keeps the
    /// deepest verification passed since the set last failed, a failure
    /// forgets it.
    pub fn fold(&mut self, said: Said) {
        self.ok = said.ok;
        self.at = said.at;
        if said.ok {
            self.why.clear();
            self.depth = self.depth.max(said.depth);
            if let Some(s) = said.restore_s {
                self.restore = Some((s, said.at));
            }
        } else {
            self.depth = None;
            self.why = said.why;
        }
    }
}

/// A log read: the latest verdict of each set, and the lines that could not
/// be read.
#[derive(Debug, Default)]
pub struct Reading {
    pub latest: BTreeMap<String, Verdict>,
    pub unreadable: Vec<LineError>,
}

/// The fields of a verdict record this module reads (a `verify` or a
/// `remote_verify` record; the rest is ignored).
#[derive(serde::Deserialize)]
struct Line {
    set: String,
    ok: bool,
    #[serde(default)]
    depth: Option<Depth>,
    #[serde(default)]
    restore_s: Option<f64>,
    #[serde(default)]
    checks: Vec<SetCheck>,
    #[serde(default)]
    problems: Vec<String>,
}

impl VerdictLog {
    /// verify-backup's log in `root`.
    pub fn local(root: &Path) -> VerdictLog {
        Self::at(&root.join(backupset::VERIFIED_LOG))
    }

    /// offsite verify's log in `root`.
    pub fn offsite(root: &Path) -> VerdictLog {
        Self::at(&root.join(root::OFFSITE_VERIFIED_LOG))
    }

    pub fn at(path: &Path) -> VerdictLog {
        VerdictLog {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record line (a newline is added), locked and fsynced.
    /// A line torn by an earlier crash is ended first, so it never swallows
    /// this one; a write that fails (a full disk) is cut back off, so the
    /// log never ends in half a line.
    pub fn append(&self, line: &str) -> Result<()> {
        let path = &self.path;
        let mut f = crate::safefs::open_nofollow(
            path,
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o600),
        )
        .map_err(|e| e.context("opening result log"))?;
        f.lock().at("locking", path)?;
        let len = f.metadata().at("reading", path)?.len();
        let mut text = String::with_capacity(line.len() + 2);
        if len > 0 {
            let mut last = [0u8];
            let torn = f.read_at(&mut last, len - 1).is_ok_and(|n| n == 1) && last[0] != b'\n';
            if torn {
                text.push('\n');
            }
        }
        text.push_str(line);
        text.push('\n');
        if let Err(e) = f.write_all(text.as_bytes()) {
            let _ = f.set_len(len);
            return Err(e).at("appending to", path);
        }
        f.sync_data().at("syncing", path)
    }

    /// The latest verdict of each set the log names (a missing log is
    /// empty); unreadable lines are skipped.
    pub fn latest(&self) -> Result<BTreeMap<String, Verdict>> {
        Ok(self.read()?.latest)
    }

    /// The latest verdict of each set, and the lines that could not be read
    /// (not JSON, or a verdict record without its fields). The log is
    /// opened without following a link; each line is bounded by the record
    /// reader.
    pub fn read(&self) -> Result<Reading> {
        let mut out = Reading::default();
        let f = match fs::symlink_metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            _ => crate::safefs::open_nofollow(&self.path, OpenOptions::new().read(true))?,
        };
        let rd = crate::reader::RecordReader::new(std::io::BufReader::new(f));
        let mut rd = rd.named(self.path.display().to_string());
        for item in rd.by_ref() {
            let line = match item {
                Ok(l) if matches!(l.event(), "verify" | "remote_verify") => l,
                Ok(_) => continue,
                Err(e) => {
                    out.unreadable.push(e);
                    continue;
                }
            };
            let rec = match line.parse::<Line>() {
                Ok(r) => r,
                Err(e) => {
                    out.unreadable.push(e);
                    continue;
                }
            };
            let said = Said {
                ok: rec.ok,
                depth: rec.depth,
                why: failure_detail(&rec.checks, &rec.problems),
                restore_s: rec.restore_s,
                at: line.ts(),
            };
            out.latest.entry(rec.set).or_default().fold(said);
        }
        match rd.take_io_error() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Whether each set's latest verdict passed.
    pub fn passed(&self) -> Result<BTreeMap<String, bool>> {
        Ok(self.latest()?.into_iter().map(|(k, v)| (k, v.ok)).collect())
    }
}

/// A failed verdict's reasons, for a record: "failed verification: sha256
/// db.dump.gz, gzip db.dump.gz" (its failed checks, then its problems).
pub fn failure_detail(checks: &[SetCheck], problems: &[String]) -> String {
    let mut parts: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(SetCheck::label)
        .collect();
    parts.extend(problems.iter().cloned());
    if parts.is_empty() {
        "failed verification".into()
    } else {
        format!("failed verification: {}", parts.join(", "))
    }
}

/// The newest set of `sets` (oldest first, as `root::sets` gives them)
/// whose latest verdict passed, for which `pred` holds.
pub fn newest_passed<'a>(
    sets: &'a [root::Set],
    verdicts: &BTreeMap<String, Verdict>,
    pred: impl Fn(&root::Set) -> bool,
) -> Option<&'a root::Set> {
    sets.iter()
        .rev()
        .find(|s| verdicts.get(&s.name).is_some_and(|v| v.ok) && pred(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(set: &str, ok: bool, depth: &str) -> String {
        serde_json::json!({"event": "verify", "tool": "verify-backup", "ts": "2026-12-01T00:00:00Z",
            "set": set, "ok": ok, "path": "/x", "depth": depth, "failed_checks": 0,
            "checks": [{"name": "sha256", "file": "db.dump.zst", "ok": ok, "detail": ""}],
            "duration_s": 1.0})
        .to_string()
    }

    #[test]
    fn the_latest_verdict_wins() {
        let d = tempfile::tempdir().unwrap();
        let log = VerdictLog::local(d.path());
        assert!(log.latest().unwrap().is_empty());
        log.append(&line("a", true, "restore")).unwrap();
        log.append(&line("a", false, "structural")).unwrap();
        log.append(&line("b", false, "quick")).unwrap();
        log.append(&line("b", true, "structural")).unwrap();
        log.append("{torn").unwrap();
        let v = log.latest().unwrap();
        assert!(!v["a"].ok, "passed, then failed: failed");
        assert_eq!(v["a"].why, "failed verification: sha256 db.dump.zst");
        assert!(v["b"].ok);
        assert_eq!(v["b"].depth, Some(Depth::Structural));
    }

    #[test]
    fn a_torn_line_is_reported_and_never_swallows_the_next_append() {
        let d = tempfile::tempdir().unwrap();
        let log = VerdictLog::local(d.path());
        fs::write(
            log.path(),
            line("a", true, "quick") + "\n{\"event\":\"verify\",\"set\":\"a\",\"ok\":fa",
        )
        .unwrap();
        log.append(&line("b", true, "quick")).unwrap();
        let r = log.read().unwrap();
        assert_eq!(r.unreadable.len(), 1, "{:?}", r.unreadable);
        assert_eq!(r.unreadable[0].line, 2);
        assert!(r.latest["a"].ok && r.latest["b"].ok, "{:?}", r.latest);
        // A verdict record without its fields is unreadable too.
        log.append(r#"{"event":"verify","set":"a"}"#).unwrap();
        let r = log.read().unwrap();
        assert_eq!(
            r.unreadable.iter().map(|e| e.line).collect::<Vec<_>>(),
            [2, 4]
        );
        assert!(r.latest["a"].ok, "an unreadable line changes no verdict");
    }

    #[test]
    fn a_planted_link_is_neither_read_nor_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        fs::write(&victim, "root only\n").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(backupset::VERIFIED_LOG)).unwrap();
        let log = VerdictLog::local(d.path());
        assert!(log.append("x").unwrap_err().msg.contains("symbolic link"));
        assert!(log.latest().is_err());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "root only\n");
    }
}
