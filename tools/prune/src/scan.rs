//! What is under a backup root: sets, legacy backup files, leftovers of
//! interrupted runs, and everything else (ignored). Nothing is followed out
//! of the root: only its direct entries are looked at, and symlinks are
//! never followed.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use globset::GlobMatcher;
use opskit::backupset;
use opskit::{Result, root};

/// One entry of the root.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
    pub kind: Kind,
    /// The sets it cannot be restored without (an incremental base set's
    /// chain, as its manifest names them): kept as long as it is.
    pub needs: Vec<String>,
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

/// Why a set's manifest is unusable (not a regular file, too large, not
/// JSON, not a manifest, names files outside the set), or None. Such a set
/// is damaged whatever its verdict said: it never fills a keep slot.
pub fn damaged(set: &Path) -> Option<String> {
    let origin = || set.join(backupset::MANIFEST).display().to_string();
    backupset::read_manifest_bytes(set)
        .and_then(|text| backupset::parse_manifest(&text, &origin()))
        .err()
        .map(|e| e.msg)
}

/// List the root with `opskit::root`'s rules (the same for every tool: a
/// symlink is never followed, a set-named directory with a manifest of any
/// kind is a set), and, with `--glob`, plain files matching it as legacy
/// backups. opskit's own files are left out.
pub fn scan(root: &Path, glob: Option<&GlobMatcher>, tz: Tz) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = opskit::root::list(root)?
        .into_iter()
        .filter_map(|e| {
            let kind = match e.kind {
                root::Kind::Own => return None,
                root::Kind::Set { time, .. } => Kind::Set { time },
                root::Kind::Leftover { age_s, trash } => Kind::Leftover { age_s, trash },
                root::Kind::Other { file: true, .. }
                    if glob.is_some_and(|g| g.is_match(&e.name)) =>
                {
                    Kind::Legacy {
                        time: legacy_time(&e.name, &e.path, tz),
                    }
                }
                root::Kind::Other { why, .. } => Kind::Ignored { why },
            };
            let needs = match kind {
                Kind::Set { .. } => backupset::read_manifest(&e.path)
                    .map(|(m, _)| opskit::chain::needs(&m))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            Some(Entry {
                name: e.name,
                path: e.path,
                kind,
                needs,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A legacy file's time: in its name, else its mtime.
fn legacy_time(name: &str, path: &Path, tz: Tz) -> DateTime<Utc> {
    time_in_name(name, tz).unwrap_or_else(|| {
        path.symlink_metadata()
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| Utc::now())
    })
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
