//! Running migrations up and down, and the checks that gate them: dirty
//! state, drift, out-of-order versions, and the takeover from dbmate.

use std::collections::BTreeMap;
use std::time::Instant;

use opskit::migrations::{Applied, version_order};
use opskit::records::{Direction, MigrateCounts, Migration as MigrationRecord, Validate};
use opskit::{Done, Emitter, Error, Exit, Result};

use crate::db::{Db, Timeouts};
use crate::parse::Migration;
use crate::{Outcome, pg, secs, split};

/// What is wrong with a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProblemKind {
    /// A transaction:false migration failed part-way.
    Dirty,
    /// Applied, and its file changed since.
    Changed,
    /// Applied, and its file is gone.
    Missing,
    /// Pending, but older than the newest applied version.
    OutOfOrder,
}

/// A problem that makes `up` refuse and `validate` fail.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub version: String,
    pub kind: ProblemKind,
    pub detail: String,
}

impl Problem {
    fn new(version: &str, kind: ProblemKind, detail: String) -> Self {
        Problem {
            version: version.to_string(),
            kind,
            detail,
        }
    }
}

/// One `validate` record per problem.
pub(crate) fn emit_problems(em: &mut Emitter, problems: &[Problem]) -> Result<()> {
    for p in problems {
        em.emit(&Validate {
            ok: false,
            version: p.version.clone(),
            problem: p.detail.clone(),
        })?;
    }
    Ok(())
}

/// Problems that make `up` refuse and `validate` fail.
pub(crate) fn validate(
    applied: &BTreeMap<String, Applied>,
    files: &[Migration],
    allow_out_of_order: bool,
) -> Vec<Problem> {
    let by_version: BTreeMap<&str, &Migration> =
        files.iter().map(|m| (m.version.as_str(), m)).collect();
    let mut out = Vec::new();
    for (v, a) in applied {
        if a.dirty {
            out.push(Problem::new(v, ProblemKind::Dirty, format!(
                "dirty: failed at statement {} ({}); fix the database by hand, then `migrate repair --applied {v}` or `--rolled-back {v}`",
                a.failed_statement.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
                a.error.as_deref().unwrap_or("no message")
            )));
            continue;
        }
        if !a.in_schema {
            continue;
        }
        match by_version.get(v.as_str()) {
            None => out.push(Problem::new(
                v,
                ProblemKind::Missing,
                "applied, but its file is missing".into(),
            )),
            Some(m) => {
                if let Some(c) = &a.checksum
                    && *c != m.checksum
                {
                    out.push(Problem::new(
                        v,
                        ProblemKind::Changed,
                        format!(
                            "{} changed after it was applied (checksum {} now {})",
                            m.file.display(),
                            &c[..12.min(c.len())],
                            &m.checksum[..12]
                        ),
                    ));
                }
            }
        }
    }
    if !allow_out_of_order
        && let Some(newest) = applied
            .iter()
            .filter(|(_, a)| a.in_schema)
            .map(|(v, _)| v)
            .max_by(|a, b| version_order(a, b))
    {
        for m in files {
            let pending = !applied.get(&m.version).is_some_and(|a| a.in_schema);
            if pending && version_order(&m.version, newest).is_lt() {
                out.push(Problem::new(&m.version, ProblemKind::OutOfOrder, format!("pending, but older than the newest applied {newest} (out of order; --allow-out-of-order)")));
            }
        }
    }
    out
}

pub(crate) fn up(
    db: &mut Db,
    files: &[Migration],
    target: Option<&str>,
    allow_changed: bool,
    allow_ooo: bool,
    t: &Timeouts,
    em: &mut Emitter,
) -> Result<Outcome> {
    let mut applied = db.applied()?;
    adopt(db, files, &mut applied)?;
    if let Some(tv) = target
        && !files.iter().any(|m| m.version == tv)
    {
        return Err(Error::usage(format!(
            "--target {tv}: no such migration in the directory"
        )));
    }
    let problems: Vec<Problem> = validate(&applied, files, allow_ooo)
        .into_iter()
        .filter(|p| {
            !(allow_changed && matches!(p.kind, ProblemKind::Changed | ProblemKind::Missing))
        })
        .collect();
    if !problems.is_empty() {
        emit_problems(em, &problems)?;
        log::error!(
            "refusing to migrate: {}",
            problems
                .iter()
                .map(|p| format!("{}: {}", p.version, p.detail))
                .collect::<Vec<_>>()
                .join("; ")
        );
        return Ok(Done::new(
            Exit::CheckFailed,
            MigrateCounts {
                applied: Some(0),
                problems: Some(problems.len()),
                ..MigrateCounts::default()
            },
        ));
    }
    let pending: Vec<&Migration> = files
        .iter()
        .filter(|m| !applied.get(&m.version).is_some_and(|a| a.in_schema))
        .filter(|m| target.is_none_or(|tv| !version_order(&m.version, tv).is_gt()))
        .collect();
    apply(db, &pending, Direction::Up, t, em)
}

