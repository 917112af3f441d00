//! Retention: which backup sets a policy keeps and which it removes, and
//! why, as restic's `ApplyPolicy(list, policy) -> (keep, remove, reasons)`
//! decides for snapshots, with the safety rules no policy overrides.
//!
//! [`apply`] is a pure function of its input: entries (name, series, time,
//! verification status), not paths or directory entries, so a local root
//! (`prune`) and a bucket (`offsite prune`) are decided by the same code.
//! Their flags are [`PolicyArgs`], flattened into both tools' arguments.
//!
//! * The keep rules ([`Policy`]) mean what restic's `forget` flags mean
//!   (the details are in `retention/policy.rs`); durations are restic's
//!   ([`Span`]).
//! * Each series (sets of one name: `app` dumps, `app-base` base sets) is
//!   kept by the policy on its own, as restic groups snapshots.
//! * A set that failed verification never fills a keep slot (the next good
//!   set takes it) and is removed only with `delete_corrupt`.
//! * The newest entry of each series stays, whatever it is; so do the
//!   `min_keep` newest verified ones, unverified ones filling in when too
//!   few are verified.

mod args;
mod policy;
mod span;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use args::PolicyArgs;
pub use policy::Policy;
pub use span::Span;

use crate::backupset;

/// What verification says of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    Unknown,
    /// Failed verification (or is damaged), and why.
    Corrupt(String),
}

/// One set (or legacy backup file) to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The series it belongs to: the policy keeps each series on its own.
    pub series: String,
    pub time: DateTime<Utc>,
    pub status: Status,
    /// The sets it cannot be restored without (an incremental base set's
    /// chain): kept for as long as it is.
    pub needs: Vec<String>,
}

impl Entry {
    /// A backup set named `<series>-<time>` (`app-20261123T030000Z` is in
    /// series `app`, `app-base-...` in `app-base`: a nightly dump and a
    /// nightly base backup do not take each other's daily slot).
    pub fn set(name: &str, time: DateTime<Utc>, status: Status) -> Entry {
        let series = backupset::parse_set_dir_name(name).map_or("", |(n, _)| n);
        Entry {
            name: name.to_string(),
            series: series.to_string(),
            time,
            status,
            needs: Vec::new(),
        }
    }

    /// The same entry, depending on `needs` (its chain's sets).
    pub fn needing(mut self, needs: Vec<String>) -> Entry {
        self.needs = needs;
        self
    }
}

/// A policy and the safety rules that come with it.
#[derive(Debug, Clone)]
pub struct Rules {
    pub policy: Policy,
    /// Calendar periods are taken in this zone.
    pub tz: Tz,
    /// The newest sets that passed verification always kept.
    pub min_keep: usize,
    /// Remove sets that failed verification (never the newest).
    pub delete_corrupt: bool,
}

/// What happens to an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    /// Removed: no rule keeps it (or it is corrupt and `delete_corrupt`).
    Delete,
    /// Failed verification; kept unless `delete_corrupt`, and reported.
    Corrupt(String),
}

/// The decision on one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the entries given to [`apply`].
    pub index: usize,
    pub action: Action,
    /// Why it is kept (each rule that keeps it), or why it is removed
    /// when that is not "no rule keeps it".
    pub reasons: Vec<String>,
    /// Passed (`true`) or failed (`false`) verification; `None`: unknown.
    pub verified: Option<bool>,
}

/// Decide on every entry: one decision each, newest first (ties: the
/// larger name first). `now` only tells which sets are in the future
/// (`--keep-within` counts from the newest set that is not).
pub fn apply(entries: &[Entry], rules: &Rules, now: DateTime<Utc>) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&entries[a], &entries[b]);
        b.time.cmp(&a.time).then_with(|| b.name.cmp(&a.name))
    });
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); entries.len()];
    for group in series(entries, &order) {
        policy_reasons(entries, &group, rules, now, &mut reasons);
        safety_reasons(entries, &group, rules.min_keep, now, &mut reasons);
    }
    needed_reasons(entries, &order, rules.delete_corrupt, &mut reasons);
    order
        .into_iter()
        .map(|i| {
            let r = std::mem::take(&mut reasons[i]);
            decision(i, &entries[i].status, r, rules.delete_corrupt)
        })
        .collect()
}

