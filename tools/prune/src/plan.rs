//! The decision for every entry of a root: the policy, then the safety
//! rules no policy can override.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::policy::{self, Policy};
use crate::scan::{Entry, Kind};

/// What verification says of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    Unknown,
    Corrupt(String),
}

/// What happens to an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Keep,
    Delete,
    /// Failed verification; kept unless `--delete-corrupt`.
    Corrupt(String),
    Ignored(String),
    /// A leftover of an interrupted run.
    Leftover,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Delete => "delete",
            Action::Corrupt(_) => "corrupt",
            Action::Ignored(_) => "ignored",
            Action::Leftover => "leftover",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Decision {
    /// Index into the entries.
    pub index: usize,
    pub action: Action,
    pub reasons: Vec<String>,
    pub verified: Option<bool>,
}

/// Decide for every entry, each series of sets on its own ([`series`]).
/// Candidates come first, newest first; then leftovers and ignored entries.
pub fn decide(
    entries: &[Entry],
    policy: &Policy,
    tz: Tz,
    now: DateTime<Utc>,
    min_keep: usize,
    delete_corrupt: bool,
    status_of: impl Fn(&str) -> Status,
) -> Vec<Decision> {
    let cands = candidates(entries, status_of);
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); cands.len()];
    for group in series(entries, &cands) {
        let sub: Vec<Candidate> = group.iter().map(|&k| cands[k].clone()).collect();
        let mut r = policy_reasons(&sub, policy, tz, now);
        safety_reasons(&sub, &mut r, min_keep);
        for (j, &k) in group.iter().enumerate() {
            reasons[k] = std::mem::take(&mut r[j]);
        }
    }
    let mut out = Vec::with_capacity(entries.len());
    for (k, c) in cands.into_iter().enumerate() {
        out.push(decision(c, std::mem::take(&mut reasons[k]), delete_corrupt));
    }
    for (i, e) in entries.iter().enumerate() {
        let action = match &e.kind {
            Kind::Leftover { .. } => Action::Leftover,
            Kind::Ignored { why } => Action::Ignored(why.clone()),
            _ => continue,
        };
        out.push(Decision {
            index: i,
            action,
            reasons: Vec::new(),
            verified: None,
        });
    }
    out
}

/// The candidates split into series, each kept by the policy on its own
/// (as restic groups snapshots): sets of one name (`app`, and `app-base`
/// for base sets, so a nightly dump and a nightly base backup do not take
/// each other's daily slot), and legacy files. Each keeps its order,
/// newest first.
fn series(entries: &[Entry], cands: &[Candidate]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (k, c) in cands.iter().enumerate() {
        let e = &entries[c.0];
        let key = match e.kind {
            Kind::Set { .. } => opskit::backupset::parse_set_dir_name(&e.name)
                .map(|(n, _)| n)
                .unwrap_or(""),
            _ => "",
        };
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, v)) => v.push(k),
            None => groups.push((key, vec![k])),
        }
    }
    groups.into_iter().map(|(_, v)| v).collect()
}

/// A set (or legacy file) the policy decides on: its entry, time, status.
type Candidate = (usize, DateTime<Utc>, Status);

/// The candidates, newest first (ties: the larger name first).
fn candidates(entries: &[Entry], status_of: impl Fn(&str) -> Status) -> Vec<Candidate> {
    let mut cands: Vec<Candidate> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.kind {
            Kind::Set { time } => Some((i, time, status_of(&e.name))),
            Kind::Legacy { time } => Some((i, time, Status::Unknown)),
            _ => None,
        })
        .collect();
    cands.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then_with(|| entries[b.0].name.cmp(&entries[a.0].name))
    });
    cands
}

/// The policy's reasons per candidate. The policy sees only sets that did
/// not fail verification, so a corrupt set never fills a slot: the next
/// good set takes it.
fn policy_reasons(
    cands: &[Candidate],
    policy: &Policy,
    tz: Tz,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    let eligible: Vec<usize> = (0..cands.len())
        .filter(|&k| !matches!(cands[k].2, Status::Corrupt(_)))
        .collect();
    let times: Vec<DateTime<Utc>> = eligible.iter().map(|&k| cands[k].1).collect();
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); cands.len()];
    for (r, &k) in policy::apply(&times, policy, tz, now)
        .into_iter()
        .zip(&eligible)
    {
        reasons[k] = r;
    }
    reasons
}

