//! The decision for every entry of a root: sets and legacy files are
//! decided by the shared retention policy ([`opskit::retention::apply`]);
//! leftovers of interrupted runs and everything else are prune's own.

use chrono::{DateTime, Utc};
use opskit::retention::{self, Rules, Status};

use crate::scan::{Entry, Kind};

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

impl From<retention::Action> for Action {
    fn from(a: retention::Action) -> Action {
        match a {
            retention::Action::Keep => Action::Keep,
            retention::Action::Delete => Action::Delete,
            retention::Action::Corrupt(why) => Action::Corrupt(why),
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

/// Decide for every entry. Sets and legacy files (each legacy file
/// unverified, all of them one series) come first, newest first; then
/// leftovers and ignored entries.
pub fn decide(
    entries: &[Entry],
    rules: &Rules,
    now: DateTime<Utc>,
    status_of: impl Fn(&str) -> Status,
) -> Vec<Decision> {
    let (at, candidates): (Vec<usize>, Vec<retention::Entry>) = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e.kind {
            Kind::Set { time } => Some((
                i,
                retention::Entry::set(&e.name, time, status_of(&e.name)).needing(e.needs.clone()),
            )),
            Kind::Legacy { time } => Some((
                i,
                retention::Entry {
                    name: e.name.clone(),
                    series: String::new(),
                    time,
                    status: Status::Unknown,
                    needs: Vec::new(),
                },
            )),
            _ => None,
        })
        .unzip();
    let mut out: Vec<Decision> = retention::apply(&candidates, rules, now)
        .into_iter()
        .map(|d| Decision {
            index: at[d.index],
            action: d.action.into(),
            reasons: d.reasons,
            verified: d.verified,
        })
        .collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;
    use opskit::retention::Policy;
    use std::path::PathBuf;

    fn entry(name: &str, kind: Kind) -> Entry {
        Entry {
            name: name.into(),
            path: PathBuf::from(format!("/b/{name}")),
            kind,
            needs: Vec::new(),
        }
    }

    #[test]
    fn sets_and_legacy_files_are_decided_then_the_rest_is_listed() {
        let time = |secs| DateTime::from_timestamp(secs, 0).unwrap();
        let entries = vec![
            entry("app-20261203T020000Z", Kind::Set { time: time(1000) }),
            entry(
                ".tmp-x",
                Kind::Leftover {
                    age_s: 9,
                    trash: false,
                },
            ),
            entry("backup_1.sql.gz", Kind::Legacy { time: time(500) }),
            entry(
                "notes.txt",
                Kind::Ignored {
                    why: "not a backup set".into(),
                },
            ),
            entry("app-20261204T020000Z", Kind::Set { time: time(3000) }),
        ];
        let rules = Rules {
            policy: Policy {
                last: 1,
                ..Default::default()
            },
            tz: Tz::UTC,
            min_keep: 0,
            delete_corrupt: false,
        };
        let d = decide(&entries, &rules, Utc::now(), |n| {
            if n == "app-20261203T020000Z" {
                Status::Corrupt("gzip".into())
            } else {
                Status::Good
            }
        });
        let got: Vec<(usize, Action)> = d.iter().map(|d| (d.index, d.action.clone())).collect();
        assert_eq!(
            got,
            [
                (4, Action::Keep),
                (0, Action::Corrupt("gzip".into())),
                // The legacy file is its own series: it is its newest.
                (2, Action::Keep),
                (1, Action::Leftover),
                (3, Action::Ignored("not a backup set".into())),
            ]
        );
        assert_eq!(d[2].reasons, ["last 1", "newest"]);
        assert_eq!(d[2].verified, None);
    }
}
