//! Where a database stands against its migration files, read the way
//! `migrate` (and dbmate) keep them: the files of a directory by version
//! (`<version>_<name>.sql`), the versions the database has applied
//! (dbmate's `schema_migrations`, opskit's `opskit_migrations`), and how
//! the two compare ([`Counts`]).
//!
//! `migrate` parses the files' sections and applies them; healthcheck's
//! `migrations:DIR` check needs only [`status`]. Nothing here writes to
//! the database or reads a file's contents.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use postgres::Client;

use crate::pgconn::pg_failure as pg;
use crate::{Error, IoContext, Result};

/// A migration file, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    pub version: String,
    pub name: String,
    pub path: PathBuf,
}

/// `20261123030000_add_users.sql` → (`20261123030000`, `add_users`).
pub fn split_file_name(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".sql")?;
    let digits = stem
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(stem.len());
    if digits == 0 {
        return None;
    }
    let rest = &stem[digits..];
    Some((&stem[..digits], rest.strip_prefix('_').unwrap_or(rest)))
}

/// Order of versions: as strings, as dbmate orders them (its timestamps all
/// have the same length; `10_x` sorts before `9_x` there too).
pub fn version_order(a: &str, b: &str) -> Ordering {
    a.cmp(b)
}

/// The migration files in `dir`, ordered by version. A `.sql` file whose
/// name is not `<version>_<name>.sql` is skipped with a warning; two files
/// with the same version are refused (usage).
pub fn list_dir(dir: &Path) -> Result<Vec<MigrationFile>> {
    let mut out: Vec<MigrationFile> = Vec::new();
    for e in fs::read_dir(dir).at("reading migrations directory", dir)? {
        let e = e.at("reading migrations directory", dir)?;
        let file_name = e.file_name().to_string_lossy().into_owned();
        if !file_name.ends_with(".sql") {
            continue;
        }
        let Some((version, name)) = split_file_name(&file_name) else {
            log::warn!("ignoring {}: not <version>_<name>.sql", e.path().display());
            continue;
        };
        out.push(MigrationFile {
            version: version.to_string(),
            name: name.to_string(),
            path: e.path(),
        });
    }
    out.sort_by(|a, b| version_order(&a.version, &b.version).then_with(|| a.path.cmp(&b.path)));
    for w in out.windows(2) {
        if version_order(&w[0].version, &w[1].version).is_eq() {
            return Err(Error::usage(format!(
                "{} and {} have the same version {}",
                w[0].path.display(),
                w[1].path.display(),
                w[0].version
            )));
        }
    }
    Ok(out)
}

/// What the database says of one version.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// In `schema_migrations` (dbmate's view).
    pub in_schema: bool,
    pub name: Option<String>,
    pub checksum: Option<String>,
    pub applied_at: Option<String>,
    pub dirty: bool,
    pub failed_statement: Option<i32>,
    pub error: Option<String>,
}

fn exists(client: &mut Client, table: &str) -> Result<bool> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .map_err(pg("reading migration state"))?;
    Ok(row.get(0))
}

/// Every version the database knows, touching nothing (a database no
/// migrator has touched knows none).
pub fn applied(client: &mut Client) -> Result<BTreeMap<String, Applied>> {
    let mut out: BTreeMap<String, Applied> = BTreeMap::new();
    if exists(client, "schema_migrations")? {
        for r in client
            .query("SELECT version::text FROM schema_migrations", &[])
            .map_err(pg("reading schema_migrations"))?
        {
            out.entry(r.get(0)).or_default().in_schema = true;
        }
    }
    if exists(client, "opskit_migrations")? {
        let rows = client
            .query(
                "SELECT version::text, name, checksum, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                 dirty, failed_statement, error FROM opskit_migrations",
                &[],
            )
            .map_err(pg("reading opskit_migrations"))?;
        for r in rows {
            let a = out.entry(r.get(0)).or_default();
            a.name = r.get(1);
            a.checksum = r.get(2);
            a.applied_at = r.get(3);
            a.dirty = r.get(4);
            a.failed_statement = r.get(5);
            a.error = r.get(6);
        }
    }
    Ok(out)
}

/// How a database stands against the files: what healthcheck's
/// `migrations:` check and `migrate status`'s summary report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub files: usize,
    pub applied: usize,
    pub pending: usize,
    pub dirty: usize,
}

/// Count the file `versions` against what the database has `applied`.
pub fn counts<'a>(
    applied: &BTreeMap<String, Applied>,
    versions: impl IntoIterator<Item = &'a str>,
) -> Counts {
    let is_applied = |v: &str| applied.get(v).is_some_and(|a| a.in_schema);
    let (mut files, mut pending) = (0, 0);
    for v in versions {
        files += 1;
        pending += usize::from(!is_applied(v));
    }
    Counts {
        files,
        applied: applied.values().filter(|a| a.in_schema).count(),
        pending,
        dirty: applied.values().filter(|a| a.dirty).count(),
    }
}

/// The migration files of `dir` against the database `client` is
/// connected to.
pub fn status(dir: &Path, client: &mut Client) -> Result<Counts> {
    let files = list_dir(dir)?;
    let applied = applied(client)?;
    Ok(counts(&applied, files.iter().map(|f| f.version.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_and_order() {
        assert_eq!(split_file_name("001_init.sql"), Some(("001", "init")));
        assert_eq!(
            split_file_name("20261123030000_x_y.sql"),
            Some(("20261123030000", "x_y"))
        );
        assert_eq!(split_file_name("init.sql"), None);
        assert_eq!(split_file_name("001_init.txt"), None);
        let mut v = vec!["20261123030000", "002", "0025", "20250101000000"];
        v.sort_by(|a, b| version_order(a, b));
        assert_eq!(v, vec!["002", "0025", "20250101000000", "20261123030000"]);
    }

    #[test]
    fn a_directory_is_listed_by_version() {
        let d = tempfile::tempdir().unwrap();
        for f in ["002_b.sql", "001_a.sql", "notes.txt", "init.sql"] {
            fs::write(d.path().join(f), "-- migrate:up\n").unwrap();
        }
        let files = list_dir(d.path()).unwrap();
        let got: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.version.as_str(), f.name.as_str()))
            .collect();
        assert_eq!(got, vec![("001", "a"), ("002", "b")]);
        fs::write(d.path().join("001_c.sql"), "").unwrap();
        let e = list_dir(d.path()).unwrap_err();
        assert_eq!(e.exit, crate::Exit::Usage);
        assert!(e.msg.contains("have the same version 001"), "{}", e.msg);
    }

    #[test]
    fn counts_compare_files_and_database() {
        let mut applied = BTreeMap::new();
        let done = |dirty: bool| Applied {
            in_schema: !dirty,
            dirty,
            ..Applied::default()
        };
        applied.insert("001".to_string(), done(false));
        applied.insert("002".to_string(), done(true));
        // Applied, but its file is gone: counted as applied, not a file.
        applied.insert("000".to_string(), done(false));
        let n = counts(&applied, ["001", "002", "003"]);
        assert_eq!(
            n,
            Counts {
                files: 3,
                applied: 2,
                pending: 2,
                dirty: 1
            }
        );
    }
}