/// The rules no policy overrides: the newest set stays, whatever it is;
/// the `min_keep` newest verified sets stay, unverified ones filling in
/// when too few are verified.
fn safety_reasons(cands: &[Candidate], reasons: &mut [Vec<String>], min_keep: usize) {
    if !cands.is_empty() {
        reasons[0].push("newest".into());
    }
    let mut held = 0;
    for (status, why) in [
        (Status::Good, "min-keep verified"),
        (Status::Unknown, "min-keep unverified"),
    ] {
        for (k, c) in cands.iter().enumerate() {
            if held < min_keep && c.2 == status {
                reasons[k].push(why.into());
                held += 1;
            }
        }
    }
}

/// A candidate's action from its reasons and verification status.
fn decision((i, _, status): Candidate, r: Vec<String>, delete_corrupt: bool) -> Decision {
    let verified = match &status {
        Status::Good => Some(true),
        Status::Corrupt(_) => Some(false),
        Status::Unknown => None,
    };
    let action = match status {
        Status::Corrupt(_) if r.is_empty() && delete_corrupt => Action::Delete,
        Status::Corrupt(why) => Action::Corrupt(why),
        _ if r.is_empty() => Action::Delete,
        _ => Action::Keep,
    };
    let r = match (&action, verified) {
        (Action::Delete, Some(false)) => vec!["corrupt (--delete-corrupt)".into()],
        _ => r,
    };
    Decision {
        index: i,
        action,
        reasons: r,
        verified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opskit_testkit::tools::Rng;
    use std::path::PathBuf;

    fn set(name: &str, secs: i64) -> Entry {
        Entry {
            name: name.into(),
            path: PathBuf::from(format!("/b/{name}")),
            kind: Kind::Set {
                time: DateTime::from_timestamp(secs, 0).unwrap(),
            },
        }
    }

    #[test]
    fn dumps_and_base_sets_are_kept_each_by_the_policy() {
        let entries = vec![
            set("app-20261204T020000Z", 3000),
            set("app-base-20261204T010000Z", 2000),
            set("app-20261203T020000Z", 1000),
            set("app-base-20261203T010000Z", 500),
        ];
        let p = Policy {
            last: 1,
            ..Default::default()
        };
        let d = decide(&entries, &p, Tz::UTC, Utc::now(), 1, false, |_| {
            Status::Good
        });
        let kept: Vec<&str> = d
            .iter()
            .filter(|d| d.action == Action::Keep)
            .map(|d| entries[d.index].name.as_str())
            .collect();
        assert_eq!(kept, ["app-20261204T020000Z", "app-base-20261204T010000Z"]);
    }

    #[test]
    fn a_corrupt_set_does_not_fill_a_slot_the_next_good_set_takes_it() {
        let entries = vec![set("a", 3000), set("b", 2000), set("c", 1000)];
        let p = Policy {
            last: 2,
            ..Default::default()
        };
        let d = decide(&entries, &p, Tz::UTC, Utc::now(), 1, false, |n| {
            if n == "b" {
                Status::Corrupt("sha256 db.dump.gz".into())
            } else {
                Status::Good
            }
        });
        let by = |n: &str| {
            d.iter()
                .find(|x| entries[x.index].name == n)
                .unwrap()
                .clone()
        };
        assert_eq!(by("a").action, Action::Keep);
        assert_eq!(by("b").action, Action::Corrupt("sha256 db.dump.gz".into()));
        assert_eq!(by("c").action, Action::Keep);
        assert_eq!(by("c").reasons, vec!["last 2"]);
        let d = decide(&entries, &p, Tz::UTC, Utc::now(), 1, true, |n| {
            if n == "b" {
                Status::Corrupt("x".into())
            } else {
                Status::Good
            }
        });
        assert_eq!(d[1].action, Action::Delete);
        assert_eq!(d[1].reasons, vec!["corrupt (--delete-corrupt)"]);
    }

    #[test]
    fn the_newest_set_stays_even_when_corrupt_and_min_keep_holds_good_ones() {
        let entries = vec![set("a", 3000), set("b", 2000), set("c", 1000)];
        let p = Policy {
            last: 1,
            ..Default::default()
        };
        let d = decide(&entries, &p, Tz::UTC, Utc::now(), 1, true, |n| match n {
            "a" => Status::Corrupt("gzip".into()),
            "b" => Status::Unknown,
            _ => Status::Good,
        });
        assert_eq!(d[0].action, Action::Corrupt("gzip".into()));
        assert_eq!(d[0].reasons, vec!["newest"]);
        // keep-last 1 goes to b (a is corrupt); min-keep 1 goes to c, the newest verified.
        assert_eq!(d[1].reasons, vec!["last 1"]);
        assert_eq!(d[2].reasons, vec!["min-keep verified"]);
    }

    #[test]
    fn safety_rules_hold_for_random_policies_and_timelines() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..2000 {
            let n = 1 + rng.below(30) as usize;
            let entries: Vec<Entry> = (0..n)
                .map(|i| {
                    set(
                        &format!("s{i:02}"),
                        1_700_000_000 + rng.below(3 * 365 * 86400) as i64,
                    )
                })
                .collect();
            let statuses: Vec<Status> = (0..n)
                .map(|_| match rng.below(4) {
                    0 => Status::Corrupt("bad".into()),
                    1 => Status::Unknown,
                    _ => Status::Good,
                })
                .collect();
            let mut c = || [-1i64, 0, 0, 1, 2, 3, 5][rng.below(7) as usize];
            let mut p = Policy {
                last: c(),
                counts: [c(), c(), c(), c(), c()],
                ..Default::default()
            };
            if rng.below(3) == 0 {
                p.within = Some(crate::policy::Span {
                    days: rng.below(60) as u32,
                    ..Default::default()
                });
            }
            let min_keep = rng.below(4) as usize;
            let delete_corrupt = rng.below(2) == 0;
            let status_of = |name: &str| statuses[name[1..].parse::<usize>().unwrap()].clone();
            let d = decide(
                &entries,
                &p,
                Tz::UTC,
                Utc::now(),
                min_keep,
                delete_corrupt,
                status_of,
            );
            assert_eq!(d.len(), n, "round {round}");
            // The newest set is never deleted.
            let newest = entries
                .iter()
                .map(|e| match e.kind {
                    Kind::Set { time } => time,
                    _ => unreachable!(),
                })
                .max()
                .unwrap();
            assert_ne!(d[0].action, Action::Delete, "round {round}");
            assert!(matches!(entries[d[0].index].kind, Kind::Set { time } if time == newest));
            // The min_keep newest good sets are kept.
            let good_total = statuses.iter().filter(|s| **s == Status::Good).count();
            let good_kept = d
                .iter()
                .filter(|x| x.verified == Some(true) && x.action == Action::Keep)
                .count();
            assert!(
                good_kept >= min_keep.min(good_total),
                "round {round}: {good_kept} < {min_keep}"
            );
            for x in &d {
                let st = &statuses[entries[x.index].name[1..].parse::<usize>().unwrap()];
                match x.action {
                    // A corrupt set is never kept by a policy slot.
                    Action::Keep => assert!(!matches!(st, Status::Corrupt(_)), "round {round}"),
                    Action::Delete => {
                        if let Status::Corrupt(_) = st {
                            assert!(delete_corrupt, "round {round}");
                        } else {
                            assert!(
                                x.reasons.is_empty(),
                                "round {round}: deleted with reasons {:?}",
                                x.reasons
                            );
                        }
                    }
                    Action::Corrupt(_) => assert!(
                        x.reasons.iter().all(|r| r == "newest"),
                        "round {round}: {:?}",
                        x.reasons
                    ),
                    _ => unreachable!(),
                }
            }
        }
    }
}
