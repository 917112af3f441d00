//! pgbackup: write one verified-by-construction backup set.
//!
//! A set is `<dest>/<name>-<UTC YYYYmmddTHHMMSSZ>/` with the database dump
//! (the real `pg_dump`), optional globals and files archives, a
//! `MANIFEST.json` and a `SHA256SUMS`. It is built under a hidden temporary
//! name and renamed into place only when every file in it is complete and
//! fsynced; any failure leaves no set and no temporary directory.

pub mod dump;
pub mod files;
pub mod sink;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use clap::Parser;
use opskit::backupset::{self, DatabaseInfo, FileEntry, Manifest};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::durable::{self, StagingDir};
use opskit::gz::GzOptions;
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::{Emitter, Error, Exit, IoContext, Result, fields, lock, units};

use crate::dump::{DumpOptions, Format, SnapshotCounts};

/// Write a PostgreSQL backup set: the database dump, optional globals and
/// directory archives, a manifest and SHA256SUMS, built atomically.
///
/// The set appears as DEST/NAME-YYYYmmddTHHMMSSZ only once every file in
/// it is complete and on disk; a failed run leaves nothing behind. Prints a
/// `backup` record and a `summary` on stdout; pipe it into verify-backup.
///
/// Restore: the manifest's database.restore_command, e.g.
///   createdb app_restored && gunzip -c db.dump.gz | pg_restore --no-owner --exit-on-error --dbname=app_restored
#[derive(Debug, Parser)]
#[command(name = "pgbackup", version, verbatim_doc_comment)]
pub struct Args {
    /// Backup root: sets are created inside it (created 0700 if missing).
    #[arg(long, value_name = "DIR", env = "OPSKIT_BACKUP_ROOT")]
    pub dest: PathBuf,

    /// Database URL (postgres://user@host:port/db); default: DATABASE_URL, then PG* variables.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,

    /// Set name prefix (default: the database name).
    #[arg(long)]
    pub name: Option<String>,

    /// Also archive this directory into the set (repeatable).
    #[arg(long = "files", value_name = "PATH")]
    pub files: Vec<PathBuf>,

    /// Leave out matching paths from --files archives (repeatable): a
    /// pattern without '/' matches names anywhere, one with '/' the path
    /// relative to the archived directory.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,

    /// Skip files and directories that cannot be read instead of failing.
    #[arg(long)]
    pub skip_unreadable: bool,

    /// Also dump roles and tablespaces (pg_dumpall --globals-only).
    #[arg(long)]
    pub globals: bool,

    /// Record exact per-table row counts, taken in the dump's own snapshot.
    #[arg(long)]
    pub row_counts: bool,

    /// Dump format.
    #[arg(long, value_enum, default_value = "custom")]
    pub format: Format,

    /// gzip level 1-9 for every file of the set; 0 stores them uncompressed.
    #[arg(long, value_name = "LEVEL", default_value_t = 6, value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compress: u32,

    /// Compression threads (default: every core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,

    /// Do not dump object ownership (pg_dump --no-owner).
    #[arg(long)]
    pub no_owner: bool,

    /// Do not dump privileges (pg_dump --no-privileges).
    #[arg(long)]
    pub no_privileges: bool,

    /// Extra argument for pg_dump, e.g. --pg-dump-arg=--exclude-table-data=audit_log (repeatable).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub pg_dump_arg: Vec<String>,

    /// Directory of pg_dump/pg_dumpall to use (default: the installed
    /// version matching the server, or the oldest newer one).
    #[arg(long, value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,

