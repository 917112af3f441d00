//! Maintenance: `baseline`, `repair`, `new` and `wait`.

use std::path::Path;
use std::time::{Duration, Instant};

use opskit::migrations::version_order;
use opskit::pgconn::ConnSpec;
use opskit::records::{MigrateCounts, New, Repair, RepairAction};
use opskit::{Done, Emitter, Error, Exit, Result, units};

use crate::db::{self, Db};
use crate::parse::Migration;
use crate::{Outcome, pg, secs};

pub(crate) fn baseline(db: &mut Db, files: &[Migration], version: &str) -> Result<Outcome> {
    if !files.iter().any(|m| m.version == version) {
        return Err(Error::usage(format!(
            "baseline {version}: no such migration in the directory"
        )));
    }
    let mut marked = 0;
    let mut tx = db.client.transaction().map_err(pg("baseline"))?;
    for m in files
        .iter()
        .filter(|m| !version_order(&m.version, version).is_gt())
    {
        let n = tx
            .execute(
                "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT DO NOTHING",
                &[&m.version],
            )
            .map_err(pg("baseline"))?;
        tx.execute(
            "INSERT INTO opskit_migrations (version, name, checksum, baseline) VALUES ($1, $2, $3, true) ON CONFLICT DO NOTHING",
            &[&m.version, &m.name, &m.checksum],
        )
        .map_err(pg("baseline"))?;
        marked += n;
    }
    tx.commit().map_err(pg("baseline"))?;
    db.log(
        Some(version),
        "baseline",
        true,
        &format!("{marked} versions marked applied"),
    );
    Ok(Done::new(
        Exit::Ok,
        MigrateCounts {
            baseline: Some(version.to_string()),
            marked: Some(marked),
            ..MigrateCounts::default()
        },
    ))
}

pub(crate) fn repair(
    db: &mut Db,
    files: &[Migration],
    applied: Option<&str>,
    rolled_back: Option<&str>,
    accept: Option<&str>,
    em: &mut Emitter,
) -> Result<Outcome> {
    let state = db.applied()?;
    let find = |v: &str| files.iter().find(|m| m.version == v);
    let require_dirty = |flag: &str, v: &str| {
        if state.get(v).is_some_and(|a| a.dirty) {
            Ok(())
        } else {
            Err(Error::usage(format!(
                "repair --{flag} {v}: {v} is not dirty"
            )))
        }
    };
    let (version, action, sql): (&str, RepairAction, String) = if let Some(v) = applied {
        require_dirty("applied", v)?;
        let m = find(v).ok_or_else(|| Error::usage(format!("{v}: no such migration file")))?;
        (
            v,
            RepairAction::RepairApplied,
            format!(
                "BEGIN; INSERT INTO schema_migrations (version) VALUES ({0}) ON CONFLICT DO NOTHING; \
             UPDATE opskit_migrations SET dirty = false, failed_statement = NULL, error = NULL, checksum = {1}, applied_at = now() WHERE version = {0}; COMMIT;",
                db::lit(v),
                db::lit(&m.checksum)
            ),
        )
    } else if let Some(v) = rolled_back {
        require_dirty("rolled-back", v)?;
        (
            v,
            RepairAction::RepairRolledBack,
            format!(
                "BEGIN; DELETE FROM schema_migrations WHERE version = {0}; DELETE FROM opskit_migrations WHERE version = {0}; COMMIT;",
                db::lit(v)
            ),
        )
    } else if let Some(v) = accept {
        let m = find(v).ok_or_else(|| Error::usage(format!("{v}: no such migration file")))?;
        if !state.get(v).is_some_and(|a| a.in_schema) {
            return Err(Error::usage(format!(
                "repair --accept-checksum {v}: {v} is not applied"
            )));
        }
        (
            v,
            RepairAction::RepairAcceptChecksum,
            format!(
                "UPDATE opskit_migrations SET checksum = {} WHERE version = {};",
                db::lit(&m.checksum),
                db::lit(v)
            ),
        )
    } else {
        return Err(Error::usage(
            "repair needs --applied, --rolled-back or --accept-checksum VERSION",
        ));
    };
    db.client.batch_execute(&sql).map_err(pg("repair"))?;
    db.log(Some(version), action.name(), true, "");
    em.emit(&Repair {
        ok: true,
        version: version.to_string(),
        action,
    })?;
    Ok(Done::new(
        Exit::Ok,
        MigrateCounts {
            repaired: Some(1),
            ..MigrateCounts::default()
        },
    ))
}

pub(crate) fn new_file(dir: &Path, name: &str, em: &mut Emitter) -> Result<Outcome> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Error::usage(format!(
            "invalid migration name '{name}': use letters, digits and '_'"
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, &e))?;
    let version = chrono::Utc::now().format("%Y%m%d%H%M%S").to_string();
    let path = dir.join(format!("{version}_{name}.sql"));
    let body = "-- migrate:up\n\n\n-- migrate:down\n\n";
    let mut f = opskit::durable::create_new(&path, 0o644)?;
    std::io::Write::write_all(&mut f, body.as_bytes())
        .map_err(|e| Error::io("writing", &path, &e))?;
    em.emit(&New {
        ok: true,
        version,
        path: path.display().to_string(),
    })?;
    Ok(Done::new(Exit::Ok, MigrateCounts::default()))
}

pub(crate) fn wait(spec: &ConnSpec, timeout: Duration) -> Result<Outcome> {
    let start = Instant::now();
    let mut last;
    loop {
        match spec
            .connect()
            .and_then(|mut c| c.simple_query("SELECT 1").map_err(pg("SELECT 1")))
        {
            Ok(_) => {
                return Ok(Done::new(
                    Exit::Ok,
                    MigrateCounts {
                        waited_s: Some(secs(start)),
                        ..MigrateCounts::default()
                    },
                ));
            }
            Err(e) => last = e.msg,
        }
        if start.elapsed() >= timeout {
            return Err(Error::failure(format!(
                "database not ready after {}: {last}",
                units::format_duration(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
