//! `offsite prune`: retention for the remote copies with prune's own
//! policy code, flags and safety rules (the newest set stays, the
//! `--min-keep` newest verified sets stay, a damaged copy never fills a
//! slot). A set is deleted manifest first, so an interrupted prune leaves
//! an incomplete set (removed by a later run), never a set that looks
//! whole and is not.

use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST};
use opskit::records::{OffsiteCounts, Prune, PruneAction};
use opskit::{Done, Emitter, Exit, Result, units};
use prune::plan::{self, Action, Status};
use prune::scan::{Entry, Kind};

use crate::list::remote_sets;
use crate::s3::Store;

#[derive(Debug, ClapArgs)]
pub struct PruneArgs {
    #[command(flatten)]
    pub rules: prune::PolicyArgs,

    /// Remove incomplete remote sets (an interrupted push) older than this.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = units::duration_arg)]
    pub stale_after: Duration,

    /// Decide and report, delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
}

pub fn run(args: &crate::Args, p: &PruneArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let policy = p.rules.checked()?;
    let store = args.store(None)?;
    let sets = remote_sets(&store)?;
    let now = Utc::now();
    let entries: Vec<Entry> = sets
        .iter()
        .map(|(name, s)| Entry {
            name: name.clone(),
            path: PathBuf::from(store.remote.url(&format!("{name}/"))),
            kind: if s.complete {
                Kind::Set { time: s.time }
            } else {
                Kind::Leftover {
                    age_s: (now - s.time).num_seconds().max(0) as u64,
                    trash: false,
                }
            },
        })
        .collect();
    let root = args.root.as_deref();
    let local = match root {
        Some(r) => backupset::latest_verdicts(r)?,
        None => Default::default(),
    };
    let remote = crate::fetch::remote_verdicts(root);
    // A damaged remote copy is corrupt; a copy of a set that passed
    // verification (offsite pushes nothing else) counts as verified.
    let status_of = |name: &str| match remote.get(name) {
        Some(false) => Status::Corrupt("failed offsite verify".into()),
        Some(true) => Status::Good,
        None if local.get(name) == Some(&true) => Status::Good,
        None => Status::Unknown,
    };
    let decisions = plan::decide(
        &entries,
        &policy,
        p.rules.tz,
        now,
        p.rules.min_keep,
        p.rules.delete_corrupt,
        status_of,
    );
    let mut counts = OffsiteCounts::default();
    let mut exit = Exit::Ok;
    for d in &decisions {
        let e = &entries[d.index];
        counts.sets += 1;
        let stale =
            matches!(e.kind, Kind::Leftover { age_s, .. } if age_s >= p.stale_after.as_secs());
        let (action, detail) = match &d.action {
            Action::Keep => (PruneAction::Keep, None),
            Action::Delete => (PruneAction::Delete, None),
            Action::Corrupt(why) => (PruneAction::Corrupt, Some(why.clone())),
            Action::Ignored(why) => (PruneAction::Ignored, Some(why.clone())),
            Action::Leftover if stale => (
                PruneAction::Leftover,
                Some("incomplete: an interrupted push".into()),
            ),
            Action::Leftover => (
                PruneAction::Ignored,
                Some(format!(
                    "incomplete, younger than {}: a push may be running",
                    units::format_duration(p.stale_after)
                )),
            ),
        };
        let doomed = matches!(action, PruneAction::Delete | PruneAction::Leftover);
        let result = (doomed && !p.dry_run).then(|| delete_set(&store, &e.name, sets.get(&e.name)));
        let mut rec = Prune {
            path: e.path.display().to_string(),
            name: e.name.clone(),
            created_at: match e.kind {
                Kind::Set { time } => Some(time),
                _ => None,
            },
            action,
            reasons: (action != PruneAction::Leftover).then(|| d.reasons.clone()),
            detail,
            verified: d.verified,
            verified_depth: None,
            bytes: None,
            deleted: doomed.then_some(matches!(result, Some(Ok(_)))),
            error: None,
        };
        match result {
            Some(Ok(bytes)) => {
                rec.bytes = Some(bytes);
                counts.done += 1;
                counts.bytes += bytes;
            }
            Some(Err(msg)) => {
                log::error!("{msg}");
                rec.error = Some(msg);
                counts.failed += 1;
                exit = exit.worst(Exit::Failure);
            }
            None => {}
        }
        if action == PruneAction::Corrupt {
            exit = exit.worst(Exit::CheckFailed);
        }
        em.emit(&rec)?;
    }
    let kept: Vec<String> = decisions
        .iter()
        .filter(|d| matches!(d.action, Action::Keep | Action::Corrupt(_)))
        .map(|d| entries[d.index].name.clone())
        .collect();
    match crate::wal::prune_remote(&store, &kept, p.dry_run, em) {
        Ok(bytes) => counts.bytes += bytes,
        Err(e) => {
            log::error!("{}", e.msg);
            exit = exit.worst(Exit::Failure);
        }
    }
    Ok(Done::new(exit, counts))
}

/// Delete a remote set: its manifest first, then the rest.
fn delete_set(
    store: &Store,
    name: &str,
    info: Option<&crate::list::RemoteInfo>,
) -> std::result::Result<u64, String> {
    let Some(info) = info else { return Ok(0) };
    let mut files: Vec<&String> = info.sizes.keys().collect();
    files.sort_by_key(|f| (f.as_str() != MANIFEST, f.as_str() == backupset::SUMS));
    let mut bytes = 0;
    for f in files {
        store
            .delete(&store.remote.key(name, f))
            .map_err(|e| e.msg)?;
        bytes += info.sizes[f];
    }
    Ok(bytes)
}
