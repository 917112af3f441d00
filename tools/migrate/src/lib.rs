//! migrate: safe schema migrations in dbmate's file format.

pub mod db;
pub mod parse;
pub mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::pgconn::ConnSpec;
use opskit::{Emitter, Error, Exit, Result, fields, units};

use crate::db::{Applied, Db, Timeouts};
use crate::parse::{Migration, version_order};

/// Apply SQL migrations (dbmate's format) safely: one migrator at a time,
/// each migration and its bookkeeping in one transaction, transaction:false
/// sections run statement by statement, drift and out-of-order refused.
///
/// Files: DIR/<version>_<name>.sql with '-- migrate:up' and '-- migrate:down'
/// sections. Applied versions are kept in schema_migrations exactly as
/// dbmate keeps them, so either tool can take over from the other.
///
/// Exit: 0 done, 1 a migration failed or validation found a problem (or,
/// with status --exit-code, migrations are pending), 2 could not run
/// (database unreachable, lock not obtained), 64 usage or a bad file.
#[derive(Debug, Parser)]
#[command(name = "migrate", version, verbatim_doc_comment)]
pub struct Args {
    /// Database URL; default: DATABASE_URL, then PG* variables.
    #[arg(long, global = true, value_name = "URL")]
    pub db: Option<String>,

    /// Directory of migration files.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "db/migrations"
    )]
    pub dir: PathBuf,

    /// How long to wait for another migrate holding the lock.
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub lock_wait: Duration,

    /// PostgreSQL lock_timeout for migration statements (e.g. 5s), so DDL
    /// waiting for a busy table gives up instead of stalling every query.
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub lock_timeout: Option<Duration>,

    /// Retries of a migration that hit --lock-timeout.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    pub lock_retries: u32,

    /// PostgreSQL statement_timeout for migration statements.
    #[arg(long, global = true, value_name = "DURATION", value_parser = duration)]
    pub statement_timeout: Option<Duration>,

    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (all, or up to --target).
    Up {
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Go on although applied migration files changed or disappeared.
        #[arg(long)]
        allow_changed: bool,
        /// Apply pending migrations older than the newest applied one.
        #[arg(long)]
        allow_out_of_order: bool,
    },
    /// Roll back the newest N applied migrations (default 1), or down to --to.
    Down {
        #[arg(value_name = "N", conflicts_with = "to")]
        n: Option<usize>,
        /// Roll back every migration newer than VERSION.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
    },
    /// One record per migration: applied or pending, checksum.
    Status {
        /// Exit 1 when migrations are pending.
        #[arg(long)]
        exit_code: bool,
    },
    /// Write DIR/<UTC timestamp>_<name>.sql.
    New { name: String },
    /// What `up` (or `down N`) would run, touching nothing.
    Plan {
        #[arg(value_parser = ["up", "down"], default_value = "up")]
        direction: String,
        /// For `down`: how many.
        #[arg(default_value_t = 1)]
        n: usize,
    },
    /// Check applied files against the database: changed, missing, out of order.
    Validate,
    /// Mark every migration up to VERSION as applied without running it.
    Baseline { version: String },
    /// After a human fixed a failed transaction:false migration: record it
    /// as --applied or --rolled-back; or --accept-checksum of a changed file.
    Repair {
        #[arg(long, value_name = "VERSION", group = "what")]
        applied: Option<String>,
        #[arg(long, value_name = "VERSION", group = "what")]
        rolled_back: Option<String>,
        #[arg(long, value_name = "VERSION", group = "what")]
        accept_checksum: Option<String>,
    },
    /// Wait until the database accepts connections.
    Wait {
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
}

fn duration(s: &str) -> std::result::Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.msg)
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

pub fn run(args: Args, em: &mut Emitter) -> std::result::Result<Exit, Error> {
    let start = Instant::now();
    if let Command::New { name } = &args.command {
        return new_file(&args.dir, name, em);
    }
    let spec = ConnSpec::resolve(args.db.as_deref())?;
    if let Command::Wait { timeout } = &args.command {
        return wait(&spec, *timeout, em);
    }
    let files = parse::load_dir(&args.dir)?;
    let mut db = Db::connect(&spec)?;
    let t = Timeouts {
        lock_timeout: args.lock_timeout,
        statement_timeout: args.statement_timeout,
        lock_retries: args.lock_retries,
    };
    let exit = match &args.command {
        Command::Up {
            target,
            allow_changed,
            allow_out_of_order,
        } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            up(
                &mut db,
                &files,
                target.as_deref(),
                *allow_changed,
                *allow_out_of_order,
                &t,
                em,
            )?
        }
        Command::Down { n, to } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            down(&mut db, &files, *n, to.as_deref(), &t, em)?
        }
        Command::Status { exit_code } => status(&mut db, &files, *exit_code, em)?,
        Command::Plan { direction, n } => plan(&mut db, &files, direction == "up", *n, em)?,
        Command::Validate => {
            let problems = validate(&db.applied()?, &files, false);
            for p in &problems {
                em.emit(
                    "validate",
                    &fields! {"ok" => false, "version" => p.0, "problem" => p.1},
                );
            }
            em.emit(
                "summary",
                &fields! {"ok" => problems.is_empty(), "problems" => problems.len()},
            );
            if problems.is_empty() {
                Exit::Ok
            } else {
                Exit::CheckFailed
            }
        }
        Command::Baseline { version } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            baseline(&mut db, &files, version, em)?
        }
        Command::Repair {
            applied,
            rolled_back,
            accept_checksum,
        } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            repair(
                &mut db,
                &files,
                applied.as_deref(),
                rolled_back.as_deref(),
                accept_checksum.as_deref(),
                em,
            )?
        }
        Command::New { .. } | Command::Wait { .. } => unreachable!(),
    };
    log::debug!("done in {:.3}s", start.elapsed().as_secs_f64());
    Ok(exit)
}