    /// Wait this long for another pgbackup or prune on the same DEST (default: fail at once).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub lock_wait: Duration,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.msg)
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// Run pgbackup.
pub fn run(args: Args, em: &mut Emitter) -> std::result::Result<Exit, Error> {
    let start = Instant::now();
    if let Some(n) = &args.name
        && !backupset::valid_name(n)
    {
        return Err(Error::usage(format!(
            "invalid --name '{n}': use letters, digits, '.', '_' and '-', not starting with '.'"
        )));
    }
    let excludes = files::Excludes::new(&args.exclude)?;
    for f in &args.files {
        if !f.is_dir() {
            return Err(Error::usage(format!(
                "--files {}: not a directory",
                f.display()
            )));
        }
    }
    let spec = ConnSpec::resolve(args.db.as_deref())?;
    let root = prepare_root(&args.dest)?;
    let _lock = lock::acquire(&root.join(backupset::LOCK_FILE), args.lock_wait)?;
    remove_leftovers(&root);

    let mut client = spec.connect()?;
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_database()",
            &[],
        )
        .map_err(|e| Error::failure(format!("querying {}: {}", spec.target(), describe_pg_error(&e))))?;
    let server_version: String = row.get(0);
    let server_num: i32 = row.get(1);
    let dbname: String = row.get(2);
    let major = opskit::pgtools::major_of_num(server_num as u32);
    let pg_dump =
        opskit::pgtools::find("pg_dump", major, &server_version, args.pg_bindir.as_deref())?;
    log::info!(
        "backing up {} (PostgreSQL {server_version}) with {} {}",
        spec.redacted(),
        pg_dump.path.display(),
        pg_dump.version
    );

    let name = args
        .name
        .clone()
        .unwrap_or_else(|| backupset::sanitize_name(&dbname, "db"));
    let (started_at, stage) = new_stage(&root, &name)?;
    let gz = (args.compress > 0).then(|| GzOptions {
        level: args.compress,
        threads: args
            .jobs
            .map(usize::from)
            .unwrap_or_else(opskit::gz::default_threads),
        ..GzOptions::default()
    });

    let opts = DumpOptions {
        spec: &spec,
        pg_dump: &pg_dump,
        format: args.format,
        no_owner: args.no_owner,
        no_privileges: args.no_privileges,
        extra_args: &args.pg_dump_arg,
        gz,
    };
    let mut entries: Vec<FileEntry> = Vec::new();
    let row_counts = if args.row_counts {
        let counting = SnapshotCounts::start(client)?;
        let res = dump::dump(&opts, stage.path(), Some(&counting.snapshot));
        // pg_dump's failure is the one to report; the counts only matter
        // when the dump worked.
        let db_entry = res?;
        let (c, counts) = counting.finish()?;
        client = c;
        entries.push(db_entry);
        Some(counts)
    } else {
        entries.push(dump::dump(&opts, stage.path(), None)?);
        None
    };
    let db_file = entries[0].name.clone();

    if args.globals {
        let pg_dumpall = opskit::pgtools::find(
            "pg_dumpall",
            major,
            &server_version,
            args.pg_bindir.as_deref(),
        )?;
        entries.push(dump::globals(
            &spec,
            &pg_dumpall,
            &mut client,
            stage.path(),
            gz,
        )?);
    }
    drop(client);

    // Archives are gzip even with --compress 0 (level 0, stored), so the
    // .tar.gz name stays honest.
    let tar_gz = gz.unwrap_or(GzOptions {
        level: 0,
        ..GzOptions::default()
    });
    for src in &args.files {
        let taken: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        let name = files::archive_name(src, &taken);
        let src = src.canonicalize().at("resolving", src)?;
        log::info!("archiving {} into {name}", src.display());
        entries.push(files::archive(
            &src,
            stage.path(),
            &name,
            &excludes,
            args.skip_unreadable,
            tar_gz,
        )?);
    }

    let finished_at = Utc::now().trunc_subsecs(3);
    let set_name = stage
        .dest()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let manifest = Manifest {
        format: backupset::FORMAT.into(),
        set: set_name.clone(),
        name,
        tool: "pgbackup".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        finished_at,
        duration_s: opskit::record::secs(start.elapsed()),
        database: Some(DatabaseInfo {
            name: dbname.clone(),
            server: spec.target(),
            server_version: server_version.clone(),
            server_version_num: server_num as u32,
            pg_dump_version: pg_dump.version.clone(),
            format: match args.format {
                Format::Custom => "custom".into(),
                Format::Plain => "plain".into(),
            },
            restore_command: dump::restore_command(args.format, &db_file),
            file: db_file,
            row_counts,
        }),
        files: entries,
    };
    write_manifest(stage.path(), &manifest)?;
    let set_path = stage.commit()?;

