//! pgbackup: write one verified-by-construction backup set.
//!
//! A set is `<dest>/<name>-<UTC YYYYmmddTHHMMSSZ>/` with the database dump
//! (the real `pg_dump`), optional globals and files archives, a
//! `MANIFEST.json` and a `SHA256SUMS`. It is built under a hidden temporary
//! name and renamed into place only when every file in it is complete and
//! fsynced; any failure leaves no set and no temporary directory.

pub(crate) mod dump;
pub(crate) mod files;
mod finish;
pub(crate) mod incremental;
pub(crate) mod physical;
pub(crate) mod sink;
mod standby;

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use chrono::{SubsecRound, Utc};
use clap::Parser;
use opskit::backupset::{self, DatabaseInfo, FileEntry, FileKind};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::codec::Compression;
use opskit::crypt::Recipients;
use opskit::durable::{self, StagingDir};
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::pgtools::{self, PgTool};
use opskit::records::BackupCounts;
use opskit::sign::SigningKey;
use opskit::{Done, Emitter, Error, IoContext, Result, lock, units};
use postgres::Client;

use crate::dump::{DumpOptions, Format, SnapshotCounts};
use crate::finish::NewSet;
use crate::sink::{Encoding, Sink};

/// Write a PostgreSQL backup set: the database dump, optional globals and
/// directory archives, a manifest and SHA256SUMS, built atomically.
///
/// The set appears as DEST/NAME-YYYYmmddTHHMMSSZ only once every file in
/// it is complete and on disk; a failed run leaves nothing behind. Prints a
/// `backup` record and a `summary` on stdout; pipe it into verify-backup.
///
/// With --encrypt-to (or OPSKIT_AGE_RECIPIENTS) every file is encrypted to
/// age public keys as it streams (db.dump.zst.age); the identity that
/// decrypts stays off this server. MANIFEST.json and SHA256SUMS stay
/// readable and hold nothing from inside the database (row counts go into
/// the encrypted contents.json.age).
///
/// With --physical the set is a base backup of the whole cluster instead
/// (the real pg_basebackup, base.tar.zst with its backup_manifest and the
/// WAL to make it consistent), named NAME-base: with walarchive archiving
/// WAL it is what a point-in-time restore starts from
/// (restore-system.sh --to TIME). Needs a role with REPLICATION.
///
/// Restore: the manifest's database.restore_command, e.g.
///   createdb app_restored && zstd -dc db.dump.zst | pg_restore --no-owner --exit-on-error --dbname=app_restored
/// (`gunzip -c db.dump.gz | ...` for a set made with --compress gzip;
/// `age -d -i "$AGE_IDENTITY" db.dump.zst.age | zstd -dc | ...` encrypted).
#[derive(Debug, Parser)]
#[command(name = "pgbackup", version, verbatim_doc_comment)]
pub struct Args {
    /// Backup root: sets are created inside it (created 0700 if missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "OPSKIT_BACKUP_ROOT",
        required_unless_present = "new_signing_key"
    )]
    pub dest: Option<PathBuf>,

    /// Database URL (postgres://user@host:port/db); default: DATABASE_URL, then PG* variables. TLS settings (sslmode, sslrootcert, sslcert, sslkey, channel_binding) as in libpq.
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

    /// A base backup of the whole cluster (pg_basebackup) instead of a dump
    /// of one database: the start of point-in-time recovery.
    #[arg(long, conflicts_with_all = ["format", "globals", "row_counts", "pg_dump_arg", "no_owner", "no_privileges"])]
    pub physical: bool,

    /// With --physical (PostgreSQL 17+, summarize_wal = on): only what
    /// changed since the parent, the newest verified base set of the same
    /// name (pg_basebackup --incremental); restoring it needs its whole
    /// chain. Without a usable parent (none verified, another timeline,
    /// WAL summaries gone) a full set is taken and the `backup` record says
    /// why (`fallback`).
    #[arg(long, requires = "physical")]
    pub incremental: bool,

    /// With --incremental: the parent, a set of the same root (name or path).
    #[arg(long, value_name = "SET", requires = "incremental")]
    pub parent: Option<String>,

    /// With --incremental: a full set once the chain's full set is this
    /// old (7d, 36h; backup-system.sh gives OPSKIT_BASE_FULL_EVERY), so a
    /// restore never combines more than that many days of sets.
    #[arg(long, value_name = "DURATION", requires = "incremental", value_parser = opskit::units::duration_arg)]
    pub full_every: Option<std::time::Duration>,

    /// With --incremental: on a server older than 17, take a full set
    /// (with a `fallback` reason) instead of refusing (exit 64).
    #[arg(long, requires = "incremental")]
    pub fallback_full: bool,

    /// With --physical: the checkpoint that starts the backup.
    #[arg(long, value_enum, default_value = "fast", requires = "physical")]
    pub checkpoint: physical::Checkpoint,

    /// Compression of every file of the set: zstd[:1-19] (the default, level
    /// 1: standard zstd frames, `zstd -dc` reads them), gzip[:1-9] (6 when
    /// no level is given; for readers that only have gzip), or none. A bare
    /// number is a gzip level, as before (0 = none).
    #[arg(long, value_name = "CODEC[:LEVEL]", default_value = "zstd", value_parser = Compression::parse)]
    pub compress: Compression,

    /// Encrypt every file of the set to this age public key (age1…, from
    /// `age-keygen -y`; repeatable; OPSKIT_AGE_RECIPIENTS takes several
    /// separated by spaces). Give an offline recovery key and the on-call
    /// team's key; any one of their identities decrypts.
    #[arg(long, value_name = "RECIPIENT", env = "OPSKIT_AGE_RECIPIENTS")]
    pub encrypt_to: Vec<String>,

    /// Encrypt to the keys in this age recipients file (one `age1…` a line,
    /// `#` comments; repeatable).
    #[arg(long, value_name = "FILE", env = "OPSKIT_AGE_RECIPIENTS_FILE")]
    pub encrypt_to_file: Vec<PathBuf>,

    /// Sign each set's MANIFEST.json with this minisign secret key
    /// (unencrypted, mode 0600: `minisign -G -W`, or
    /// --new-signing-key). Readers check it against OPSKIT_SIGNING_PUBKEYS
    /// and refuse a set that is unsigned or signed by another key.
    #[arg(long, value_name = "FILE", env = "OPSKIT_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// Make a new signing key pair instead of a set: FILE (the secret key,
    /// 0600, never overwritten) and FILE.pub; prints the public key line
    /// to give readers as OPSKIT_SIGNING_PUBKEYS.
    #[arg(long, value_name = "FILE")]
    pub new_signing_key: Option<PathBuf>,

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
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::duration_arg)]
    pub lock_wait: Duration,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// Run pgbackup: check the arguments, connect, dump into a staging
