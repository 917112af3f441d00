//! verify-backup: prove a backup set is whole and that it restores.

pub mod checks;
pub mod replay;
pub mod restore;
pub mod sealed;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::Parser;
use opskit::backupset::DumpFormat;
use opskit::backupset::{self, Manifest};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::crypt::Identities;
use opskit::pgconn::ConnSpec;
use opskit::pgtools::{self, PgTool};
use opskit::reader::{self, Line, LineError};
use opskit::record::Fields;
use opskit::records::{Backup, ErrorRecord, Verify, VerifyCounts};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result};

use crate::checks::{Check, Depth, Name};

/// Prove backup sets are whole and restore.
///
/// Sets come from the operands, from --latest ROOT (the newest complete set
/// there), or from records on stdin (pgbackup's `backup` records; their
/// other fields are passed through):   pgbackup --dest /b | verify-backup
///
/// Depths, each including the ones before:
///   --quick           manifest, sizes, sha256, permissions, no unlisted files
///   (default)         every zstd or gzip stream (each frame's checksum, each
///                     member's CRC) and tar archive read to its end, the
///                     dump's table of contents listed by pg_restore
///   --restore-into    restore into a scratch database on that server, compare
///                     row counts with the manifest, read every table, drop it
///
/// Base sets (pgbackup --physical): the structural depth reads the tar to
/// its end and checks it against its backup_manifest; the restore depth
/// (--replay, or --restore-into) unpacks it into a scratch directory, runs
/// pg_verifybackup, starts a scratch cluster that replays WAL (the set's,
/// then the root's archive through walarchive fetch) to a consistent point,
/// reads every table of every database and removes it all. Run it as the
/// postgres user: PostgreSQL does not run as root.
///
/// Encrypted sets (pgbackup --encrypt-to): with --identity the structural
/// and restore depths decrypt as they stream (every age chunk authenticated,
/// the plaintext's sha256 checked). Without it a set gets only the checks
/// that need no key (quick, plus the age headers) and its record says
/// "depth": "quick".
///
/// Exit: 0 every set passed, 1 a set failed, 2 could not verify (restore
/// server unreachable, unreadable input lines, an identity that does not
/// match a set's recipients), 64 usage.
#[derive(Debug, Parser)]
#[command(name = "verify-backup", version, verbatim_doc_comment)]
pub struct Args {
    /// Set directories to verify; '-' or none: records on stdin.
    #[arg(value_name = "SET")]
    pub sets: Vec<String>,

    /// Verify the newest complete set under this backup root.
    #[arg(long, value_name = "ROOT", conflicts_with = "sets")]
    pub latest: Option<PathBuf>,

    /// Only the manifest, sizes, checksums and permissions.
    #[arg(long, conflicts_with = "restore_into")]
    pub quick: bool,

    /// Also restore into a scratch database on this server (URL of a
    /// database to connect to, e.g. postgres://user@host/postgres).
    #[arg(long, value_name = "URL")]
    pub restore_into: Option<String>,

    /// Base sets: restore each into a scratch cluster and replay WAL to a
    /// consistent point (the restore depth for base sets; dumps need
    /// --restore-into).
    #[arg(long, conflicts_with = "quick")]
    pub replay: bool,

    /// Where --replay unpacks a base set (it needs the cluster's size free).
    #[arg(long, value_name = "DIR", env = "OPSKIT_SCRATCH_DIR", default_value_os_t = std::env::temp_dir())]
    pub scratch: PathBuf,

    /// Append each result to the set's <backup root>/verified.ndjson, or
    /// with --record=FILE to FILE (NDJSON; the value needs the '=', so
    /// `--record SET` still verifies SET). healthcheck and prune read it.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub record: Option<String>,

    /// age identity file (age-keygen's output, mode 0600) that decrypts
    /// encrypted sets. Keep it off the backed-up server; the path may also
    /// come from OPSKIT_AGE_IDENTITY.
    #[arg(long, value_name = "FILE", env = "OPSKIT_AGE_IDENTITY")]
    pub identity: Option<PathBuf>,

