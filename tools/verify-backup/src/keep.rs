//! What a real restore keeps beside the database (restore-system.sh):
//!
//! * `--globals`: the set's roles (pg_dumpall --globals-only) restored on
//!   the server before the dump. Roles that exist already are left as they
//!   are; the SQL runs under psql's `\restrict`, so nothing in the file can
//!   run a program.
//! * `--files-into DIR`: the set's files archives unpacked into DIR with
//!   [`opskit::untar`]: no owners, no setuid/setgid bits, no device nodes,
//!   nothing outside DIR.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;

use opskit::backupset::{FileKind, Manifest};
use opskit::crypt::Identities;
use opskit::{Result, pgtools};

use crate::checks::{Check, Name};
use crate::restore::{Input, Seen, Source, Target, need_restrict};

/// Restore the globals file of `m` (if any) on `t`'s server.
pub fn globals(
    t: &Target,
    set: &Path,
    m: &Manifest,
    ids: Option<&Identities>,
    major: u32,
    seen: &Seen,
) -> Result<Check> {
    let Some(f) = m.files.iter().find(|f| f.kind == FileKind::Globals) else {
        return Ok(Check::pass(
            Name::Globals,
            None,
            "no globals in this set (pgbackup --globals writes them)",
        ));
    };
    let version = m
        .database
        .as_ref()
        .map(|d| d.server_version.clone())
        .unwrap_or_default();
    let psql = pgtools::find("psql", major, &version, t.bindir.as_deref())?;
    need_restrict(&psql)?;
    let mut cmd = Command::new(&psql.path);
    t.spec.configure_child(&mut cmd);
    // No ON_ERROR_STOP: a role that exists already is an error to go past.
    cmd.args(["-X", "--quiet", "--output=/dev/null"]);
    cmd.arg(format!("--dbname={}", t.spec.dbname));
    log::info!(
        "restoring the roles of {} that do not exist (existing roles are left as they are)",
        f.name
    );
    let source = Source {
        set,
        entry: f,
        seen: seen.get(&f.name),
    };
    let existing = existing_roles(t)?;
    let skipped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let input = Input::Globals(existing, std::sync::Arc::clone(&skipped));
    let left_out = || skipped.load(std::sync::atomic::Ordering::Relaxed);
    Ok(match t.feed_sql(cmd, "psql", &source, ids, input) {
        Err(e) => Check::fail(Name::Globals, Some(&f.name), e),
        Ok(lines) => {
            let kept = format!(
                "{} statements about roles that exist were left out",
                left_out()
            );
            // psql's own words for a refused meta-command, and SQL errors.
            let errors: Vec<&String> = lines
                .iter()
                .filter(|l| l.contains("ERROR") || l.contains("restricted"))
                .collect();
            if errors.is_empty() {
                Check::pass(
                    Name::Globals,
                    Some(&f.name),
                    format!("new roles restored; {kept}"),
                )
            } else {
                log::warn!(
                    "{}: some statements of the globals failed: {}",
                    f.name,
                    errors[0]
                );
                Check::pass(
                    Name::Globals,
                    Some(&f.name),
                    format!(
                        "restored; {kept}; statements that failed include: {}",
                        errors[0]
                    ),
                )
            }
        }
    })
}

/// The roles the server has: their statements in the globals are left out.
fn existing_roles(t: &Target) -> Result<std::collections::BTreeSet<String>> {
    let mut c = t.spec.connect()?;
    let rows = c
        .query("SELECT rolname::text FROM pg_catalog.pg_roles", &[])
        .map_err(|e| opskit::Error::failure(opskit::pgconn::describe_pg_error(&e)))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Unpack every files archive of the set into `dir` (created 0700 if
/// missing), one check per archive.
pub fn files(
    set: &Path,
    m: &Manifest,
    ids: Option<&Identities>,
    dir: &Path,
    seen: &Seen,
) -> Vec<Check> {
    let archives: Vec<_> = m
        .files
        .iter()
        .filter(|f| f.kind == FileKind::Files)
        .collect();
    if archives.is_empty() {
        return vec![Check::pass(
            Name::Unpack,
            None,
            "no files archives in this set",
        )];
    }
    if let Err(e) = prepare_dir(dir) {
        return vec![Check::fail(Name::Unpack, None, e)];
    }
    let checks: Vec<Check> = archives
        .into_iter()
        .map(|f| {
            log::info!("unpacking {} into {}", f.name, dir.display());
            let source = Source {
                set,
                entry: f,
                seen: seen.get(&f.name),
            };
            match unpack_one(&source, ids, dir) {
                Ok(detail) => Check::pass(Name::Unpack, Some(&f.name), detail),
                Err(e) => Check::fail(Name::Unpack, Some(&f.name), e),
            }
        })
        .collect();
    if checks.iter().any(|c| !c.ok) {
        // Nothing half-unpacked stays: the directory was new or empty.
        let _ = std::fs::remove_dir_all(dir);
    }
    checks
}

fn unpack_one(
    source: &Source,
    ids: Option<&Identities>,
    dir: &Path,
) -> std::result::Result<String, String> {
    let what = source.path();
    let mut src = source.open(ids)?;
    let done = {
        let content = opskit::codec::content_reader(source.entry, &mut src)
            .map_err(|e| format!("{}: {e}", what.display()))?;
        opskit::untar::unpack(content, dir, &what).map_err(|e| e.msg)?
    };
    src.finish(source.entry)
        .map_err(|e| format!("{}: {e}", what.display()))?;
    if !done.skipped.is_empty() || !done.stripped.is_empty() {
        log::warn!("{}: {}", what.display(), done.describe());
    }
    Ok(format!("into {}: {}", dir.display(), done.describe()))
}

/// `--files-into DIR` must be a new or empty directory in a parent only
/// root (or the running user) can write: unpacking as root by path into a
/// directory someone else can change could be redirected through a link
/// they swap in. DIR is created 0700 when missing.
fn prepare_dir(dir: &Path) -> std::result::Result<(), String> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let pmeta = std::fs::metadata(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    opskit::safefs::check_private(parent, &pmeta).map_err(|e| {
        format!(
            "--files-into {}: its parent {} (unpack somewhere only root can write, then move the files)",
            dir.display(),
            e.msg
        )
    })?;
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display())),
        Err(e) => Err(format!("{}: {e}", dir.display())),
        Ok(m) if !m.is_dir() => Err(format!(
            "--files-into {}: not a directory ({})",
            dir.display(),
            opskit::safefs::kind_of(&m)
        )),
        Ok(m) => {
            opskit::safefs::check_private(dir, &m)
                .map_err(|e| format!("--files-into {}", e.msg))?;
            let empty = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .next()
                .is_none();
            if empty {
                Ok(())
            } else {
                Err(format!(
                    "--files-into {}: not empty; unpack into a new directory and move what you need",
                    dir.display()
                ))
            }
        }
    }
}
