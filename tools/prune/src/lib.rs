//! prune: apply a retention policy to the backup sets under a root, never
//! deleting the wrong thing.

pub mod plan;
pub mod policy;
pub mod scan;

use std::collections::HashMap;
use std::fs;
use std::io::IsTerminal;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use chrono_tz::Tz;
use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::record::Fields;
use opskit::{Emitter, Error, Exit, IoContext, backupset, durable, fields, lock, reader, units};

use crate::plan::{Action, Status};
use crate::policy::{Policy, Span};
use crate::scan::Kind;

/// Apply a retention policy to the backup sets under ROOT.
///
/// The policy flags mean what they mean for restic's `forget`: sets are taken
/// newest first; each rule keeps the newest set of each period it has not yet
/// counted; a set is kept when any rule keeps it. Durations are restic's
/// (7d, 1y6m, 2d12h). -1 means unlimited.
///
/// Whatever the policy: the newest set is kept; the --min-keep newest sets
/// that passed verification are kept; a set that failed verification never
/// fills a keep slot and is deleted only with --delete-corrupt; nothing but
/// backup sets directly under ROOT is ever deleted. Verification results come
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

    /// Keep the N newest sets.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_last: Option<i64>,
    /// Keep the newest set of each of the N newest hours with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest set of each of the N newest days with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_daily: Option<i64>,
    /// Keep the newest set of each of the N newest ISO weeks with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest set of each of the N newest months with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest set of each of the N newest years with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_yearly: Option<i64>,
    /// Keep every set newer than DURATION before the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within: Option<Span>,
    /// Keep the newest set of each hour within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_hourly: Option<Span>,
    /// Keep the newest set of each day within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_daily: Option<Span>,
    /// Keep the newest set of each ISO week within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_weekly: Option<Span>,
    /// Keep the newest set of each month within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_monthly: Option<Span>,
    /// Keep the newest set of each year within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_yearly: Option<Span>,

    /// Calendar periods in this IANA zone (e.g. Europe/Berlin) instead of UTC.
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = zone)]
    pub tz: Tz,

    /// Always keep this many of the newest sets that passed verification
    /// (unverified sets fill in when too few are verified).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_keep: usize,

    /// Delete sets that failed verification (never the newest set).
    #[arg(long)]
    pub delete_corrupt: bool,

    /// Remove temporary directories of interrupted runs older than this.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = duration)]
    pub stale_after: Duration,

    /// Also apply the policy to plain files matching this glob (legacy
    /// one-liner backups, e.g. 'backup_*.sql.gz'); time from the name, else mtime.
    #[arg(long, value_name = "GLOB")]
    pub glob: Option<String>,

    /// verify-backup result log to read (default: ROOT/verified.ndjson if present).
    #[arg(long, value_name = "FILE")]
    pub verified: Option<PathBuf>,

    /// Decide and report, delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    /// Wait this long for a pgbackup or prune running on ROOT.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    pub lock_wait: Duration,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

fn count(s: &str) -> std::result::Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!(
            "'{s}' is not a count (a whole number, or -1 for unlimited)"
        )),
    }
}

fn span(s: &str) -> std::result::Result<Span, String> {
    Span::parse(s).map_err(|e| e.msg)
}

fn duration(s: &str) -> std::result::Result<Duration, String> {
    units::parse_duration(s).map_err(|e| e.msg)
}

fn zone(s: &str) -> std::result::Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("unknown time zone '{s}' (use an IANA name such as Europe/Berlin)"))
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

impl Args {
    pub fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or(0),
            counts: [
                self.keep_hourly.unwrap_or(0),
                self.keep_daily.unwrap_or(0),
                self.keep_weekly.unwrap_or(0),
                self.keep_monthly.unwrap_or(0),
                self.keep_yearly.unwrap_or(0),
            ],
            within: self.keep_within,
            within_periods: [
                self.keep_within_hourly,
                self.keep_within_daily,
                self.keep_within_weekly,
                self.keep_within_monthly,
                self.keep_within_yearly,
            ],
        }
    }
}

/// What the verification records say, and whether any input was bad.
#[derive(Default)]
struct Verdicts {
    by_set: HashMap<String, (bool, String)>,
    input_errors: u64,
    upstream_failed: bool,
}