/// directory, write the manifest, rename the set into place, report.
pub fn run(args: Args, em: &mut Emitter) -> Result<Done<BackupCounts>> {
    let start = Instant::now();
    if let Some(path) = &args.new_signing_key {
        return new_signing_key(path);
    }
    let excludes = check_args(&args)?;
    let enc = Encoding {
        compression: compression_of(&args),
        seal: Recipients::gather(&args.encrypt_to, &args.encrypt_to_file)?,
    };
    let signer = signing_key(&args)?;
    let spec = ConnSpec::resolve(args.db.as_deref())?;
    let root = prepare_root(args.dest.as_deref().expect("clap requires --dest"))?;
    let _lock = lock::acquire(&root.join(backupset::LOCK_FILE), args.lock_wait)?;
    remove_leftovers(&root);

    let mut client = spec.connect()?;
    if args.physical {
        let ctx = Ctx {
            args: &args,
            excludes: &excludes,
            spec: &spec,
            root: &root,
            enc: &enc,
            signer: signer.as_ref(),
            start,
        };
        return physical::run(&ctx, client, em);
    }
    let server = Server::query(&mut client, &spec, args.pg_bindir.as_deref())?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| backupset::sanitize_name(&server.dbname, "db"));
    let (started_at, stage) = new_stage(&root, &name)?;

    let conflicts = standby::Conflicts::before(&mut client);
    let (mut entries, mut row_counts, client) =
        dump_database(&args, &spec, &server, client, stage.path(), &enc).map_err(|e| {
            match &conflicts {
                Some(c) => c.explain(&spec, e),
                None => e,
            }
        })?;
    let db_file = entries[0].name.clone();
    if args.globals {
        entries.push(dump_globals(
            &args,
            &spec,
            &server,
            client,
            stage.path(),
            &enc,
        )?);
    }
    archive_files(&args, &excludes, &mut entries, stage.path(), &enc)?;
    if enc.seal.is_some() && row_counts.is_some() {
        entries.push(seal_contents(stage.path(), &enc, row_counts.take())?);
    }

    let set = NewSet {
        stage,
        name,
        started_at,
        start,
        signer: signer.as_ref(),
        fallback: None,
    };
    let database = Some(server.info(args.format, db_file, row_counts));
    set.finish(database, None, &enc, entries, em)
}