    /// Directory of pg_restore/psql (default: the version matching the dump).
    #[arg(long, value_name = "DIR")]
    pub pg_bindir: Option<PathBuf>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// A set to verify, with the record that named it (for pass-through).
struct Job {
    path: PathBuf,
    incoming: Option<Fields>,
}

/// The run's counts and status as the sets are verified.
struct Tally {
    exit: Exit,
    counts: VerifyCounts,
}

impl Tally {
    fn error(&mut self) {
        self.counts.errors += 1;
        self.exit = self.exit.worst(Exit::Failure);
    }
    fn verified(&mut self, ok: bool, depth: Depth) {
        if self.counts.sets == 0 || depth < self.counts.depth {
            self.counts.depth = depth;
        }
        self.counts.sets += 1;
        if ok {
            self.counts.passed += 1;
        } else {
            self.counts.failed += 1;
            self.exit = self.exit.worst(Exit::CheckFailed);
        }
    }
}

/// Run verify-backup: find the sets, verify each, record and report.
pub fn run(args: Args, em: &mut Emitter) -> Result<Done<VerifyCounts>> {
    let depth = if args.quick {
        Depth::Quick
    } else if args.restore_into.is_some() || args.replay {
        Depth::Restore
    } else {
        Depth::Structural
    };
    let ids = args.identity.as_deref().map(Identities::load).transpose()?;
    let target = restore_target(&args)?;
    let mut tally = Tally {
        exit: Exit::Ok,
        counts: VerifyCounts {
            sets: 0,
            passed: 0,
            failed: 0,
            errors: 0,
            depth,
        },
    };
    let jobs = jobs(&args, em, &mut tally)?;
    let how = How {
        depth,
        bindir: args.pg_bindir.as_deref(),
        target: target.as_ref(),
        ids: ids.as_ref(),
        scratch: &args.scratch,
    };
    for job in jobs {
        let mut rec = verify_set(&job.path, &how)?;
        tally.verified(rec.ok, rec.depth);
        if let Some(inc) = job.incoming {
            rec.extra = inc;
        }
        if let Some(r) = &args.record {
            append_record(Path::new(r), &job.path, em, &rec)?;
        }
        em.emit(&rec)?;
    }
    Ok(Done::new(tally.exit, tally.counts))
}

/// With `--restore-into`: the server to restore on, checked reachable,
/// with SIGINT/SIGTERM turned into a flag the restore watches.
fn restore_target(args: &Args) -> Result<Option<restore::Target>> {
    let Some(url) = &args.restore_into else {
        return Ok(None);
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let t = restore::Target {
        spec: ConnSpec::resolve(Some(url))?,
        bindir: args.pg_bindir.clone(),
        interrupted: Arc::clone(&interrupted),
    };
    t.check_reachable()?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .map_err(|e| Error::failure(format!("installing signal handler: {e}")))?;
    }
    Ok(Some(t))
}

/// The sets to verify: `--latest`, the operands, or the records on stdin.
fn jobs(args: &Args, em: &mut Emitter, tally: &mut Tally) -> Result<Vec<Job>> {
    if let Some(root) = &args.latest {
        return Ok(vec![Job {
            path: latest(root)?,
            incoming: None,
        }]);
    }
    if !(args.sets.is_empty() || args.sets == ["-"]) {
        return Ok(args
            .sets
            .iter()
            .map(|s| Job {
                path: PathBuf::from(s),
                incoming: None,
            })
            .collect());
    }
    let mut rd = reader::open(None)?;
    let mut jobs = Vec::new();
    for item in rd.by_ref() {
        match item.and_then(|line| job_from_record(&line)) {
            Ok(Named::Set(job)) => jobs.push(job),
            Ok(Named::Nothing) => {}
            Ok(Named::Upstream(rec)) => {
                // An upstream failure: pass it on and remember it.
                tally.error();
                em.emit(&rec)?;
            }
            Err(e) => {
                tally.error();
                log::error!("stdin {e}");
                em.emit(&ErrorRecord::new(e.to_string()).line(e.line, None))?;
            }
        }
    }
    match rd.take_io_error() {
        Some(e) => Err(e),
        None => Ok(jobs),
    }
}

/// What an input record names.
enum Named {
    Set(Job),
    Upstream(ErrorRecord),
    Nothing,
}

/// The fields verify-backup reads from a record of a kind it does not know.
#[derive(serde::Deserialize)]
struct AnyRecord {
    path: Option<String>,
    ok: Option<bool>,
    message: Option<String>,
}

/// A record names a set by `path` (pgbackup's `backup`, another `verify`);
/// an `error` record, or one that failed without naming a set, is an
/// upstream failure to pass on.
fn job_from_record(line: &Line) -> std::result::Result<Named, LineError> {
    let set = |path: String| {
        Named::Set(Job {
            path: PathBuf::from(path),
            incoming: Some(line.fields.clone()),
        })
    };
    Ok(match line.event() {
        "summary" => Named::Nothing,
        "backup" => set(line.parse::<Backup>()?.path),
        "verify" => set(line.parse::<Verify>()?.path),
        "error" => Named::Upstream(line.parse::<ErrorRecord>()?),
        _ => {
            let r: AnyRecord = line.parse()?;
            match (r.path, r.ok) {
                (Some(p), _) => set(p),
                (None, Some(false)) => {
                    let mut e = ErrorRecord::new(
                        r.message.unwrap_or_else(|| "upstream step failed".into()),
                    );
                    e.extra = line.fields.clone();
                    Named::Upstream(e)
                }
                (None, _) => Named::Nothing,
            }
        }
    })
}

/// The newest complete set (one with a manifest) under `root`.
pub fn latest(root: &Path) -> Result<PathBuf> {
    let mut best: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    for e in fs::read_dir(root).at("listing", root)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, t)) = backupset::parse_set_dir_name(&name) else {
            continue;
        };
        if !e.path().join(backupset::MANIFEST).is_file() {
            continue;
        }
        if best.as_ref().is_none_or(|(bt, bn)| (t, &name) > (*bt, bn)) {
            best = Some((t, name));
        }
    }
    best.map(|(_, n)| root.join(n))
        .ok_or_else(|| Error::failure(format!("no complete backup set under {}", root.display())))
}