fn pg(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| Error::failure(format!("{what}: {}", opskit::pgconn::describe_pg_error(&e)))
}

/// Problems that make `up` refuse and `validate` fail: (version, what).
fn validate(
    applied: &BTreeMap<String, Applied>,
    files: &[Migration],
    allow_out_of_order: bool,
) -> Vec<(String, String)> {
    let by_version: BTreeMap<&str, &Migration> =
        files.iter().map(|m| (m.version.as_str(), m)).collect();
    let mut out = Vec::new();
    for (v, a) in applied {
        if a.dirty {
            out.push((v.clone(), format!(
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
            None => out.push((v.clone(), "applied, but its file is missing".into())),
            Some(m) => {
                if let Some(c) = &a.checksum
                    && *c != m.checksum
                {
                    out.push((
                        v.clone(),
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
                out.push((m.version.clone(), format!("pending, but older than the newest applied {newest} (out of order; --allow-out-of-order)")));
            }
        }
    }
    out
}

fn up(
    db: &mut Db,
    files: &[Migration],
    target: Option<&str>,
    allow_changed: bool,
    allow_ooo: bool,
    t: &Timeouts,
    em: &mut Emitter,
) -> Result<Exit> {
    let start = Instant::now();
    let mut applied = db.applied()?;
    adopt(db, files, &mut applied)?;
    if let Some(tv) = target
        && !files.iter().any(|m| m.version == tv)
    {
        return Err(Error::usage(format!(
            "--target {tv}: no such migration in the directory"
        )));
    }
    let problems: Vec<(String, String)> = validate(&applied, files, allow_ooo)
        .into_iter()
        .filter(|(_, p)| {
            !(allow_changed && (p.contains("changed after") || p.contains("file is missing")))
        })
        .collect();
    if !problems.is_empty() {
        for p in &problems {
            em.emit(
                "validate",
                &fields! {"ok" => false, "version" => p.0, "problem" => p.1},
            );
        }
        em.emit(
            "summary",
            &fields! {"ok" => false, "applied" => 0, "problems" => problems.len()},
        );
        log::error!(
            "refusing to migrate: {}",
            problems
                .iter()
                .map(|p| format!("{}: {}", p.0, p.1))
                .collect::<Vec<_>>()
                .join("; ")
        );
        return Ok(Exit::CheckFailed);
    }
    let pending: Vec<&Migration> = files
        .iter()
        .filter(|m| !applied.get(&m.version).is_some_and(|a| a.in_schema))
        .filter(|m| target.is_none_or(|tv| !version_order(&m.version, tv).is_gt()))
        .collect();
    apply(db, &pending, true, t, em, start)
}

/// Run `steps` in order, one `migration` record each, stopping at the first
/// failure; then the summary.
fn apply(
    db: &mut Db,
    steps: &[&Migration],
    up: bool,
    t: &Timeouts,
    em: &mut Emitter,
    start: Instant,
) -> Result<Exit> {
    let (dir, count_key) = if up {
        ("up", "applied")
    } else {
        ("down", "rolled_back")
    };
    let mut done = 0;
    for m in steps {
        let t0 = Instant::now();
        let res = db.run(m, up, t);
        let (ok, n, msg) = match &res {
            Ok(n) => (true, *n, None),
            Err(f) => (false, 0, Some(f.message.as_str())),
        };
        // A success is logged inside the migration's own transaction.
        if let Some(msg) = msg {
            db.log(Some(&m.version), dir, false, msg);
        }
        em.emit("migration", &record(m, dir, n, t0, ok, msg));
        if let Some(msg) = msg {
            log::error!("{msg}");
            em.emit("summary", &fields! {"ok" => false, count_key => done, "failed" => 1, "duration_s" => secs(start)});
            return Ok(Exit::CheckFailed);
        }
        done += 1;
    }
    em.emit(
        "summary",
        &fields! {"ok" => true, count_key => done, "failed" => 0, "duration_s" => secs(start)},
    );
    Ok(Exit::Ok)
}

/// Versions dbmate applied (in schema_migrations, unknown to opskit) get a
/// companion row with the file's checksum: the takeover needs no manual step.
fn adopt(db: &mut Db, files: &[Migration], applied: &mut BTreeMap<String, Applied>) -> Result<()> {
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

fn down(
    db: &mut Db,
    files: &[Migration],
    n: Option<usize>,
    to: Option<&str>,
    t: &Timeouts,
    em: &mut Emitter,
) -> Result<Exit> {
    let start = Instant::now();
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
    apply(db, &steps, false, t, em, start)
}

fn record(
    m: &Migration,
    direction: &str,
    statements: usize,
    t0: Instant,
    ok: bool,
    err: Option<&str>,
) -> opskit::record::Fields {
    let mut f = fields! {
        "ok" => ok,
        "version" => m.version,
        "name" => m.name,
        "direction" => direction,
        "statements" => statements,
        "duration_s" => secs(t0),
    };
    if let Some(e) = err {
        f.insert("message".into(), serde_json::json!(e));
    }
    f
}

fn secs(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

fn status(db: &mut Db, files: &[Migration], exit_code: bool, em: &mut Emitter) -> Result<Exit> {
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
            (Some(m), Some(c)) if is_applied => serde_json::json!(*c == m.checksum),
            _ => serde_json::Value::Null,
        };
        em.emit(
            "status",
            &fields! {
                "version" => v,
                "name" => m.map(|m| m.name.clone()).or_else(|| a.and_then(|a| a.name.clone())),
                "applied" => is_applied,
                "applied_at" => a.and_then(|a| a.applied_at.clone()),
                "checksum_ok" => checksum_ok,
                "dirty" => a.is_some_and(|a| a.dirty),
                "file_missing" => m.is_none(),
            },
        );
    }
    em.emit("summary", &fields! {"ok" => pending == 0 || !exit_code, "applied" => applied.values().filter(|a| a.in_schema).count(), "pending" => pending});
    Ok(if exit_code && pending > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    })
}

fn plan(db: &mut Db, files: &[Migration], up: bool, n: usize, em: &mut Emitter) -> Result<Exit> {
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
        em.emit(
            "plan",
            &fields! {
                "version" => m.version,
                "name" => m.name,
                "direction" => if up { "up" } else { "down" },
                "statements" => s.map(|s| split::statements(&s.sql).len()).unwrap_or(0),
                "transaction" => s.map(|s| s.transaction).unwrap_or(true),
                "file" => m.file.display().to_string(),
            },
        );
    }
    em.emit(
        "summary",
        &fields! {"ok" => true, "planned" => chosen.len()},
    );
    Ok(Exit::Ok)
}

fn baseline(db: &mut Db, files: &[Migration], version: &str, em: &mut Emitter) -> Result<Exit> {
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
    em.emit(
        "summary",
        &fields! {"ok" => true, "baseline" => version, "marked" => marked},
    );
    Ok(Exit::Ok)
}

fn repair(
    db: &mut Db,
    files: &[Migration],
    applied: Option<&str>,
    rolled_back: Option<&str>,
    accept: Option<&str>,
    em: &mut Emitter,
) -> Result<Exit> {
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
    let (version, action, sql): (&str, &str, String) = if let Some(v) = applied {
        require_dirty("applied", v)?;
        let m = find(v).ok_or_else(|| Error::usage(format!("{v}: no such migration file")))?;
        (
            v,
            "repair-applied",
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
            "repair-rolled-back",
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
            "repair-accept-checksum",
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
    db.log(Some(version), action, true, "");
    em.emit(
        "repair",
        &fields! {"ok" => true, "version" => version, "action" => action},
    );
    em.emit("summary", &fields! {"ok" => true, "repaired" => 1});
    Ok(Exit::Ok)
}

fn new_file(dir: &Path, name: &str, em: &mut Emitter) -> Result<Exit> {
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
    em.emit(
        "new",
        &fields! {"ok" => true, "version" => version, "path" => path.display().to_string()},
    );
    em.emit("summary", &fields! {"ok" => true});
    Ok(Exit::Ok)
}

fn wait(spec: &ConnSpec, timeout: Duration, em: &mut Emitter) -> Result<Exit> {
    let start = Instant::now();
    let mut last;
    loop {
        match spec
            .connect()
            .and_then(|mut c| c.simple_query("SELECT 1").map_err(pg("SELECT 1")))
        {
            Ok(_) => {
                em.emit(
                    "summary",
                    &fields! {"ok" => true, "waited_s" => secs(start)},
                );
                return Ok(Exit::Ok);
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
