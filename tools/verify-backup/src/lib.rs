//! verify-backup: prove a backup set is whole and that it restores.

pub mod checks;
pub mod restore;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use clap::Parser;
use opskit::backupset::{self, Manifest};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::pgconn::ConnSpec;
use opskit::pgtools::{self, PgTool};
use opskit::record::{Fields, pass_through};
use opskit::{Emitter, Error, Exit, IoContext, Result, fields, reader};

use crate::checks::{Check, Depth};

/// Prove backup sets are whole and restore.
///
/// Sets come from the operands, from --latest ROOT (the newest complete set
/// there), or from records on stdin (pgbackup's `backup` records; their
/// other fields are passed through):   pgbackup --dest /b | verify-backup
///
/// Depths, each including the ones before:
///   --quick           manifest, sizes, sha256, permissions, no unlisted files
///   (default)         every gzip stream and tar archive read to its end, the
///                     dump's table of contents listed by pg_restore
///   --restore-into    restore into a scratch database on that server, compare
///                     row counts with the manifest, read every table, drop it
///
/// Exit: 0 every set passed, 1 a set failed, 2 could not verify (restore
/// server unreachable, unreadable input lines), 64 usage.
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

    /// Append each result to this file (NDJSON); without a value:
    /// <backup root>/verified.ndjson. healthcheck and prune read it.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "")]
    pub record: Option<String>,

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

