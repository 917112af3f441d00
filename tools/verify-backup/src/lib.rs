//! verify-backup: prove a backup set is whole and that it restores.

mod basechain;
pub(crate) mod checks;
pub mod dumpindex;
mod jobs;
pub(crate) mod keep;
mod leftovers;
mod newest;
mod older;
pub(crate) mod replay;
pub(crate) mod restore;
pub(crate) mod roles;
pub(crate) mod sealed;
pub(crate) mod seekable;

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
use opskit::progress::Progress;
use opskit::record::Fields;
use opskit::records::{Verify, VerifyCounts};
use opskit::sign::{SET_SIGNATURE, Trust};
use opskit::verdicts::VerdictLog;
use opskit::{Done, Emitter, Error, Exit, Result};

use crate::checks::{Check, Depth, Name};

/// Prove backup sets are whole and restore.
///
/// Sets come from the operands, from --latest ROOT (the newest complete set
/// there), or from records on stdin (pgbackup's `backup` records; their
/// other fields are passed through):   pgbackup --dest /b | verify-backup
///
/// Every set is first checked against its signature (MANIFEST.json.minisig,
/// made by pgbackup's signing key): a set no key in OPSKIT_SIGNING_PUBKEYS
/// signed, or signed for another name, gets that one failed check and
/// nothing in it is read. --allow-unsigned accepts sets made before
/// signing was set up.
///
/// Depths, each including the ones before:
///   --quick           signature, manifest, sizes, sha256, permissions, no
///                     unlisted files
///   (default)         every zstd or gzip stream (each frame's checksum, each
///                     member's CRC) and tar archive read to its end, the
///                     dump's table of contents listed by pg_restore
///   --restore-into    restore into a scratch database on that server, compare
///                     row counts with the manifest, read every table, drop it
///
/// A custom-format dump restores with --jobs N pg_restore jobs (default:
/// the machine's cores, at most 8) from a copy of it, decrypted and
/// decompressed into a 0700 directory in --scratch (default: $TMPDIR, else
/// /var/tmp: on disk, not a RAM-backed /tmp, and not the data directory's
/// disk, which the restored database fills): pg_restore runs jobs only
/// from a file it can seek in. The copy's size is checked against the free
/// space first: asked for with --jobs, a copy that does not fit (or an
/// unsafe scratch directory) is refused; by default the dump is streamed
/// instead, saying why, and the copy must leave as much again free for the
/// restored database. The copy
/// is removed on every path (a run killed before that leaves it to the
/// next run, which removes it). --jobs 1 streams the dump into one
/// pg_restore with no copy (faster for one large table and few indexes).
///
/// Base sets (pgbackup --physical): the structural depth reads the tar to
/// its end and checks it against its backup_manifest; the restore depth
/// (--replay, or --restore-into) unpacks it into a scratch directory, runs
/// pg_verifybackup, starts a scratch cluster that replays WAL (the set's,
/// then the root's archive through walarchive fetch) to a consistent point,
/// reads every table of every database and removes it all. The cluster
/// ends with the run, however the run ends; a killed run's directory is
/// removed by the next. Run it as the postgres user: PostgreSQL does not
/// run as root.
///
/// Encrypted sets (pgbackup --encrypt-to): with --identity the structural
/// and restore depths decrypt as they stream (every age chunk authenticated,
/// the plaintext's sha256 checked). Without it a set gets only the checks
/// that need no key (quick, plus the age headers) and its record says
/// "depth": "quick".
///
/// A real restore (restore-system.sh): --restore-into URL --keep-as NEWDB
/// [--globals] [--files-into DIR] restores into a new database that is kept
/// only when every check passed. Nothing from the set runs as a command:
/// pg_restore, or psql under \restrict (a psql that knows it: 15.14, 16.10,
/// 17.6 or newer), never the manifest's restore_command; files archives
/// come out without owners, setuid bits or device nodes.
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

    /// Verify nothing: report the newest set under ROOT whose latest
    /// verification passed (a `newest_verified` record; exit 1 when there
    /// is none), of --kind dump (default) or base. A set that passed and
    /// then failed a later verification is not it. restore-system.sh asks
    /// this.
    #[arg(long, value_name = "ROOT", conflicts_with_all = ["sets", "latest"])]
    pub newest_verified: Option<PathBuf>,

    /// With --newest-verified: the kind of set.
    #[arg(long, value_enum, default_value = "dump", requires = "newest_verified")]
    pub kind: opskit::records::SetKind,

    /// With --newest-verified: only sets of this series, the name before
    /// the set's time (pgbackup --name; by default the database's name).
    /// A root may hold several series: restore-system.sh passes
    /// OPSKIT_BACKUP_NAME, else its database's name, so that another
    /// database's newer set is never taken for this one.
    #[arg(long, value_name = "NAME", requires = "newest_verified")]
    pub series: Option<String>,

    /// Only the manifest, sizes, checksums and permissions.
    #[arg(long, conflicts_with = "restore_into")]
    pub quick: bool,

    /// Also restore into a scratch database on this server (URL of a
    /// database to connect to, e.g. postgres://user@host/postgres).
    #[arg(long, value_name = "URL")]
    pub restore_into: Option<String>,

    /// With --restore-into: restore into this new database (it must not
    /// exist) instead of a scratch one, and keep it when every check
    /// passed; dropped when one failed. restore-system.sh restores with it.
    #[arg(long, value_name = "DB", requires = "restore_into")]
    pub keep_as: Option<String>,

    /// With --keep-as: restore the set's roles (globals) on the server
    /// first; roles that exist are left as they are.
    #[arg(long, requires = "keep_as")]
    pub globals: bool,

    /// With --keep-as: once every check passed, unpack the set's files
    /// archives into DIR (no owners, setuid/setgid bits or device nodes;
    /// nothing outside DIR).
    #[arg(long, value_name = "DIR", requires = "keep_as")]
    pub files_into: Option<PathBuf>,

    /// Base sets: restore each into a scratch cluster and replay WAL to a
    /// consistent point (the restore depth for base sets; dumps need
    /// --restore-into).
    #[arg(long, conflicts_with = "quick")]
    pub replay: bool,

    /// Where --replay unpacks a base set (it needs the cluster's size
    /// free), and where a restore with --jobs above 1 puts its copy of the
    /// dump (the dump's size free). Owned by this user or root, writable
    /// by nobody else unless sticky. Default: $TMPDIR, else /var/tmp.
    #[arg(long, value_name = "DIR", env = "OPSKIT_SCRATCH_DIR")]
    pub scratch: Option<PathBuf>,

    /// With --restore-into: restore a custom-format dump with N pg_restore
    /// jobs, from a copy of it in --scratch (worth it for many tables and
    /// indexes; the copy costs a pass over the dump). Default: the
    /// machine's cores (at most 8; each job is a connection), streamed
    /// when the copy does not fit or the scratch directory is unsafe; 1
    /// streams it with no copy.
    #[arg(long, value_name = "N", env = "OPSKIT_RESTORE_JOBS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,

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

    #[command(flatten)]
    pub trust: opskit::cli::TrustArgs,

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
    if let Some(root) = &args.newest_verified {
        // Named as pgbackup names sets (`my app` is series `my_app`).
        let series = args
            .series
            .as_deref()
            .map(|s| opskit::backupset::sanitize_name(s, "db"));
        return newest::run(root, args.kind, series.as_deref(), em);
    }
    let trust = args.trust.trust()?;
    let ids = args.identity.as_deref().map(Identities::load).transpose()?;
    let scratch = args.scratch.clone().unwrap_or_else(default_scratch);
    let target = restore_target(&args, &scratch)?;
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
    let jobs = jobs::jobs(&args, em, &mut tally)?;
    let how = How {
        depth,
        bindir: args.pg_bindir.as_deref(),
        target: target.as_ref(),
        ids: ids.as_ref(),
        scratch: &scratch,
        trust: &trust,
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

/// Where restores unpack and copy when not told: `$TMPDIR`, else
/// `/var/tmp` (large temporary files belong on disk; `/tmp` is often RAM).
fn default_scratch() -> PathBuf {
    match std::env::var_os("TMPDIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ if Path::new("/var/tmp").is_dir() => PathBuf::from("/var/tmp"),
        _ => std::env::temp_dir(),
    }
}

/// With `--restore-into`: the server to restore on, checked reachable,
/// with SIGINT/SIGTERM turned into a flag the restore watches.
fn restore_target(args: &Args, scratch: &Path) -> Result<Option<restore::Target>> {
    let Some(url) = &args.restore_into else {
        return Ok(None);
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let spec = ConnSpec::resolve(Some(url))?;
    let jobs = args.jobs.map_or_else(seekable::default_jobs, usize::from);
    let parallel = (jobs > 1).then(|| seekable::Parallel {
        jobs,
        dir: scratch.to_path_buf(),
        asked: args.jobs.is_some(),
    });
    let t = restore::Target {
        spec,
        bindir: args.pg_bindir.clone(),
        interrupted: Arc::clone(&interrupted),
        keep_as: args.keep_as.clone(),
        globals: args.globals,
        files_into: args.files_into.clone(),
        parallel,
    };
    t.check_reachable()?;
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .map_err(|e| Error::failure(format!("installing signal handler: {e}")))?;
    }
    Ok(Some(t))
}

/// How every set of a run is verified.
struct How<'a> {
    depth: Depth,
    bindir: Option<&'a Path>,
    target: Option<&'a restore::Target>,
    ids: Option<&'a Identities>,
    scratch: &'a Path,
    trust: &'a Trust,
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
    match load(path, how.trust) {
        Err(c) => rec.checks.push(c),
        Ok((m, manifest_sha, signed)) => {
            rec.checks.push(signed);
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
            let mut seen = restore::Seen::new();
            let progress = Progress::start(format!("verifying {}", rec.set), Some(m.bytes()));
            for f in &m.files {
                let (pg_restore, ids) = (pg_restore.as_ref(), how.ids);
                let (checks, id) = checks::file(path, f, &m, depth, pg_restore, ids, &progress);
                rec.checks.extend(checks);
                if let Some(id) = id {
                    seen.insert(f.name.clone(), id);
                }
            }
            progress.finish();
            if let Some(info) = &m.physical {
                rec.checks.push(basechain::wal_chain(path, info));
                if info.incremental.is_some() {
                    rec.checks.push(basechain::ancestors(path, &m, how.trust));
                }
            }
            rec.created_at = Some(m.started_at);
            rec.bytes = Some(m.bytes());
            if depth == Depth::Restore {
                restore_test(how, path, &m, &mut rec, &seen)?;
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
fn restore_test(
    how: &How,
    path: &Path,
    m: &Manifest,
    rec: &mut Verify,
    seen: &restore::Seen,
) -> Result<()> {
    if !rec.checks.iter().all(|c| c.ok) {
        rec.checks.push(Check::fail(
            Name::Restore,
            None,
            "not attempted: the set is damaged",
        ));
        return Ok(());
    }
    let (more, secs) = match (&m.physical, how.target) {
        (Some(_), _) => replay::test(path, m, how.ids, how.scratch, how.bindir, how.trust)?,
        (None, Some(t)) => t.test(path, m, how.ids, seen)?,
        (None, None) => return Ok(()),
    };
    rec.checks.extend(more);
    rec.restore_s = secs;
    Ok(())
}

/// Read the manifest, check its signature before anything else, parse it
/// and hash it; a missing, unsigned or bad manifest is the one failed check
/// of a set (nothing in it is read further).
fn load(path: &Path, trust: &Trust) -> std::result::Result<(Manifest, String, Check), Check> {
    if !opskit::safefs::is_real_dir(path) {
        return Err(Check::fail(
            Name::Manifest,
            None,
            format!("{} is not a directory", path.display()),
        ));
    }
    let manifest_fail = |e: Error| Check::fail(Name::Manifest, Some(backupset::MANIFEST), e.msg);
    let text = backupset::read_manifest_bytes(path).map_err(manifest_fail)?;
    let signed = backupset::check_signature(path, &text, trust)
        .map_err(|e| Check::fail(Name::Signature, Some(SET_SIGNATURE), e.msg))?;
    let origin = path.join(backupset::MANIFEST).display().to_string();
    let m = backupset::parse_manifest(&text, &origin).map_err(manifest_fail)?;
    backupset::check_set_name(path, &m).map_err(manifest_fail)?;
    backupset::check_kind(&backupset::dir_name(path), &signed, &m)
        .map_err(|e| Check::fail(Name::Signature, Some(SET_SIGNATURE), e.msg))?;
    let signed = signed.note;
    let sha = opskit::gz::sha256_hex(&text);
    Ok((
        m,
        sha,
        Check::pass(Name::Signature, Some(SET_SIGNATURE), signed),
    ))
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

/// Append one result line to the result log (0600, locked, fsynced, never
/// through a link: `opskit::verdicts`).
fn append_record(file: &Path, set: &Path, em: &Emitter, rec: &Verify) -> Result<()> {
    let log = if file.as_os_str().is_empty() {
        VerdictLog::local(set.parent().unwrap_or(Path::new(".")))
    } else {
        VerdictLog::at(file)
    };
    log.append(&em.render(rec))
}