/// Run `steps` in order, one `migration` record each, stopping at the first
/// failure; then the summary.
pub(crate) fn apply(
    db: &mut Db,
    steps: &[&Migration],
    dir: Direction,
    t: &Timeouts,
    em: &mut Emitter,
) -> Result<Outcome> {
    let up = dir == Direction::Up;
    let mut done = 0;
    for m in steps {
        let t0 = Instant::now();
        let res = db.run(m, up, t);
        let (n, msg) = match &res {
            Ok(n) => (*n, None),
            Err(f) => (0, Some(f.message.as_str())),
        };
        // A success is logged inside the migration's own transaction.
        if let Some(msg) = msg {
            db.log(Some(&m.version), dir.name(), false, msg);
        }
        em.emit(&record(m, dir, n, t0, msg))?;
        if let Some(msg) = msg {
            log::error!("{msg}");
            return Ok(Done::new(Exit::CheckFailed, counts(dir, done, 1)));
        }
        done += 1;
    }
    Ok(Done::new(Exit::Ok, counts(dir, done, 0)))
}

/// The summary of `up` (`applied`) or `down` (`rolled_back`).
fn counts(dir: Direction, done: usize, failed: usize) -> MigrateCounts {
    let (applied, rolled_back) = match dir {
        Direction::Up => (Some(done), None),
        Direction::Down => (None, Some(done)),
    };
    MigrateCounts {
        applied,
        rolled_back,
        failed: Some(failed),
        ..MigrateCounts::default()
    }
}

/// Versions dbmate applied (in schema_migrations, unknown to opskit) get a
/// companion row with the file's checksum: the takeover needs no manual step.
pub(crate) fn adopt(
    db: &mut Db,
    files: &[Migration],
    applied: &mut BTreeMap<String, Applied>,
) -> Result<()> {
    for m in files {
        if let Some(a) = applied.get_mut(&m.version)
            && a.in_schema
            && a.checksum.is_none()
        {
            db.client
                .execute(
                    "INSERT INTO opskit_migrations (version, name, checksum) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&m.version, &m.name, &m.checksum],
                )
                .map_err(pg("recording a migration applied by dbmate"))?;
            db.log(
                Some(&m.version),
                "adopt",
                true,
                "applied before opskit; checksum taken from the file",
            );
            a.checksum = Some(m.checksum.clone());
        }
    }
    Ok(())
}

pub(crate) fn down(
    db: &mut Db,
    files: &[Migration],
    n: Option<usize>,
    to: Option<&str>,
    t: &Timeouts,
    em: &mut Emitter,
) -> Result<Outcome> {
    let applied = db.applied()?;
    let mut versions: Vec<&String> = applied
        .iter()
        .filter(|(_, a)| a.in_schema)
        .map(|(v, _)| v)
        .collect();
    versions.sort_by(|a, b| version_order(b, a));
    let chosen: Vec<&String> = match to {
        Some(tv) => versions
            .into_iter()
            .filter(|v| version_order(v, tv).is_gt())
            .collect(),
        None => versions.into_iter().take(n.unwrap_or(1)).collect(),
    };
    let by_version: BTreeMap<&str, &Migration> =
        files.iter().map(|m| (m.version.as_str(), m)).collect();
    // Check every step can run before running any.
    let mut steps = Vec::new();
    for v in &chosen {
        let m = by_version.get(v.as_str()).ok_or_else(|| {
            Error::failure(format!(
                "cannot roll back {v}: its file is missing from the directory"
            ))
        })?;
        if m.down
            .as_ref()
            .is_none_or(|d| split::statements(&d.sql).is_empty())
        {
            return Err(Error::check(format!(
                "cannot roll back {v} ({}): it has no down section; restore the backup taken before the deployment instead",
                m.file.display()
            )));
        }
        steps.push(*m);
    }
    apply(db, &steps, Direction::Down, t, em)
}

pub(crate) fn record(
    m: &Migration,
    direction: Direction,
    statements: usize,
    t0: Instant,
    err: Option<&str>,
) -> MigrationRecord {
    MigrationRecord {
        ok: err.is_none(),
        version: m.version.clone(),
        name: m.name.clone(),
        direction,
        statements,
        duration_s: secs(t0),
        message: err.map(str::to_string),
    }
}