/// The signing key, or a warning that the set will be unsigned.
fn signing_key(args: &Args) -> Result<Option<SigningKey>> {
    let key = SigningKey::from_arg(args.signing_key.as_deref())?;
    if key.is_none() {
        log::warn!(
            "no signing key (--signing-key or OPSKIT_SIGNING_KEY): the set is not signed, and readers refuse it unless told --allow-unsigned"
        );
    }
    Ok(key)
}

/// `--new-signing-key FILE`: FILE and FILE.pub, neither overwritten.
fn new_signing_key(path: &Path) -> Result<Done<BackupCounts>> {
    use std::io::Write;
    let (sk, pk) = opskit::sign::generate("opskit signing key (pgbackup --new-signing-key)")?;
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    for (p, text, mode) in [(path, &sk, 0o600), (pub_path.as_path(), &pk, 0o644)] {
        let mut f = durable::create_new(p, mode)?;
        f.write_all(text.as_bytes()).at("writing", p)?;
        durable::sync_file(&f, p)?;
    }
    log::info!(
        "wrote the signing key {} (keep it 0600, readable only by the user that runs pgbackup or walarchive push) and its public key {}: give readers OPSKIT_SIGNING_PUBKEYS={}",
        path.display(),
        pub_path.display(),
        opskit::sign::public_line(&pk)
    );
    let none = BackupCounts {
        sets: 0,
        failed: 0,
        bytes: 0,
    };
    Ok(Done::new(opskit::Exit::Ok, none))
}

/// What a base set is made from.
pub(crate) struct Ctx<'a> {
    pub args: &'a Args,
    pub excludes: &'a files::Excludes,
    pub spec: &'a ConnSpec,
    pub root: &'a Path,
    pub enc: &'a Encoding,
    pub signer: Option<&'a SigningKey>,
    pub start: Instant,
}

/// The arguments that clap cannot check: the set name, the exclude
/// patterns, the directories to archive.
fn check_args(args: &Args) -> Result<files::Excludes> {
    if let Some(n) = &args.name
        && !backupset::valid_name(n)
    {
        return Err(Error::usage(format!(
            "invalid --name '{n}': use letters, digits, '.', '_' and '-', not starting with '.'"
        )));
    }
    for f in &args.files {
        if !f.is_dir() {
            return Err(Error::usage(format!(
                "--files {}: not a directory",
                f.display()
            )));
        }
    }
    files::Excludes::new(&args.exclude)
}

/// The server being backed up, and the pg_dump that matches it.
struct Server {
    /// Where it is, redacted (`host:port` or socket).
    target: String,
    version: String,
    version_num: u32,
    dbname: String,
    major: u32,
    pg_dump: PgTool,
}

impl Server {
    fn query(client: &mut Client, spec: &ConnSpec, bindir: Option<&Path>) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_database()",
                &[],
            )
            .map_err(|e| Error::failure(format!("querying {}: {}", spec.target(), describe_pg_error(&e))))?;
        let version: String = row.get(0);
        let version_num = row.get::<_, i32>(1) as u32;
        let major = pgtools::major_of_num(version_num);
        let pg_dump = pgtools::find("pg_dump", major, &version, bindir)?;
        log::info!(
            "backing up {} (PostgreSQL {version}) with {} {}",
            spec.redacted(),
            pg_dump.path.display(),
            pg_dump.version
        );
        Ok(Server {
            target: spec.target(),
            version,
            version_num,
            dbname: row.get(2),
            major,
            pg_dump,
        })
    }

    /// The manifest's database part.
    fn info(&self, format: Format, file: String, row_counts: Option<RowCounts>) -> DatabaseInfo {
        DatabaseInfo {
            name: self.dbname.clone(),
            server: self.target.clone(),
            server_version: self.version.clone(),
            server_version_num: self.version_num,
            pg_dump_version: self.pg_dump.version.clone(),
            format,
            restore_command: dump::restore_command(format, &file),
            file,
            row_counts,
        }
    }
}

