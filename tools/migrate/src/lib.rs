//! migrate: safe schema migrations in dbmate's file format.

mod apply;
mod db;
mod maintain;
mod parse;
mod report;
mod schema;
mod split;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::pgconn::ConnSpec;
use opskit::records::MigrateCounts;
use opskit::{Done, Emitter, Error, Exit, units};

use crate::db::{Db, Timeouts};

/// The keys of the advisory lock one migrator holds at a time (another
/// session can wait for it, or see who holds it in `pg_locks`).
pub use crate::db::LOCK_KEYS;
pub(crate) use opskit::pgconn::pg_failure as pg;

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
    /// Database URL; default: DATABASE_URL, then PG* variables. TLS settings (sslmode, sslrootcert, sslcert, sslkey, channel_binding) as in libpq.
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
    #[arg(long, global = true, value_name = "DURATION", default_value = "60s", value_parser = units::duration_arg)]
    pub lock_wait: Duration,

    /// PostgreSQL lock_timeout for migration statements (e.g. 5s), so DDL
    /// waiting for a busy table gives up instead of stalling every query.
    #[arg(long, global = true, value_name = "DURATION", value_parser = units::duration_arg)]
    pub lock_timeout: Option<Duration>,

    /// Retries of a migration that hit --lock-timeout.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    pub lock_retries: u32,

    /// PostgreSQL statement_timeout for migration statements.
    #[arg(long, global = true, value_name = "DURATION", value_parser = units::duration_arg)]
    pub statement_timeout: Option<Duration>,

    /// After `up` and `down` succeed, write the schema as dbmate does by
    /// default (migrate's default is dbmate's --no-dump-schema): the real
    /// pg_dump --schema-only, opskit's own tables left out, the applied
    /// versions appended, so a committed db/schema.sql stays current.
    #[arg(long, global = true)]
    pub dump_schema: bool,

    /// Where --dump-schema writes.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        default_value = "db/schema.sql",
        env = "DBMATE_SCHEMA_FILE"
    )]
    pub schema_file: PathBuf,

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
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = units::duration_arg)]
        timeout: Duration,
    },
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// What a migrate command hands back: its status and its summary's counts.
pub type Outcome = Done<MigrateCounts>;

pub fn run(args: Args, em: &mut Emitter) -> std::result::Result<Outcome, Error> {
    let start = Instant::now();
    if let Command::New { name } = &args.command {
        return maintain::new_file(&args.dir, name, em);
    }
    let spec = ConnSpec::resolve(args.db.as_deref())?;
    if let Command::Wait { timeout } = &args.command {
        return maintain::wait(&spec, *timeout);
    }
    let files = parse::load_dir(&args.dir)?;
    let mut db = Db::connect(&spec)?;
    let done = command(&args, &mut db, &files, em)?;
    let changed = matches!(args.command, Command::Up { .. } | Command::Down { .. });
    if args.dump_schema && changed && done.exit == Exit::Ok {
        schema::dump(&mut db, &args.schema_file)?;
    }
    log::debug!("done in {:.3}s", start.elapsed().as_secs_f64());
    Ok(done)
}

/// The commands that need the migration files and the database.
fn command(
    args: &Args,
    db: &mut Db,
    files: &[parse::Migration],
    em: &mut Emitter,
) -> std::result::Result<Outcome, Error> {
    let t = Timeouts {
        lock_timeout: args.lock_timeout,
        statement_timeout: args.statement_timeout,
        lock_retries: args.lock_retries,
    };
    let done = match &args.command {
        Command::Up {
            target,
            allow_changed,
            allow_out_of_order,
        } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            apply::up(
                db,
                files,
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
            apply::down(db, files, *n, to.as_deref(), &t, em)?
        }
        Command::Status { exit_code } => report::status(db, files, *exit_code, em)?,
        Command::Plan { direction, n } => report::plan(db, files, direction == "up", *n, em)?,
        Command::Validate => {
            let problems = apply::validate(&db.applied()?, files, false);
            apply::emit_problems(em, &problems)?;
            let exit = if problems.is_empty() {
                Exit::Ok
            } else {
                Exit::CheckFailed
            };
            Done::new(
                exit,
                MigrateCounts {
                    problems: Some(problems.len()),
                    ..MigrateCounts::default()
                },
            )
        }
        Command::Baseline { version } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            maintain::baseline(db, files, version)?
        }
        Command::Repair {
            applied,
            rolled_back,
            accept_checksum,
        } => {
            // Lock first: concurrent CREATE TABLE IF NOT EXISTS collide.
            db.lock(args.lock_wait)?;
            db.setup()?;
            maintain::repair(
                db,
                files,
                applied.as_deref(),
                rolled_back.as_deref(),
                accept_checksum.as_deref(),
                em,
            )?
        }
        Command::New { .. } | Command::Wait { .. } => unreachable!(),
    };
    Ok(done)
}

/// Seconds since `t`, to the millisecond.
pub(crate) fn secs(t: Instant) -> f64 {
    opskit::record::secs(t.elapsed())
}
