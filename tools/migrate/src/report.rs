//! Reports that touch nothing: `status` and `plan`.

use opskit::migrations::{counts, version_order};
use opskit::records::{Direction, MigrateCounts, MigrationStatus, Plan};
use opskit::{Done, Emitter, Exit, Result};

use crate::db::Db;
use crate::parse::Migration;
use crate::{Outcome, split};

pub(crate) fn status(
    db: &mut Db,
    files: &[Migration],
    exit_code: bool,
    em: &mut Emitter,
) -> Result<Outcome> {
    let applied = db.applied()?;
    let mut pending = 0;
    let mut versions: Vec<&str> = files.iter().map(|m| m.version.as_str()).collect();
    for v in applied.keys() {
        if !versions.contains(&v.as_str()) {
            versions.push(v);
        }
    }
    versions.sort_by(|a, b| version_order(a, b));
    for v in versions {
        let m = files.iter().find(|m| m.version == v);
        let a = applied.get(v);
        let is_applied = a.is_some_and(|a| a.in_schema);
        if !is_applied {
            pending += 1;
        }
        let checksum_ok = match (m, a.and_then(|a| a.checksum.as_ref())) {
            (Some(m), Some(c)) if is_applied => Some(*c == m.checksum),
            _ => None,
        };
        em.emit(&MigrationStatus {
            version: v.to_string(),
            name: m
                .map(|m| m.name.clone())
                .or_else(|| a.and_then(|a| a.name.clone())),
            applied: is_applied,
            applied_at: a.and_then(|a| a.applied_at.clone()),
            checksum_ok,
            dirty: a.is_some_and(|a| a.dirty),
            file_missing: m.is_none(),
        })?;
    }
    let n = counts(&applied, files.iter().map(|m| m.version.as_str()));
    let exit = if exit_code && pending > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    };
    Ok(Done::new(
        exit,
        MigrateCounts {
            applied: Some(n.applied),
            pending: Some(pending),
            ..MigrateCounts::default()
        },
    ))
}

pub(crate) fn plan(
    db: &mut Db,
    files: &[Migration],
    up: bool,
    n: usize,
    em: &mut Emitter,
) -> Result<Outcome> {
    let applied = db.applied()?;
    let is_applied = |m: &Migration| applied.get(&m.version).is_some_and(|a| a.in_schema);
    let chosen: Vec<&Migration> = if up {
        files.iter().filter(|m| !is_applied(m)).collect()
    } else {
        let mut v: Vec<&Migration> = files.iter().filter(|m| is_applied(m)).collect();
        v.reverse();
        v.into_iter().take(n).collect()
    };
    for m in &chosen {
        let s = if up { Some(&m.up) } else { m.down.as_ref() };
        em.emit(&Plan {
            version: m.version.clone(),
            name: m.name.clone(),
            direction: if up { Direction::Up } else { Direction::Down },
            statements: s.map(|s| split::statements(&s.sql).len()).unwrap_or(0),
            transaction: s.map(|s| s.transaction).unwrap_or(true),
            file: m.file.display().to_string(),
        })?;
    }
    Ok(Done::new(
        Exit::Ok,
        MigrateCounts {
            planned: Some(chosen.len()),
            ..MigrateCounts::default()
        },
    ))
}