fn compression_of(args: &Args) -> Compression {
    let mut c = args.compress;
    if let Some(j) = args.jobs {
        c.threads = usize::from(j);
    }
    c
}

/// Exact per-table row counts (`schema.table`).
type RowCounts = BTreeMap<String, u64>;

/// The dump, and with `--row-counts` the exact counts taken in its
/// snapshot. Gives the connection back for the globals.
fn dump_database(
    args: &Args,
    spec: &ConnSpec,
    server: &Server,
    client: Client,
    dir: &Path,
    encoding: &Encoding,
) -> Result<(Vec<FileEntry>, Option<RowCounts>, Client)> {
    let opts = DumpOptions {
        spec,
        pg_dump: &server.pg_dump,
        format: args.format,
        no_owner: args.no_owner,
        no_privileges: args.no_privileges,
        extra_args: &args.pg_dump_arg,
        encoding,
    };
    if !args.row_counts {
        return Ok((vec![dump::dump(&opts, dir, None)?], None, client));
    }
    let counting = SnapshotCounts::start(client)?;
    // pg_dump's failure is the one to report; the counts only matter when
    // the dump worked.
    let entry = dump::dump(&opts, dir, Some(&counting.snapshot))?;
    let (client, counts) = counting.finish()?;
    Ok((vec![entry], Some(counts), client))
}

fn dump_globals(
    args: &Args,
    spec: &ConnSpec,
    server: &Server,
    mut client: Client,
    dir: &Path,
    enc: &Encoding,
) -> Result<FileEntry> {
    let pg_dumpall = pgtools::find(
        "pg_dumpall",
        server.major,
        &server.version,
        args.pg_bindir.as_deref(),
    )?;
    dump::globals(spec, &pg_dumpall, &mut client, dir, enc)
}

/// An encrypted set's row counts (with their table names) go into
/// `contents.json.age`, not into the readable manifest.
fn seal_contents(dir: &Path, enc: &Encoding, row_counts: Option<RowCounts>) -> Result<FileEntry> {
    let plain = enc.with_compression(Compression {
        codec: None,
        ..enc.compression
    });
    let mut sink = Sink::create(dir, backupset::CONTENTS, FileKind::Contents, &plain)?;
    let sealed = backupset::SealedContents {
        row_counts,
        nonce: Some(opskit::sys::random_hex(32)),
    };
    let body =
        serde_json::to_vec_pretty(&sealed).map_err(|e| Error::failure(format!("contents: {e}")))?;
    std::io::Write::write_all(&mut sink, &body).at("writing", sink.path())?;
    sink.finish()
}

/// One `.tar.gz` (`.tar.zst`) per `--files` directory. Archives are gzip
/// even with `--compress none` (level 0, stored), so the name stays honest.
pub(crate) fn archive_files(
    args: &Args,
    excludes: &files::Excludes,
    entries: &mut Vec<FileEntry>,
    dir: &Path,
    enc: &Encoding,
) -> Result<()> {
    let tar_c = match enc.compression.codec {
        Some(_) => enc.clone(),
        None => enc.with_compression(Compression {
            codec: Some(opskit::backupset::Codec::Gzip),
            level: 0,
            ..enc.compression
        }),
    };
    for src in &args.files {
        let taken: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        let name = files::archive_name(src, &taken, &tar_c.ext());
        let src = src.canonicalize().at("resolving", src)?;
        log::info!("archiving {} into {name}", src.display());
        entries.push(files::archive(
            &src,
            dir,
            &name,
            excludes,
            args.skip_unreadable,
            &tar_c,
        )?);
    }
    Ok(())
}

pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
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
    let Ok(entries) = opskit::root::list(root) else {
        return;
    };
    for e in entries {
        let opskit::root::Kind::Leftover { trash: false, .. } = e.kind else {
            continue;
        };
        if let Some((set, pid)) = durable::parse_temp_name(&e.name) {
            let path = e.path;
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
pub(crate) fn new_stage(root: &Path, name: &str) -> Result<(chrono::DateTime<Utc>, StagingDir)> {
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
