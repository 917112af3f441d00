//! `offsite prune`: retention for the remote copies with the same policy
//! code, flags and safety rules as prune's ([`opskit::retention`]: the
//! newest set stays, the `--min-keep` newest verified sets stay, a damaged
//! copy never fills a slot). A set is deleted manifest first, so an
//! interrupted prune leaves an incomplete set (removed by a later run),
//! never a set that looks whole and is not.
//!
//! Only a manifest a trusted key signed, for this set's name and not
//! dated in the future, makes a remote set a restore point: anyone with
//! the bucket's keys can upload a `MANIFEST.json`, and sets of theirs that
//! filled the policy's slots would have the real ones deleted. One that
//! fails is a corrupt set: named, kept (deleted only with
//! `--delete-corrupt`), never in a slot. The ancestors it names are kept
//! with it (keeping more is safe), and while it is kept no remote WAL is
//! deleted: its start cannot be believed. A manifest that cannot be
//! downloaded stops the prune before anything is deleted.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST, Manifest};
use opskit::cli::TrustArgs;
use opskit::records::{OffsiteCounts, Prune, PruneAction};
use opskit::retention::{self, PolicyArgs, Status};
use opskit::{Done, Emitter, Exit, Result, units};
use opskit_s3::Store;
use opskit_s3::sets::{RemoteInfo, RemoteSets, remote_sets};

#[derive(Debug, ClapArgs)]
pub struct PruneArgs {
    /// s3://BUCKET[/PREFIX] (default: --url, OPSKIT_OFFSITE_URL).
    #[arg(value_name = "URL")]
    pub bucket: Option<String>,

    #[command(flatten)]
    pub rules: PolicyArgs,

    /// Remove incomplete remote sets (an interrupted push) older than this.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = units::duration_arg)]
    pub stale_after: Duration,

    /// Decide and report, delete nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn run(args: &crate::Args, p: &PruneArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let rules = p.rules.checked()?;
    let trust = p.trust.trust()?;
    let store = args.store(p.bucket.as_deref())?;
    let sets = remote_sets(&store)?;
    let now = Utc::now();
    let status_of = statuses(args)?;
    let (complete, mut incomplete): (Vec<_>, Vec<_>) = sets.iter().partition(|(_, s)| s.complete);
    // Each complete set's manifest, downloaded once and checked: for its
    // chain here, for the WAL the kept ones need below. One that cannot be
    // downloaded stops the prune before anything is deleted (the set may
    // be a kept set's parent); one listed larger than any set's is not a
    // set's, and fails its checks as a forged one does.
    let mut fetched = Vec::with_capacity(complete.len());
    for (name, info) in &complete {
        match crate::remote::fetch(&store, name, info) {
            Err(e) if e.exit == Exit::Failure => {
                return Err(opskit::Error::new(
                    e.exit,
                    format!("{}; nothing was deleted", e.msg),
                ));
            }
            got => fetched.push(got),
        }
    }
    let manifests: Vec<Result<Manifest>> = complete
        .iter()
        .zip(&fetched)
        .map(|((name, _), f)| match f {
            Ok(f) => f.check(&store, name, &trust).map(|s| s.manifest),
            Err(e) => Err(e.clone()),
        })
        .collect();
    let entries: Vec<retention::Entry> = complete
        .iter()
        .zip(&manifests)
        .zip(&fetched)
        .map(|(((name, s), m), f)| match m {
            Ok(m) => retention::Entry::set(name, s.time, status_of(name))
                .needing(opskit::chain::needs(m)),
            // A set whose manifest fails its checks (unsigned, a key not
            // trusted, dated in the future, another set's) is no restore
            // point: anyone with the bucket's keys can make one, and one
            // that filled a slot would have the real sets deleted. Kept
            // and named, as a damaged copy is; the ancestors it names are
            // kept with it, as keeping more is safe.
            Err(e) => retention::Entry::set(name, s.time, Status::Corrupt(e.msg.clone())).needing(
                f.as_ref()
                    .ok()
                    .and_then(|f| f.unchecked(&store, name).ok())
                    .map(|m| opskit::chain::needs(&m))
                    .unwrap_or_default(),
            ),
        })
        .collect();
    let mut out = Outcome::new(&store, &sets, p.dry_run);
    let mut kept: Vec<&Result<Manifest>> = Vec::new();
    for d in retention::apply(&entries, &rules, now) {
        let e = &entries[d.index];
        let (action, detail) = match d.action {
            retention::Action::Keep => (PruneAction::Keep, None),
            retention::Action::Delete => (PruneAction::Delete, None),
            retention::Action::Corrupt(why) => (PruneAction::Corrupt, Some(why)),
        };
        if action != PruneAction::Delete {
            kept.push(&manifests[d.index]);
        }
        let mut rec = out.record(&e.name, Some(e.time), action, detail, Some(d.reasons));
        rec.verified = d.verified;
        out.report(rec, em)?;
    }
    // The incomplete sets (an interrupted push, or one still running).
    incomplete.sort_by_key(|(name, _)| *name);
    for (name, s) in incomplete {
        let rec = leftover(&out, name, s, now, p.stale_after);
        out.report(rec, em)?;
    }
    match crate::wal::prune_remote(&store, &kept, p.dry_run, em) {
        Ok(bytes) => out.counts.bytes += bytes,
        Err(e) => {
            log::error!("{}", e.msg);
            out.exit = out.exit.worst(Exit::Failure);
        }
    }
    Ok(Done::new(out.exit, out.counts))
}

