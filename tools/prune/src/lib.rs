//! prune: apply a retention policy to the backup sets under a root, never
//! deleting the wrong thing.

pub(crate) mod plan;
pub(crate) mod scan;
pub(crate) mod wal;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::IsTerminal;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::reader::{self, Line, LineError};
use opskit::records::{Depth, ErrorRecord, Prune, PruneAction, PruneCounts, Verify};
use opskit::retention::{PolicyArgs, Status};
use opskit::verdicts::{self, Said, Verdict, VerdictLog};
use opskit::{Done, Emitter, Error, Exit, IoContext, backupset, durable, lock, units};

use crate::plan::Action;
use crate::scan::Kind;

/// Apply a retention policy to the backup sets under ROOT.
///
/// The policy flags mean what they mean for restic's `forget`: sets are taken
/// newest first; each rule keeps the newest set of each period it has not yet
/// counted, and the oldest set when it still has count (or span) left; a set
/// is kept when any rule keeps it. Durations are restic's (7d, 1y6m, 2d12h),
/// counted back as restic counts them (a month before March 31 is March 2
/// or 3, as Go's AddDate has it). -1 means unlimited.
///
/// Whatever the policy: the newest set is kept; the --min-keep newest sets
/// that passed verification are kept; a set that failed verification never
/// fills a keep slot and is deleted only with --delete-corrupt; nothing but
/// backup sets directly under ROOT, and archived WAL no kept base set
/// needs, is ever deleted. Each series (sets of one
/// name: `app` dumps, `app-base` base sets) is kept by the policy on its own.
/// Archived WAL (ROOT/wal) older than the start of the oldest base set kept
/// is deleted; nothing a kept base set needs. Verification results come
/// from verify-backup records on stdin and from ROOT/verified.ndjson.
///
///   verify-backup --latest /var/backups/opskit --record | \
///     prune /var/backups/opskit --keep-daily 7 --keep-weekly 4 --keep-monthly 12
#[derive(Debug, Parser)]
#[command(name = "prune", version, verbatim_doc_comment)]
pub struct Args {
    /// The backup root.
    #[arg(value_name = "ROOT")]
    pub root: PathBuf,

    #[command(flatten)]
    pub rules: PolicyArgs,

    /// Remove temporary directories of interrupted runs older than this.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = units::duration_arg)]
    pub stale_after: Duration,

    /// Also apply the policy to plain files matching this glob (legacy
    /// one-liner backups, e.g. 'backup_*.sql.gz'); time from the name, else mtime.
    #[arg(long, value_name = "GLOB")]
    pub glob: Option<String>,

    /// verify-backup result log to read (default: ROOT/verified.ndjson if
    /// present). A line of it that cannot be read holds every deletion.
    #[arg(long, value_name = "FILE")]
    pub verified: Option<PathBuf>,

    /// Decide and report, delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Wait this long for a pgbackup or prune running on ROOT.
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

/// What the verification records say, and whether any input was bad.
#[derive(Default)]
struct Verdicts {
    /// Per set: the latest verdict, why it failed, and the deepest
    /// verification it passed since it last failed.
    by_set: BTreeMap<String, Verdict>,
    input_errors: u64,
    upstream_failed: bool,
}

impl Verdicts {
    fn status_of(&self, name: &str, damaged: &HashMap<String, String>) -> Status {
        if let Some(why) = damaged.get(name) {
            return Status::Corrupt(why.clone());
        }
        match self.by_set.get(name) {
            Some(v) if v.ok => Status::Good,
            Some(v) => Status::Corrupt(v.why.clone()),
            None => Status::Unknown,
        }
    }