/// How every set of a run is verified.
struct How<'a> {
    depth: Depth,
    bindir: Option<&'a Path>,
    target: Option<&'a restore::Target>,
    ids: Option<&'a Identities>,
    scratch: &'a Path,
}

/// The depth an encrypted set can get: without an identity, only the
/// checks that need no key. A restore test cannot be done without it, and
/// an identity that matches none of the set's recipients is an error (exit
/// 2), not a damaged set.
fn depth_for(path: &Path, m: &Manifest, how: &How) -> Result<Depth> {
    // A dump is restored on a server (--restore-into); --replay alone
    // restores base sets only.
    let depth = if m.physical.is_none() && how.target.is_none() {
        how.depth.min(Depth::Structural)
    } else {
        how.depth
    };
    let Some(enc) = &m.encryption else {
        return Ok(depth);
    };
    let what = path.display().to_string();
    match how.ids {
        Some(ids) => {
            ids.check_matches(&enc.recipients, &what)?;
            Ok(depth)
        }
        None if depth == Depth::Restore => Err(Error::failure(format!(
            "{what}: encrypted to {}; the restore test needs its identity (--identity FILE or OPSKIT_AGE_IDENTITY); nothing was restored",
            enc.recipients.join(", ")
        ))),
        None => {
            if how.depth > Depth::Quick {
                log::warn!(
                    "{what} is encrypted and no identity was given: checksums, sizes and age headers only (depth quick)"
                );
            }
            Ok(Depth::Quick)
        }
    }
}

/// Verify one set and build its record.
fn verify_set(path: &Path, how: &How) -> Result<Verify> {
    let start = Instant::now();
    let set_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut rec = Verify {
        extra: Fields::new(),
        ok: false,
        set: set_name,
        path: path.display().to_string(),
        depth: how.depth,
        failed_checks: 0,
        created_at: None,
        bytes: None,
        restore_s: None,
        checks: Vec::new(),
        duration_s: 0.0,
    };
    match load(path) {
        Err(c) => rec.checks.push(c),
        Ok((m, manifest_sha)) => {
            let depth = depth_for(path, &m, how)?;
            rec.depth = depth;
            rec.checks.push(Check::pass(
                Name::Manifest,
                Some(backupset::MANIFEST),
                format!("{} files listed", m.files.len()),
            ));
            rec.checks.extend(checks::layout(path, &m, &manifest_sha));
            let pg_restore = (depth >= Depth::Structural)
                .then(|| find_pg_restore(&m, how.bindir))
                .flatten();
            for f in &m.files {
                rec.checks.extend(checks::file(
                    path,
                    f,
                    &m,
                    depth,
                    pg_restore.as_ref(),
                    how.ids,
                ));
            }
            if let Some(info) = &m.physical {
                rec.checks.push(wal_chain(path, info));
            }
            rec.created_at = Some(m.started_at);
            rec.bytes = Some(m.files.iter().map(|f| f.bytes).sum());
            if depth == Depth::Restore {
                restore_test(how, path, &m, &mut rec)?;
            }
        }
    }
    rec.ok = rec.checks.iter().all(|c| c.ok);
    rec.failed_checks = rec.checks.iter().filter(|c| !c.ok).count();
    for c in rec.checks.iter().filter(|c| !c.ok) {
        log::error!("{}: {}: {}", rec.set, c.label(), c.detail);
    }
    rec.duration_s = opskit::record::secs(start.elapsed());
    Ok(rec)
}

