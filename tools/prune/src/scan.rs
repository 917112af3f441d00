//! What is under a backup root: sets, legacy backup files, leftovers of
//! interrupted runs, and everything else (ignored). Nothing is followed out
//! of the root: only its direct entries are looked at, and symlinks are
//! never followed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use globset::GlobMatcher;
use opskit::backupset;
use opskit::durable;
use opskit::{IoContext, Result};

/// One entry of the root.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A backup set; its time is the UTC time in its name, which pgbackup
    /// makes equal to the manifest's `started_at`.
    Set { time: DateTime<Utc> },
    /// A file matched by `--glob`.
    Legacy { time: DateTime<Utc> },
    /// A temporary or trash directory of an interrupted run, with its age.
    Leftover { age_s: u64, trash: bool },
    /// Not a candidate, and why.
    Ignored { why: String },
}

/// Files of opskit's own in a root, neither candidates nor worth listing
/// (the WAL archive is pruned on its own terms, by [`crate::wal`]).
pub fn is_own_file(name: &str) -> bool {
    matches!(
        name,
        backupset::LOCK_FILE | backupset::VERIFIED_LOG | opskit::physical::WAL_DIR
    )
}

/// List the root. Entries are classified on two threads: for a root of
/// thousands of sets the one stat each (of its MANIFEST.json) dominates.
pub fn scan(root: &Path, glob: Option<&GlobMatcher>, tz: Tz) -> Result<Vec<Entry>> {
    let mut raw = Vec::new();
    for e in fs::read_dir(root).at("listing", root)? {
        let e = e.at("listing", root)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if is_own_file(&name) {
            continue;
        }
        // The type from the directory entry (d_type): no stat per entry.
        let Ok(ft) = e.file_type() else { continue };
        raw.push((name, e.path(), ft));
    }
    let now = SystemTime::now();
    let half = raw.len().div_ceil(2);
    let mut out: Vec<Entry> = std::thread::scope(|s| {
        let parts: Vec<_> = raw
            .chunks(half.max(1))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, path, ft)| Entry {
                            kind: classify(name, path, ft, glob, tz, now),
                            name: name.clone(),
                            path: path.clone(),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn classify(
    name: &str,
    path: &Path,
    ft: &fs::FileType,
    glob: Option<&GlobMatcher>,
    tz: Tz,
    now: SystemTime,
) -> Kind {
    if ft.is_symlink() {
        Kind::Ignored {
            why: "symlink (never followed)".into(),
        }
    } else if durable::is_temp_name(name) || durable::is_trash_name(name) {
        let age_s = path
            .symlink_metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Kind::Leftover {
            age_s,
            trash: durable::is_trash_name(name),
        }
    } else if ft.is_dir() {
        match backupset::parse_set_dir_name(name) {
            Some((_, time))
                if path
                    .join(backupset::MANIFEST)
                    .symlink_metadata()
                    .is_ok_and(|m| m.is_file()) =>
            {
                Kind::Set { time }
            }
            Some(_) => Kind::Ignored {
                why: "named like a set but has no MANIFEST.json".into(),
            },
            None => Kind::Ignored {
                why: "not a backup set".into(),
            },
        }
    } else if ft.is_file() && glob.is_some_and(|g| g.is_match(name)) {
        match time_in_name(name, tz) {
            Some(time) => Kind::Legacy { time },
            None => Kind::Legacy {
                time: path
                    .symlink_metadata()
                    .and_then(|m| m.modified())
                    .map(DateTime::<Utc>::from)
                    .unwrap_or_else(|_| Utc::now()),
            },
        }
    } else {
        Kind::Ignored {
            why: "not a backup set".into(),
        }
    }
}

/// A timestamp in a legacy file name (`backup_20261123_030000.sql.gz`,
/// `db-2026-11-23.sql.gz`, ...), read in zone `tz`.
pub fn time_in_name(name: &str, tz: Tz) -> Option<DateTime<Utc>> {
    const DATETIMES: [(&str, usize); 6] = [
        ("%Y%m%dT%H%M%SZ", 16),
        ("%Y-%m-%dT%H:%M:%S", 19),
        ("%Y-%m-%d_%H-%M-%S", 19),
        ("%Y%m%d_%H%M%S", 15),
        ("%Y%m%d-%H%M%S", 15),
        ("%Y%m%d%H%M%S", 14),
    ];
    const DATES: [(&str, usize); 2] = [("%Y-%m-%d", 10), ("%Y%m%d", 8)];
    let b = name.as_bytes();
    for start in 0..b.len() {
        if !b[start].is_ascii_digit() || (start > 0 && b[start - 1].is_ascii_digit()) {
            continue;
        }
        let rest = &name[start..];
        for (fmt, len) in DATETIMES {
            if let Some(s) = rest.get(..len)
                && let Ok(t) = NaiveDateTime::parse_from_str(s, fmt)
                && !rest.as_bytes().get(len).is_some_and(u8::is_ascii_digit)
            {
                let utc = fmt.ends_with('Z');
                return if utc { Some(t.and_utc()) } else { local(t, tz) };
            }
        }
        for (fmt, len) in DATES {
            if let Some(s) = rest.get(..len)
                && let Ok(d) = NaiveDate::parse_from_str(s, fmt)
                && !rest.as_bytes().get(len).is_some_and(u8::is_ascii_digit)
            {
                return local(d.and_hms_opt(0, 0, 0)?, tz);
            }
        }
    }
    None
}

fn local(t: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&t)
        .earliest()
        .map(|d| d.with_timezone(&Utc))
}

/// Remove a directory tree (never following symlinks) and return the bytes
/// its files held.
pub fn remove_tree(path: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    for e in fs::read_dir(path)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            bytes += remove_tree(&e.path())?;
        } else {
            if ft.is_file() {
                bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
            fs::remove_file(e.path())?;
        }
    }
    fs::remove_dir(path)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_legacy_names() {
        let utc = Tz::UTC;
        let t = |s: &str| time_in_name(s, utc).map(|d| d.to_rfc3339());
        assert_eq!(
            t("backup_20261123_030000.sql.gz").as_deref(),
            Some("2026-11-23T03:00:00+00:00")
        );
        assert_eq!(
            t("app-20261123T030000Z.dump").as_deref(),
            Some("2026-11-23T03:00:00+00:00")
        );
        assert_eq!(
            t("db-2026-11-23.sql.gz").as_deref(),
            Some("2026-11-23T00:00:00+00:00")
        );
        assert_eq!(
            t("backup_20261123.sql").as_deref(),
            Some("2026-11-23T00:00:00+00:00")
        );
        assert_eq!(t("backup_v2_final.sql"), None);
        assert_eq!(t("backup_99999999.sql"), None);
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            time_in_name("b_2026-07-01_03-00-00.gz", berlin)
                .unwrap()
                .to_rfc3339(),
            "2026-07-01T01:00:00+00:00"
        );
    }
}