    fn depth_of(&self, name: &str) -> Option<Depth> {
        self.by_set.get(name).and_then(|v| v.depth)
    }
}

/// Run prune: read the verification records, scan the root, decide, delete
/// (unless held), report each entry.
pub fn run(args: Args, em: &mut Emitter) -> Result<Done<PruneCounts>, Error> {
    let rules = args.rules.checked()?;
    let glob = match &args.glob {
        Some(g) => Some(
            globset::Glob::new(g)
                .map_err(|e| Error::usage(format!("invalid --glob '{g}': {e}")))?
                .compile_matcher(),
        ),
        None => None,
    };
    // In `pgbackup | verify-backup | prune` all three start together: read
    // every upstream record first, so the root is only looked at (and
    // locked) once the backup and its verification are done.
    let piped = read_stdin()?;
    let root = open_root(&args.root)?;
    let _lock = lock::acquire(&root.join(backupset::LOCK_FILE), args.lock_wait)?;
    let verdicts = read_all_verdicts(&args, &root, piped, em)?;

    let entries = scan::scan(&root, glob.as_ref(), args.rules.tz)?;
    // A set whose manifest cannot be read is damaged, whatever an earlier
    // verification said: it takes no keep slot and is not the newest set.
    // Read on two threads: 10,000 manifests are most of a plan's time.
    let sets: Vec<&scan::Entry> = entries
        .iter()
        .filter(|e| matches!(e.kind, Kind::Set { .. }))
        .collect();
    let damaged: HashMap<String, String> = opskit::pool::map(&sets, 2, |e| {
        scan::damaged(&e.path).map(|why| (e.name.clone(), why))
    })
    .into_iter()
    .flatten()
    .collect();
    let decisions = plan::decide(&entries, &rules, Utc::now(), |name| {
        verdicts.status_of(name, &damaged)
    });
    let hold = hold_reason(&args, &verdicts);
    let actions = final_actions(&args, &entries, &decisions);
    // The deletions in bulk: every doomed entry renamed to trash, one
    // fsync of the root, then the trash removed on two threads.
    let doomed: Vec<usize> = (0..decisions.len())
        .filter(|&k| matches!(actions[k], Action::Delete | Action::Leftover))
        .collect();
    let results = if hold.is_none() {
        delete_all(&root, &entries, &decisions, &doomed)
    } else {
        HashMap::new()
    };

    let mut tally = Tally::default();
    for (k, d) in decisions.iter().enumerate() {
        let e = &entries[d.index];
        let mut rec = entry_record(e, d, &actions[k], results.get(&k));
        rec.verified_depth = verdicts.depth_of(&e.name);
        tally.count(&rec);
        em.emit(&rec)?;
    }
    // The sets that stay (legacy files have no manifest to read).
    let kept: Vec<PathBuf> = (0..decisions.len())
        .filter(|&k| matches!(actions[k], Action::Keep | Action::Corrupt(_)))
        .map(|k| &entries[decisions[k].index])
        .filter(|e| matches!(e.kind, Kind::Set { .. }))
        .map(|e| e.path.clone())
        .collect();
    tally.bytes += wal::prune(&root, &kept, hold.is_some(), em)?;
    if verdicts.upstream_failed || verdicts.input_errors > 0 {
        tally.exit = tally.exit.worst(Exit::Failure);
    }
    Ok(Done::new(tally.exit, tally.counts(args.dry_run, hold)))
}

/// Read stdin only when something was piped or redirected into it, so a
/// prune started from a terminal or by systemd (stdin /dev/null) never waits.
/// Held: what the verdicts need (`verify`, one `error`, the bad lines).
fn read_stdin() -> Result<Vec<Result<Line, LineError>>, Error> {
    if std::io::stdin().is_terminal() {
        return Ok(Vec::new());
    }
    match fs::metadata("/proc/self/fd/0") {
        Ok(m) if m.file_type().is_fifo() || m.is_file() => {}
        _ => return Ok(Vec::new()),
    }
    let mut rd = reader::open(None)?;
    let mut upstream = false;
    let v: Vec<_> = (rd.by_ref())
        .filter(|item| match item.as_ref().map(Line::event) {
            Ok("verify") | Err(_) => true,
            Ok("error") => !std::mem::replace(&mut upstream, true),
            Ok(_) => false,
        })
        .collect();
    match rd.take_io_error() {
        Some(e) => Err(e),
        None => Ok(v),
    }
}

fn open_root(arg: &Path) -> Result<PathBuf, Error> {
    let root = arg.canonicalize().at("opening backup root", arg)?;
    if !root.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory",
            arg.display()
        )));
    }
    Ok(root)
}

