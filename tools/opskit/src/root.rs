//! A backup root: what is in it, read one way by every tool.
//!
//! The rules, the same everywhere:
//!
//! * a **set** is a real directory (never a symlink: it is not followed,
//!   whatever it points at) named `NAME-YYYYmmddTHHMMSSZ` that holds a
//!   `MANIFEST.json` of any kind: one that is a FIFO, a directory or does not
//!   parse makes a *damaged* set, never one that is skipped, so the newest
//!   set is never silently an older one;
//! * a hidden temporary or trash directory of an interrupted run is a
//!   **leftover**;
//! * the lock, the verdict logs and the WAL archive are opskit's **own**;
//! * everything else is **other**, with the reason;
//! * sets are ordered by their time, then by name: "the newest" is the same
//!   set for every tool, also for two sets made in the same second.
//!
//! Entries are classified on two threads: for a root of thousands of sets
//! the one `lstat` each (of its `MANIFEST.json`) dominates.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::{IoContext, Result, backupset, durable};

/// The offsite verification log in a root (`offsite verify --record`).
pub const OFFSITE_VERIFIED_LOG: &str = "offsite-verified.ndjson";

/// What an entry of a root is.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A set of series `series` (the name before the time) made at `time`.
    Set { series: String, time: DateTime<Utc> },
    /// A temporary or trash directory of an interrupted run, and its age.
    Leftover { age_s: u64, trash: bool },
    /// The lock, a verdict log, the WAL archive.
    Own,
    /// Anything else: a plain file (`file`), or not, and why it is no set.
    Other { why: String, file: bool },
}

/// One entry of a root.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
}

impl Entry {
    /// The set's series and time, when it is a set.
    pub fn set(&self) -> Option<(&str, DateTime<Utc>)> {
        match &self.kind {
            Kind::Set { series, time } => Some((series, *time)),
            _ => None,
        }
    }
}

/// A set of a root.
#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    pub name: String,
    pub series: String,
    pub time: DateTime<Utc>,
    pub path: PathBuf,
}

impl Set {
    /// Its manifest, read and parsed (not signature-checked: see
    /// `backupset::load_trusted`); Err names what is wrong with it.
    pub fn manifest(&self) -> Result<backupset::Manifest> {
        backupset::read_manifest(&self.path).map(|(m, _)| m)
    }
}

/// Whether `name` is one of opskit's own files in a root.
pub fn is_own(name: &str) -> bool {
    matches!(
        name,
        backupset::LOCK_FILE
            | backupset::VERIFIED_LOG
            | OFFSITE_VERIFIED_LOG
            | crate::walstore::WAL_DIR
    )
}

/// Every entry of `root`, sets first by (time, name), then the rest by name.
pub fn list(root: &Path) -> Result<Vec<Entry>> {
    let mut raw = Vec::new();
    for e in fs::read_dir(root).at("listing", root)? {
        let e = e.at("listing", root)?;
        // The type from the directory entry (d_type): no stat per entry.
        let Ok(ft) = e.file_type() else { continue };
        raw.push((e.file_name().to_string_lossy().into_owned(), e.path(), ft));
    }
    let now = SystemTime::now();
    // A stat per set-named directory, on two threads.
    let mut out: Vec<Entry> = crate::pool::map(&raw, 2, |(name, path, ft)| Entry {
        kind: classify(name, path, ft, now),
        name: name.clone(),
        path: path.clone(),
    });
    out.sort_by(|a, b| match (a.set(), b.set()) {
        (Some((_, ta)), Some((_, tb))) => (ta, &a.name).cmp(&(tb, &b.name)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.name.cmp(&b.name),
    });
    Ok(out)
}

/// The set a person names: a path (it holds a `/`) as given, else the set
/// of that name in `root`.
pub fn named(root: &Path, name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name)
    } else {
        root.join(name)
    }
}

/// The sets of `root`, oldest first (time, then name).
pub fn sets(root: &Path) -> Result<Vec<Set>> {
    Ok(list(root)?
        .into_iter()
        .filter_map(|e| match e.kind {
            Kind::Set { series, time } => Some(Set {
                name: e.name,
                series,
                time,
                path: e.path,
            }),
            _ => None,
        })
        .collect())
}

/// What one entry is, by the rules of the module.
fn classify(name: &str, path: &Path, ft: &fs::FileType, now: SystemTime) -> Kind {
    if is_own(name) {
        return Kind::Own;
    }
    if ft.is_symlink() {
        return Kind::Other {
            why: "symlink (never followed)".into(),
            file: false,
        };
    }
    if durable::is_temp_name(name) || durable::is_trash_name(name) {
        let age_s = path
            .symlink_metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Kind::Leftover {
            age_s,
            trash: durable::is_trash_name(name),
        };
    }
    if !ft.is_dir() {
        return Kind::Other {
            why: "not a backup set".into(),
            file: ft.is_file(),
        };
    }
    match backupset::parse_set_dir_name(name) {
        // A manifest of any kind makes a set: a broken one is a damaged
        // set, never skipped.
        Some((series, time)) if path.join(backupset::MANIFEST).symlink_metadata().is_ok() => {
            Kind::Set {
                series: series.to_string(),
                time,
            }
        }
        Some(_) => Kind::Other {
            why: "named like a set but has no MANIFEST.json".into(),
            file: false,
        },
        None => Kind::Other {
            why: "not a backup set".into(),
            file: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(root: &Path, name: &str) {
        fs::create_dir(root.join(name)).unwrap();
        fs::write(root.join(name).join(backupset::MANIFEST), "{}").unwrap();
    }

    #[test]
    fn one_rule_for_links_leftovers_and_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        set(r, "app-20261201T030000Z");
        set(r, "b-20261202T030000Z");
        set(r, "a-20261202T030000Z");
        // A set elsewhere, linked in: never followed, never a set.
        let away = tempfile::tempdir().unwrap();
        set(away.path(), "app-20991231T000000Z");
        std::os::unix::fs::symlink(
            away.path().join("app-20991231T000000Z"),
            r.join("app-20991231T000000Z"),
        )
        .unwrap();
        fs::create_dir(r.join("app-20261203T030000Z")).unwrap();
        fs::create_dir(r.join(durable::temp_name("app-20261204T030000Z"))).unwrap();
        fs::write(r.join(backupset::VERIFIED_LOG), "").unwrap();
        let names: Vec<String> = sets(r).unwrap().into_iter().map(|s| s.name).collect();
        // Same second: by name, the same for every tool.
        assert_eq!(
            names,
            [
                "app-20261201T030000Z",
                "a-20261202T030000Z",
                "b-20261202T030000Z"
            ]
        );
        let all = list(r).unwrap();
        let kind = |n: &str| all.iter().find(|e| e.name == n).unwrap().kind.clone();
        assert!(
            matches!(kind("app-20991231T000000Z"), Kind::Other { why, .. } if why.contains("symlink"))
        );
        assert!(matches!(kind("app-20261203T030000Z"), Kind::Other { .. }));
        assert_eq!(kind(backupset::VERIFIED_LOG), Kind::Own);
        assert!(all.iter().any(|e| matches!(e.kind, Kind::Leftover { .. })));
    }
}