pub fn run(args: Args, em: &mut Emitter) -> std::result::Result<Exit, Error> {
    let start = Instant::now();
    let policy = args.policy();
    if policy.is_empty() {
        return Err(Error::usage(
            "no keep rule given: refusing to delete every set (use e.g. --keep-daily 7 --keep-weekly 4)",
        ));
    }
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
    let piped: Vec<std::result::Result<Fields, reader::LineError>> = if stdin_has_records() {
        let mut rd = reader::open(None)?;
        let v: Vec<_> = rd.by_ref().collect();
        if let Some(e) = rd.take_io_error() {
            return Err(e);
        }
        v
    } else {
        Vec::new()
    };
    let root = args
        .root
        .canonicalize()
        .at("opening backup root", &args.root)?;
    if !root.is_dir() {
        return Err(Error::usage(format!(
            "{} is not a directory",
            args.root.display()
        )));
    }
    let _lock = lock::acquire(&root.join(backupset::LOCK_FILE), args.lock_wait)?;

    let mut verdicts = Verdicts::default();
    let log_file = args.verified.clone().or_else(|| {
        let p = root.join(backupset::VERIFIED_LOG);
        p.exists().then_some(p)
    });
    if let Some(f) = &log_file {
        let rd = reader::open(Some(&f.display().to_string()))?;
        read_verdicts(rd, &root, em, &mut verdicts, f.display().to_string());
    }
    read_verdicts(piped.into_iter(), &root, em, &mut verdicts, "stdin".into());

    let entries = scan::scan(&root, glob.as_ref(), args.tz)?;
    let decisions = plan::decide(
        &entries,
        &policy,
        args.tz,
        Utc::now(),
        args.min_keep,
        args.delete_corrupt,
        |name| match verdicts.by_set.get(name) {
            Some((true, _)) => Status::Good,
            Some((false, why)) => Status::Corrupt(why.clone()),
            None => Status::Unknown,
        },
    );

    let hold = if args.dry_run {
        Some("dry run")
    } else if verdicts.upstream_failed {
        Some("an upstream step failed")
    } else if verdicts.input_errors > 0 {
        Some("some verification records could not be read")
    } else {
        None
    };
    if let Some(why) = hold
        && !args.dry_run
    {
        log::warn!("{why}: nothing is deleted this run");
    }

    // Final actions (temp dirs are leftovers only once stale), then the
    // deletions in bulk: every doomed entry renamed to trash, one fsync of
    // the root, then the trash removed on two threads.
    let stale = args.stale_after.as_secs();
    let actions: Vec<Action> = decisions
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
        .collect();
    let doomed: Vec<usize> = (0..decisions.len())
        .filter(|&k| matches!(actions[k], Action::Delete | Action::Leftover))
        .collect();
    let results: HashMap<usize, std::result::Result<u64, String>> = if hold.is_none() {
        delete_all(&root, &entries, &decisions, &doomed)
    } else {
        HashMap::new()
    };

    let mut tally = Tally::default();
    let mut exit = Exit::Ok;
    for (k, d) in decisions.iter().enumerate() {
        let e = &entries[d.index];
        let act = &actions[k];
        let mut rec = fields! {"path" => e.path.display().to_string(), "name" => e.name};
        if let Kind::Set { time } | Kind::Legacy { time } = &e.kind {
            rec.insert("created_at".into(), serde_json::json!(time));
        }
        rec.insert("action".into(), serde_json::json!(act.name()));
        match act {
            Action::Keep | Action::Delete => {
                rec.insert("reasons".into(), serde_json::json!(d.reasons));
            }
            Action::Corrupt(why) | Action::Ignored(why) => {
                rec.insert("reasons".into(), serde_json::json!(d.reasons));
                rec.insert("detail".into(), serde_json::json!(why));
            }
            Action::Leftover => {}
        }
        if let Some(s) = d.verified {
            rec.insert("verified".into(), serde_json::json!(s));
        }
        let mut deleted = false;
        let mut bytes = 0;
        match results.get(&k) {
            Some(Ok(b)) => {
                deleted = true;
                bytes = *b;
                rec.insert("bytes".into(), serde_json::json!(b));
            }
            Some(Err(msg)) => {
                exit = exit.worst(Exit::Failure);
                log::error!("{msg}");
                rec.insert("error".into(), serde_json::json!(msg));
            }
            None => {}
        }
        if matches!(act, Action::Delete | Action::Leftover) {
            rec.insert("deleted".into(), serde_json::json!(deleted));
        }
        tally.count(act, deleted, bytes);
        if matches!(act, Action::Corrupt(_)) {
            exit = exit.worst(Exit::CheckFailed);
        }
        em.emit("prune", &rec);
    }
    if verdicts.upstream_failed || verdicts.input_errors > 0 {
        exit = exit.worst(Exit::Failure);
    }
    let mut summary = fields! {
        "ok" => exit == Exit::Ok,
        "kept" => tally.kept,
        "deleted" => tally.deleted,
        "corrupt" => tally.corrupt,
        "ignored" => tally.ignored,
        "leftovers_removed" => tally.leftovers,
        "bytes_freed" => tally.bytes,
        "dry_run" => args.dry_run,
        "duration_s" => opskit::record::secs(start.elapsed()),
    };
    if let Some(why) = hold {
        summary.insert("held".into(), serde_json::json!(why));
        summary.insert("would_delete".into(), serde_json::json!(tally.would_delete));
    }
    em.emit("summary", &summary);
    Ok(exit)
}