/// The verdicts of the result log (`--verified`, or ROOT/verified.ndjson),
/// then of stdin, which is newer.
fn read_all_verdicts(
    args: &Args,
    root: &Path,
    piped: Vec<Result<Line, LineError>>,
    em: &mut Emitter,
) -> Result<Verdicts, Error> {
    let log = match &args.verified {
        Some(f) => {
            fs::symlink_metadata(f).at("reading --verified", f)?;
            VerdictLog::at(f)
        }
        None => VerdictLog::local(root),
    };
    let reading = log.read()?;
    let mut verdicts = Verdicts {
        by_set: reading.latest,
        ..Verdicts::default()
    };
    // A line of the log that cannot be read may have been a failure: it
    // holds deletion, named, until the operator mends the log.
    let shown = log.path().display().to_string();
    let unreadable = reading.unreadable.into_iter().map(Err);
    read_verdicts(unreadable, root, em, &mut verdicts, &shown)?;
    read_verdicts(piped.into_iter(), root, em, &mut verdicts, "stdin")?;
    Ok(verdicts)
}

/// Why nothing is deleted this run, if nothing is.
fn hold_reason(args: &Args, verdicts: &Verdicts) -> Option<&'static str> {
    let why = if args.dry_run {
        "dry run"
    } else if verdicts.upstream_failed {
        "an upstream step failed"
    } else if verdicts.input_errors > 0 {
        "some verification records could not be read"
    } else {
        return None;
    };
    if !args.dry_run {
        log::warn!("{why}: nothing is deleted this run");
    }
    Some(why)
}

/// The decisions' actions, with temporary directories leftovers only once
/// they are stale.
fn final_actions(
    args: &Args,
    entries: &[scan::Entry],
    decisions: &[plan::Decision],
) -> Vec<Action> {
    let stale = args.stale_after.as_secs();
    decisions
        .iter()
        .map(|d| match (&entries[d.index].kind, &d.action) {
            (Kind::Leftover { age_s, trash }, _) if !trash && *age_s < stale => {
                Action::Ignored(format!(
                    "in progress or recent (younger than {})",
                    units::format_duration(args.stale_after)
                ))
            }
            (_, a) => a.clone(),
        })
        .collect()
}

/// The `prune` record of one entry.
fn entry_record(
    e: &scan::Entry,
    d: &plan::Decision,
    act: &Action,
    result: Option<&Result<u64, String>>,
) -> Prune {
    let created_at = match &e.kind {
        Kind::Set { time } | Kind::Legacy { time } => Some(*time),
        _ => None,
    };
    let (action, detail) = match act {
        Action::Keep => (PruneAction::Keep, None),
        Action::Delete => (PruneAction::Delete, None),
        Action::Corrupt(why) => (PruneAction::Corrupt, Some(why.clone())),
        Action::Ignored(why) => (PruneAction::Ignored, Some(why.clone())),
        Action::Leftover => (PruneAction::Leftover, None),
    };
    let doomed = matches!(act, Action::Delete | Action::Leftover);
    if let Some(Err(msg)) = result {
        log::error!("{msg}");
    }
    Prune {
        path: e.path.display().to_string(),
        name: e.name.clone(),
        created_at,
        action,
        reasons: (action != PruneAction::Leftover).then(|| d.reasons.clone()),
        detail,
        verified: d.verified,
        verified_depth: None,
        bytes: result.and_then(|r| r.as_ref().ok().copied()),
        deleted: doomed.then_some(matches!(result, Some(Ok(_)))),
        error: result.and_then(|r| r.as_ref().err().cloned()),
    }
}

#[derive(Default)]
struct Tally {
    exit: Exit,
    kept: u64,
    deleted: u64,
    would_delete: u64,
    corrupt: u64,
    ignored: u64,
    leftovers: u64,
    bytes: u64,
}

impl Tally {
    fn count(&mut self, rec: &Prune) {
        if rec.error.is_some() {
            self.exit = self.exit.worst(Exit::Failure);
        }
        match rec.action {
            PruneAction::Keep => self.kept += 1,
            PruneAction::Corrupt => {
                self.corrupt += 1;
                self.exit = self.exit.worst(Exit::CheckFailed);
            }
            PruneAction::Ignored => self.ignored += 1,
            PruneAction::Delete | PruneAction::Leftover => {
                if rec.deleted == Some(true) {
                    self.bytes += rec.bytes.unwrap_or(0);
                    if rec.action == PruneAction::Leftover {
                        self.leftovers += 1;
                    } else {
                        self.deleted += 1;
                    }
                } else {
                    self.would_delete += 1;
                }
            }
        }
    }