pub fn run(args: Args, em: &mut Emitter) -> std::result::Result<Exit, Error> {
    let start = Instant::now();
    let depth = if args.quick {
        Depth::Quick
    } else if args.restore_into.is_some() {
        Depth::Restore
    } else {
        Depth::Structural
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let target = match &args.restore_into {
        Some(url) => {
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
            Some(t)
        }
        None => None,
    };

    let mut exit = Exit::Ok;
    let (mut passed, mut failed, mut errors) = (0u64, 0u64, 0u64);
    let mut jobs = Vec::new();
    if let Some(root) = &args.latest {
        let set = latest(root)?;
        jobs.push(Job {
            path: set,
            incoming: None,
        });
    } else if args.sets.is_empty() || args.sets == ["-"] {
        let mut rd = reader::open(None)?;
        for item in rd.by_ref() {
            match item {
                Ok(rec) => match job_from_record(rec) {
                    Some(Ok(job)) => jobs.push(job),
                    Some(Err(upstream)) => {
                        // An upstream failure: pass it on and remember it.
                        errors += 1;
                        exit = exit.worst(Exit::Failure);
                        let msg = upstream
                            .get("message")
                            .and_then(|m| m.as_str())
                            .unwrap_or("upstream step failed")
                            .to_string();
                        em.emit(
                            "error",
                            &pass_through(&upstream, fields! {"ok" => false, "message" => msg}),
                        );
                    }
                    None => {}
                },
                Err(e) => {
                    errors += 1;
                    exit = exit.worst(Exit::Failure);
                    log::error!("stdin {e}");
                    em.emit(
                        "error",
                        &fields! {"ok" => false, "line" => e.line, "message" => e.to_string()},
                    );
                }
            }
        }
        if let Some(e) = rd.take_io_error() {
            return Err(e);
        }
    } else {
        for s in &args.sets {
            jobs.push(Job {
                path: PathBuf::from(s),
                incoming: None,
            });
        }
    }

    for job in jobs {
        let rec = verify_set(&job.path, depth, args.pg_bindir.as_deref(), target.as_ref())?;
        let ok = rec["ok"] == true;
        if ok {
            passed += 1;
        } else {
            failed += 1;
            exit = exit.worst(Exit::CheckFailed);
        }
        let out = match &job.incoming {
            Some(inc) => pass_through(inc, rec),
            None => rec,
        };
        if let Some(r) = &args.record {
            append_record(Path::new(r), &job.path, em, &out)?;
        }
        em.emit("verify", &out);
    }
    em.emit(
        "summary",
        &fields! {
            "ok" => exit == Exit::Ok,
            "sets" => passed + failed,
            "passed" => passed,
            "failed" => failed,
            "errors" => errors,
            "depth" => depth.as_str(),
            "duration_s" => opskit::record::secs(start.elapsed()),
        },
    );
    Ok(exit)
}

/// A record names a set by `path` (pgbackup's `backup`, another `verify`).
/// `Some(Err)` is an upstream failure to pass on; `None` is nothing to do.
fn job_from_record(rec: Fields) -> Option<std::result::Result<Job, Fields>> {
    let event = rec.get("event").and_then(|v| v.as_str()).unwrap_or("");
    if event == "summary" {
        return None;
    }
    if event == "error"
        || rec.get("ok") == Some(&serde_json::Value::Bool(false)) && rec.get("path").is_none()
    {
        return Some(Err(rec));
    }
    let path = rec.get("path").and_then(|p| p.as_str())?;
    Some(Ok(Job {
        path: PathBuf::from(path),
        incoming: Some(rec.clone()),
    }))
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

/// Verify one set and build its record.
fn verify_set(
    path: &Path,
    depth: Depth,
    bindir: Option<&Path>,
    target: Option<&restore::Target>,
) -> Result<Fields> {
    let start = Instant::now();
    let set_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut checks: Vec<Check> = Vec::new();
    let mut extra = Fields::new();
    match load(path) {
        Err(c) => checks.push(c),
        Ok((m, manifest_sha)) => {
            checks.push(Check::pass(
                "manifest",
                Some(backupset::MANIFEST),
                format!("{} files listed", m.files.len()),
            ));
            checks.extend(checks::layout(path, &m, &manifest_sha));
            let pg_restore = (depth >= Depth::Structural)
                .then(|| find_pg_restore(&m, bindir))
                .flatten();
            for f in &m.files {
                checks.extend(checks::file(path, f, &m, depth, pg_restore.as_ref()));
            }
            extra.insert("created_at".into(), serde_json::json!(m.started_at));
            extra.insert(
                "bytes".into(),
                serde_json::json!(m.files.iter().map(|f| f.bytes).sum::<u64>()),
            );
            if let Some(t) = target {
                if checks.iter().all(|c| c.ok) {
                    let (more, secs) = t.test(path, &m)?;
                    checks.extend(more);
                    if let Some(s) = secs {
                        extra.insert("restore_s".into(), serde_json::json!(s));
                    }
                } else {
                    checks.push(Check::fail(
                        "restore",
                        None,
                        "not attempted: the set is damaged",
                    ));
                }
            }
        }
    }
    let ok = checks.iter().all(|c| c.ok);
    let failed: Vec<&Check> = checks.iter().filter(|c| !c.ok).collect();
    for c in &failed {
        log::error!(
            "{}: {} {}: {}",
            set_name,
            c.name,
            c.file.as_deref().unwrap_or(""),
            c.detail
        );
    }
    let mut rec = fields! {
        "ok" => ok,
        "set" => set_name,
        "path" => path.display().to_string(),
        "depth" => depth.as_str(),
        "failed_checks" => failed.len(),
    };
    rec.extend(extra);
    rec.insert(
        "checks".into(),
        serde_json::to_value(&checks).unwrap_or_default(),
    );
    rec.insert(
        "duration_s".into(),
        serde_json::json!(opskit::record::secs(start.elapsed())),
    );
    Ok(rec)
}

/// Read the manifest and its hash; a missing or bad manifest is the one
/// failed check of a set.
fn load(path: &Path) -> std::result::Result<(Manifest, String), Check> {
    if !path.is_dir() {
        return Err(Check::fail(
            "manifest",
            None,
            format!("{} is not a directory", path.display()),
        ));
    }
    backupset::read_manifest(path)
        .map_err(|e| Check::fail("manifest", Some(backupset::MANIFEST), e.msg))
}

fn find_pg_restore(m: &Manifest, bindir: Option<&Path>) -> Option<PgTool> {
    let db = m.database.as_ref()?;
    if db.format != "custom" {
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
fn append_record(file: &Path, set: &Path, em: &Emitter, rec: &Fields) -> Result<()> {
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
    let mut line = em.render("verify", rec);
    line.push('\n');
    f.write_all(line.as_bytes()).at("appending to", &path)?;
    f.sync_data().at("syncing", &path)
}