#[derive(Default)]
struct Tally {
    kept: u64,
    deleted: u64,
    would_delete: u64,
    corrupt: u64,
    ignored: u64,
    leftovers: u64,
    bytes: u64,
}

impl Tally {
    fn count(&mut self, act: &Action, deleted: bool, bytes: u64) {
        match act {
            Action::Keep => self.kept += 1,
            Action::Corrupt(_) => self.corrupt += 1,
            Action::Ignored(_) => self.ignored += 1,
            Action::Delete | Action::Leftover => {
                if deleted {
                    self.bytes += bytes;
                    if matches!(act, Action::Leftover) {
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
}

/// Read stdin only when something was piped or redirected into it, so a
/// prune started from a terminal or by systemd (stdin /dev/null) never waits.
fn stdin_has_records() -> bool {
    if std::io::stdin().is_terminal() {
        return false;
    }
    match fs::metadata("/proc/self/fd/0") {
        Ok(m) => m.file_type().is_fifo() || m.is_file(),
        Err(_) => false,
    }
}

fn read_verdicts(
    rd: impl Iterator<Item = std::result::Result<Fields, reader::LineError>>,
    root: &Path,
    em: &mut Emitter,
    v: &mut Verdicts,
    source: String,
) {
    for (i, item) in rd.enumerate() {
        let rec: Fields = match item {
            Ok(r) => r,
            Err(e) => {
                v.input_errors += 1;
                em.emit("error", &fields! {"ok" => false, "source" => source, "line" => e.line, "message" => e.to_string()});
                continue;
            }
        };
        let event = rec.get("event").and_then(|e| e.as_str()).unwrap_or("");
        if event == "error" {
            v.upstream_failed = true;
            continue;
        }
        if event != "verify" {
            continue;
        }
        let ok = rec.get("ok").and_then(|o| o.as_bool()).unwrap_or(false);
        let name = match rec.get("path").and_then(|p| p.as_str()) {
            Some(p) => {
                let p = PathBuf::from(p);
                let parent = p.parent().and_then(|d| d.canonicalize().ok());
                if parent.as_deref() != Some(root) {
                    v.input_errors += 1;
                    em.emit(
                        "error",
                        &fields! {"ok" => false, "source" => source, "line" => i + 1,
                                  "message" => format!("{} is not directly under {}; refused", p.display(), root.display())},
                    );
                    continue;
                }
                p.file_name().map(|n| n.to_string_lossy().into_owned())
            }
            None => rec.get("set").and_then(|s| s.as_str()).map(str::to_string),
        };
        let Some(name) = name else { continue };
        let why = if ok {
            String::new()
        } else {
            failed_detail(&rec)
        };
        v.by_set.insert(name, (ok, why));
    }
}

/// "failed verification: sha256 db.dump.gz, ..." from a verify record.
fn failed_detail(rec: &Fields) -> String {
    let failed: Vec<String> = rec
        .get("checks")
        .and_then(|c| c.as_array())
        .map(|a| {
            a.iter()
                .filter(|c| c["ok"] == false)
                .map(|c| {
                    format!(
                        "{} {}",
                        c["name"].as_str().unwrap_or("?"),
                        c["file"].as_str().unwrap_or("")
                    )
                    .trim()
                    .to_string()
                })
                .collect()
        })
        .unwrap_or_default();
    if failed.is_empty() {
        "failed verification".into()
    } else {
        format!("failed verification: {}", failed.join(", "))
    }
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
) -> HashMap<usize, std::result::Result<u64, String>> {
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