/// The restore depth, on a set whose other checks all passed.
fn restore_test(how: &How, path: &Path, m: &Manifest, rec: &mut Verify) -> Result<()> {
    if !rec.checks.iter().all(|c| c.ok) {
        rec.checks.push(Check::fail(
            Name::Restore,
            None,
            "not attempted: the set is damaged",
        ));
        return Ok(());
    }
    let (more, secs) = match (&m.physical, how.target) {
        (Some(_), _) => replay::test(path, m, how.ids, how.scratch, how.bindir)?,
        (None, Some(t)) => t.test(path, m, how.ids)?,
        (None, None) => return Ok(()),
    };
    rec.checks.extend(more);
    rec.restore_s = secs;
    Ok(())
}

/// A base set: the WAL archive of its root holds every segment from the
/// set's start to the newest archived one, so it recovers to any time
/// since it was taken.
fn wal_chain(set: &Path, info: &opskit::backupset::PhysicalInfo) -> Check {
    let root = set.parent().unwrap_or(Path::new("."));
    match opskit::walchain::follow(root, info) {
        Ok(None) => Check::pass(
            Name::Wal,
            None,
            "no WAL archive in this root: the set recovers to its own end only",
        ),
        Ok(Some(c)) if c.missing == 0 => Check::pass(
            Name::Wal,
            None,
            format!(
                "{} segments archived from {} to {} (timelines {:?}): it recovers to any time since it was taken",
                c.segments,
                info.start_wal,
                c.newest.as_deref().unwrap_or("-"),
                c.timelines
            ),
        ),
        Ok(Some(c)) => Check::fail(
            Name::Wal,
            None,
            format!(
                "{} segments missing from the archive between {} and {} (first: {}): recovery from this set stops before them",
                c.missing,
                info.start_wal,
                c.newest.as_deref().unwrap_or("-"),
                c.first_missing.join(", ")
            ),
        ),
        Err(e) => Check::fail(Name::Wal, None, e.msg),
    }
}

/// Read the manifest and its hash; a missing or bad manifest is the one
/// failed check of a set.
fn load(path: &Path) -> std::result::Result<(Manifest, String), Check> {
    if !path.is_dir() {
        return Err(Check::fail(
            Name::Manifest,
            None,
            format!("{} is not a directory", path.display()),
        ));
    }
    backupset::read_manifest(path)
        .map_err(|e| Check::fail(Name::Manifest, Some(backupset::MANIFEST), e.msg))
}

fn find_pg_restore(m: &Manifest, bindir: Option<&Path>) -> Option<PgTool> {
    let db = m.database.as_ref()?;
    if db.format != DumpFormat::Custom {
        return None;
    }
    let major = pgtools::major_of_num(db.server_version_num);
    match pgtools::find("pg_restore", major, &db.server_version, bindir) {
        Ok(t) => Some(t),
        Err(e) => {
            log::error!("{}", e.msg);
            None
        }
    }
}

/// Append one result line to the result log (0600, locked, fsynced).
fn append_record(file: &Path, set: &Path, em: &Emitter, rec: &Verify) -> Result<()> {
    let path = if file.as_os_str().is_empty() {
        set.parent()
            .unwrap_or(Path::new("."))
            .join(opskit::backupset::VERIFIED_LOG)
    } else {
        file.to_path_buf()
    };
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .at("opening result log", &path)?;
    f.lock().at("locking", &path)?;
    let mut line = em.render(rec);
    line.push('\n');
    f.write_all(line.as_bytes()).at("appending to", &path)?;
    f.sync_data().at("syncing", &path)
}