    let total: u64 = manifest.files.iter().map(|e| e.bytes).sum();
    let duration_s = opskit::record::secs(start.elapsed());
    log::info!(
        "wrote {} ({}) in {duration_s:.1}s",
        set_path.display(),
        units::format_size(total)
    );
    let files_out: Vec<serde_json::Value> = manifest
        .files
        .iter()
        .map(|e| serde_json::json!({"name": e.name, "kind": e.kind, "bytes": e.bytes, "sha256": e.sha256}))
        .collect();
    em.emit(
        "backup",
        &fields! {
            "ok" => true,
            "set" => set_name,
            "path" => set_path.display().to_string(),
            "database" => dbname,
            "server_version" => server_version,
            "files" => files_out,
            "bytes" => total,
            "duration_s" => duration_s,
        },
    );
    em.emit(
        "summary",
        &fields! {"ok" => true, "sets" => 1, "failed" => 0, "bytes" => total, "duration_s" => duration_s},
    );
    Ok(Exit::Ok)
}

/// Create the backup root (0700) if missing and resolve it.
fn prepare_root(dest: &Path) -> Result<PathBuf> {
    if !dest.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest)
            .at("creating backup root", dest)?;
    }
    let root = dest.canonicalize().at("resolving", dest)?;
    if !root.is_dir() {
        return Err(Error::usage(format!(
            "--dest {}: not a directory",
            dest.display()
        )));
    }
    Ok(root)
}

/// Remove what interrupted runs left behind. Called under the lock, so no
/// other pgbackup is writing into the root.
fn remove_leftovers(root: &Path) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((set, pid)) = durable::parse_temp_name(&name) {
            let path = e.path();
            log::warn!(
                "removing {} left by an interrupted run (pid {pid}, set {set} was never completed)",
                path.display()
            );
            let res = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            if let Err(err) = res {
                log::warn!("could not remove {}: {err}", path.display());
            }
        }
    }
}

/// The set's staging directory, named for the current second; a set of
/// the same name (a run within the same second) waits for the next one.
fn new_stage(root: &Path, name: &str) -> Result<(chrono::DateTime<Utc>, StagingDir)> {
    for _ in 0..3 {
        let now = Utc::now().trunc_subsecs(0);
        let dest = root.join(backupset::set_dir_name(name, now));
        if dest.symlink_metadata().is_err() {
            return Ok((now, StagingDir::create(&dest, 0o700)?));
        }
        std::thread::sleep(Duration::from_millis(
            1000 - Utc::now().timestamp_subsec_millis() as u64 % 1000,
        ));
    }
    Err(Error::failure(format!(
        "a set named {name} for this second already exists in {}",
        root.display()
    )))
}

/// `MANIFEST.json` then `SHA256SUMS` (which also covers the manifest), each
/// 0600 and fsynced.
fn write_manifest(dir: &Path, m: &Manifest) -> Result<()> {
    let mut text =
        serde_json::to_string_pretty(m).map_err(|e| Error::failure(format!("manifest: {e}")))?;
    text.push('\n');
    let mpath = dir.join(backupset::MANIFEST);
    write_synced(&mpath, text.as_bytes())?;
    let mut sums: Vec<(String, String)> = m
        .files
        .iter()
        .map(|f| (f.name.clone(), f.sha256.clone()))
        .collect();
    sums.push((
        backupset::MANIFEST.into(),
        opskit::gz::sha256_hex(text.as_bytes()),
    ));
    write_synced(
        &dir.join(backupset::SUMS),
        backupset::sums_text(&sums).as_bytes(),
    )
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = durable::create_new(path, 0o600)?;
    f.write_all(bytes).at("writing", path)?;
    durable::sync_file(&f, path)
}