    fn counts(&self, dry_run: bool, held: Option<&str>) -> PruneCounts {
        PruneCounts {
            kept: self.kept,
            deleted: self.deleted,
            corrupt: self.corrupt,
            ignored: self.ignored,
            leftovers_removed: self.leftovers,
            bytes_freed: self.bytes,
            dry_run,
            held: held.map(str::to_string),
            would_delete: held.map(|_| self.would_delete),
        }
    }
}

fn read_verdicts(
    rd: impl Iterator<Item = Result<Line, LineError>>,
    root: &Path,
    em: &mut Emitter,
    v: &mut Verdicts,
    source: &str,
) -> Result<(), Error> {
    let mut bad = reader::BadLines::new(source);
    for item in rd {
        let res = item.and_then(|line| match line.event() {
            "error" => {
                v.upstream_failed = true;
                Ok(())
            }
            "verify" => read_verdict(&line, root, v),
            _ => Ok(()),
        });
        if let Err(e) = res {
            v.input_errors += 1;
            bad.note(&e);
            em.emit(&ErrorRecord::new(e.to_string()).line(e.line, Some(source)))?;
        }
    }
    bad.finish();
    Ok(())
}

/// One `verify` record's verdict on a set directly under the root.
fn read_verdict(line: &Line, root: &Path, v: &mut Verdicts) -> Result<(), LineError> {
    let rec: Verify = line.parse()?;
    let p = PathBuf::from(&rec.path);
    let parent = p.parent().and_then(|d| d.canonicalize().ok());
    if parent.as_deref() != Some(root) {
        return Err(LineError {
            line: line.number,
            msg: format!(
                "{} is not directly under {}; refused",
                p.display(),
                root.display()
            ),
        });
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(rec.set.clone());
    let said = Said {
        ok: rec.ok,
        depth: Some(rec.depth),
        why: verdicts::failure_detail(&rec.checks, &[]),
        restore_s: rec.restore_s,
        at: line.ts(),
    };
    v.by_set.entry(name).or_default().fold(said);
    Ok(())
}

/// Delete entries crash-safely: each set is first renamed to a hidden
/// trash name (never mistaken for a set, removed by the next run if this
/// one dies), the root is fsynced once, then the trash is removed on two
/// threads. Returns, per decision index, the bytes freed or the error.
fn delete_all(
    root: &Path,
    entries: &[scan::Entry],
    decisions: &[plan::Decision],
    doomed: &[usize],
) -> HashMap<usize, Result<u64, String>> {
    let mut results = HashMap::new();
    let mut trash: Vec<(usize, PathBuf, bool)> = Vec::new();
    for &k in doomed {
        let e = &entries[decisions[k].index];
        let meta = match e.path.symlink_metadata() {
            Ok(m) => m,
            Err(err) => {
                results.insert(k, Err(opskit::exit::describe_io("checking", &e.path, &err)));
                continue;
            }
        };
        if meta.file_type().is_symlink() || e.path.parent() != Some(root) {
            results.insert(
                k,
                Err(format!(
                    "{} is not directly under {}; not deleted",
                    e.path.display(),
                    root.display()
                )),
            );
            continue;
        }
        if !meta.is_dir() {
            trash.push((k, e.path.clone(), false));
        } else if durable::is_trash_name(&e.name) {
            trash.push((k, e.path.clone(), true));
        } else {
            let t = root.join(durable::trash_name(&e.name));
            match fs::rename(&e.path, &t) {
                Ok(()) => trash.push((k, t, true)),
                Err(err) => {
                    results.insert(
                        k,
                        Err(opskit::exit::describe_io("moving to trash", &e.path, &err)),
                    );
                }
            }
        }
    }
    if let Err(err) = durable::fsync_dir(root) {
        log::warn!("syncing {}: {err}", root.display());
    }
    let removed = opskit::pool::map(&trash, 2, |(k, path, is_dir)| {
        let res = if *is_dir {
            scan::remove_tree(path)
        } else {
            path.symlink_metadata()
                .map(|m| m.len())
                .and_then(|n| fs::remove_file(path).map(|()| n))
        };
        (
            *k,
            res.map_err(|err| opskit::exit::describe_io("deleting", path, &err)),
        )
    });
    results.extend(removed);
    results
}