/// The status of each remote set: a damaged remote copy is corrupt; a copy
/// of a set that passed verification (offsite pushes nothing else) counts
/// as verified.
fn statuses(args: &crate::Args) -> Result<impl Fn(&str) -> Status> {
    let root = args.root.as_deref();
    let local = match root {
        Some(r) => opskit::verdicts::VerdictLog::local(r).passed()?,
        None => Default::default(),
    };
    let remote = crate::verify::remote_verdicts(root);
    Ok(move |name: &str| match remote.get(name) {
        Some(false) => Status::Corrupt("failed offsite verify".into()),
        Some(true) => Status::Good,
        None if local.get(name) == Some(&true) => Status::Good,
        None => Status::Unknown,
    })
}

/// The record of an incomplete set: removed once older than `stale_after`.
fn leftover(
    out: &Outcome,
    name: &str,
    s: &RemoteInfo,
    now: DateTime<Utc>,
    stale_after: Duration,
) -> Prune {
    let age_s = (now - s.time).num_seconds().max(0) as u64;
    if age_s >= stale_after.as_secs() {
        let why = "incomplete: an interrupted push".to_string();
        out.record(name, None, PruneAction::Leftover, Some(why), None)
    } else {
        let why = format!(
            "incomplete, younger than {}: a push may be running",
            units::format_duration(stale_after)
        );
        out.record(
            name,
            None,
            PruneAction::Ignored,
            Some(why),
            Some(Vec::new()),
        )
    }
}

/// The deletions of one run and their counts.
struct Outcome<'a> {
    store: &'a Store,
    sets: &'a RemoteSets,
    dry_run: bool,
    counts: OffsiteCounts,
    exit: Exit,
}

impl<'a> Outcome<'a> {
    fn new(store: &'a Store, sets: &'a RemoteSets, dry_run: bool) -> Self {
        Outcome {
            store,
            sets,
            dry_run,
            counts: OffsiteCounts::default(),
            exit: Exit::Ok,
        }
    }

    /// The `prune` record of a remote set, before any deletion.
    fn record(
        &self,
        name: &str,
        created_at: Option<DateTime<Utc>>,
        action: PruneAction,
        detail: Option<String>,
        reasons: Option<Vec<String>>,
    ) -> Prune {
        Prune {
            path: self.store.remote.url(&format!("{name}/")),
            name: name.to_string(),
            created_at,
            action,
            reasons,
            detail,
            verified: None,
            verified_depth: None,
            bytes: None,
            deleted: None,
            error: None,
        }
    }

    /// Delete the set if its record says so (and this is no dry run), count
    /// it and emit its record.
    fn report(&mut self, mut rec: Prune, em: &mut Emitter) -> Result<()> {
        self.counts.sets += 1;
        let doomed = matches!(rec.action, PruneAction::Delete | PruneAction::Leftover);
        let result = (doomed && !self.dry_run)
            .then(|| delete_set(self.store, &rec.name, self.sets.get(&rec.name)));
        rec.deleted = doomed.then_some(matches!(result, Some(Ok(_))));
        match result {
            Some(Ok(bytes)) => {
                rec.bytes = Some(bytes);
                self.counts.done += 1;
                self.counts.bytes += bytes;
            }
            Some(Err(msg)) => {
                log::error!("{msg}");
                rec.error = Some(msg);
                self.counts.failed += 1;
                self.exit = self.exit.worst(Exit::Failure);
            }
            None => {}
        }
        if rec.action == PruneAction::Corrupt {
            self.exit = self.exit.worst(Exit::CheckFailed);
        }
        em.emit(&rec)
    }
}

/// Delete a remote set: its manifest first, then the rest.
fn delete_set(
    store: &Store,
    name: &str,
    info: Option<&RemoteInfo>,
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