/// The entries (in `order`) split by series, each keeping that order.
fn series(entries: &[Entry], order: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for &i in order {
        let key = entries[i].series.as_str();
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, v)) => v.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    groups.into_iter().map(|(_, v)| v).collect()
}

/// The policy's reasons for one series, newest first. The policy sees
/// only sets that did not fail verification, so a corrupt set never fills
/// a slot: the next good set takes it.
fn policy_reasons(
    entries: &[Entry],
    group: &[usize],
    rules: &Rules,
    now: DateTime<Utc>,
    reasons: &mut [Vec<String>],
) {
    let eligible: Vec<usize> = group
        .iter()
        .copied()
        .filter(|&i| !matches!(entries[i].status, Status::Corrupt(_)))
        .collect();
    let times: Vec<DateTime<Utc>> = eligible.iter().map(|&i| entries[i].time).collect();
    let kept = policy::keep_reasons(&times, &rules.policy, rules.tz, now);
    for (r, &i) in kept.into_iter().zip(&eligible) {
        reasons[i] = r;
    }
}

/// The rules no policy overrides, for one series, newest first: the newest
/// set stays, whatever it is (but a set named for more than a day after
/// `now` is no set's successor: anyone who can write a name could make one
/// "the newest" for ever); the `min_keep` newest verified sets stay,
/// unverified ones filling in when too few are verified.
fn safety_reasons(
    entries: &[Entry],
    group: &[usize],
    min_keep: usize,
    now: DateTime<Utc>,
    reasons: &mut [Vec<String>],
) {
    let ahead = |i: usize| crate::backupset::dated_ahead(entries[i].time, now);
    if let Some(&newest) = group.iter().find(|&&i| !ahead(i)) {
        reasons[newest].push("newest".into());
    }
    let mut held = 0;
    for (status, why) in [
        (Status::Good, "min-keep verified"),
        (Status::Unknown, "min-keep unverified"),
    ] {
        for &i in group {
            if held < min_keep && entries[i].status == status {
                reasons[i].push(why.into());
                held += 1;
            }
        }
    }
}

/// No set is deleted while a set that stays needs it, whatever the
/// flags: each ancestor of a kept set gets "needed by <set>". Newest
/// first, so an ancestor kept that way is decided before the older sets.
fn needed_reasons(
    entries: &[Entry],
    order: &[usize],
    delete_corrupt: bool,
    reasons: &mut [Vec<String>],
) {
    for &i in order {
        let stays = !reasons[i].is_empty()
            || (matches!(entries[i].status, Status::Corrupt(_)) && !delete_corrupt);
        if !stays {
            continue;
        }
        for need in &entries[i].needs {
            if let Some(j) = entries.iter().position(|e| &e.name == need) {
                let why = format!("needed by {}", entries[i].name);
                if !reasons[j].contains(&why) {
                    reasons[j].push(why);
                }
            }
        }
    }
}

/// An entry's action from its reasons and verification status.
fn decision(index: usize, status: &Status, r: Vec<String>, delete_corrupt: bool) -> Decision {
    let verified = match status {
        Status::Good => Some(true),
        Status::Corrupt(_) => Some(false),
        Status::Unknown => None,
    };
    let action = match status {
        Status::Corrupt(_) if r.is_empty() && delete_corrupt => Action::Delete,
        Status::Corrupt(why) => Action::Corrupt(why.clone()),
        _ if r.is_empty() => Action::Delete,
        _ => Action::Keep,
    };
    let reasons = match (&action, verified) {
        (Action::Delete, Some(false)) => vec!["corrupt (--delete-corrupt)".into()],
        _ => r,
    };
    Decision {
        index,
        action,
        reasons,
        verified,
    }
}

#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod tests;
