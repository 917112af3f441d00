//! The decision over series, verification status and the safety rules,
//! on synthetic entries.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use opskit_testkit::tools::Rng;

use super::*;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

fn rules(policy: Policy, min_keep: usize, delete_corrupt: bool) -> Rules {
    Rules {
        policy,
        tz: Tz::UTC,
        min_keep,
        delete_corrupt,
    }
}

fn last(n: i64) -> Policy {
    Policy {
        last: n,
        ..Default::default()
    }
}

/// Sets named `name`, at `secs`, with the status `status_of` gives.
fn sets(list: &[(&str, i64)], status_of: impl Fn(&str) -> Status) -> Vec<Entry> {
    list.iter()
        .map(|&(name, secs)| Entry::set(name, at(secs), status_of(name)))
        .collect()
}

#[test]
fn dumps_and_base_sets_are_kept_each_by_the_policy() {
    let entries = sets(
        &[
            ("app-20261204T020000Z", 3000),
            ("app-base-20261204T010000Z", 2000),
            ("app-20261203T020000Z", 1000),
            ("app-base-20261203T010000Z", 500),
        ],
        |_| Status::Good,
    );
    assert_eq!(entries[1].series, "app-base");
    let d = apply(&entries, &rules(last(1), 1, false), Utc::now());
    let kept: Vec<&str> = d
        .iter()
        .filter(|d| d.action == Action::Keep)
        .map(|d| entries[d.index].name.as_str())
        .collect();
    assert_eq!(kept, ["app-20261204T020000Z", "app-base-20261204T010000Z"]);
}

#[test]
fn a_corrupt_set_does_not_fill_a_slot_the_next_good_set_takes_it() {
    let list = [("a", 3000), ("b", 2000), ("c", 1000)];
    let status = |why: &'static str| {
        move |n: &str| {
            if n == "b" {
                Status::Corrupt(why.into())
            } else {
                Status::Good
            }
        }
    };
    let entries = sets(&list, status("sha256 db.dump.gz"));
    let d = apply(&entries, &rules(last(2), 1, false), Utc::now());
    let by = |n: &str| d.iter().find(|x| entries[x.index].name == n).unwrap();
    assert_eq!(by("a").action, Action::Keep);
    assert_eq!(by("b").action, Action::Corrupt("sha256 db.dump.gz".into()));
    assert_eq!(by("c").action, Action::Keep);
    assert_eq!(by("c").reasons, vec!["last 2"]);
    let entries = sets(&list, status("x"));
    let d = apply(&entries, &rules(last(2), 1, true), Utc::now());
    assert_eq!(d[1].action, Action::Delete);
    assert_eq!(d[1].reasons, vec!["corrupt (--delete-corrupt)"]);
}

#[test]
fn the_newest_set_stays_even_when_corrupt_and_min_keep_holds_good_ones() {
    let entries = sets(&[("a", 3000), ("b", 2000), ("c", 1000)], |n| match n {
        "a" => Status::Corrupt("gzip".into()),
        "b" => Status::Unknown,
        _ => Status::Good,
    });
    let d = apply(&entries, &rules(last(1), 1, true), Utc::now());
    assert_eq!(d[0].action, Action::Corrupt("gzip".into()));
    assert_eq!(d[0].reasons, vec!["newest"]);
    // keep-last 1 goes to b (a is corrupt); min-keep 1 goes to c, the newest verified.
    assert_eq!(d[1].reasons, vec!["last 1"]);
    assert_eq!(d[2].reasons, vec!["min-keep verified"]);
}

#[test]
fn decisions_come_newest_first_and_ties_go_to_the_larger_name() {
    let entries = sets(&[("a", 1000), ("c", 2000), ("b", 2000)], |_| {
        Status::Unknown
    });
    let d = apply(&entries, &rules(last(1), 0, false), Utc::now());
    let order: Vec<usize> = d.iter().map(|x| x.index).collect();
    assert_eq!(order, [1, 2, 0]);
    assert_eq!(d[0].reasons, vec!["last 1", "newest"]);
    assert_eq!(d[0].verified, None);
}

/// A random policy as the flags can give it.
fn random_rules(rng: &mut Rng) -> Rules {
    let mut c = || [-1i64, 0, 0, 1, 2, 3, 5][rng.below(7) as usize];
    let mut p = Policy {
        last: c(),
        counts: [c(), c(), c(), c(), c()],
        ..Default::default()
    };
    if rng.below(3) == 0 {
        p.within = Some(Span {
            days: rng.below(60) as u32,
            ..Default::default()
        });
    }
    let min_keep = rng.below(4) as usize;
    rules(p, min_keep, rng.below(2) == 0)
}

#[test]
fn safety_rules_hold_for_random_policies_and_timelines() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for round in 0..2000 {
        let n = 1 + rng.below(30) as usize;
        let times: Vec<DateTime<Utc>> = (0..n)
            .map(|_| at(1_700_000_000 + rng.below(3 * 365 * 86400) as i64))
            .collect();
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry {
                needs: Vec::new(),
                name: format!("s{i:02}"),
                series: String::new(),
                time: times[i],
                status: match rng.below(4) {
                    0 => Status::Corrupt("bad".into()),
                    1 => Status::Unknown,
                    _ => Status::Good,
                },
            })
            .collect();
        let r = random_rules(&mut rng);
        let d = apply(&entries, &r, Utc::now());
        assert_eq!(d.len(), n, "round {round}");
        // The newest set is never deleted.
        let newest = entries.iter().map(|e| e.time).max().unwrap();
        assert_ne!(d[0].action, Action::Delete, "round {round}");
        assert_eq!(entries[d[0].index].time, newest, "round {round}");
        // The min_keep newest good sets are kept.
        let good_total = entries.iter().filter(|e| e.status == Status::Good).count();
        let good_kept = d
            .iter()
            .filter(|x| x.verified == Some(true) && x.action == Action::Keep)
            .count();
        assert!(
            good_kept >= r.min_keep.min(good_total),
            "round {round}: {good_kept} < {}",
            r.min_keep
        );
        for x in &d {
            let corrupt = matches!(entries[x.index].status, Status::Corrupt(_));
            match x.action {
                // A corrupt set is never kept by a policy slot.
                Action::Keep => assert!(!corrupt, "round {round}"),
                Action::Delete if corrupt => assert!(r.delete_corrupt, "round {round}"),
                Action::Delete => assert!(
                    x.reasons.is_empty(),
                    "round {round}: deleted with reasons {:?}",
                    x.reasons
                ),
                Action::Corrupt(_) => assert!(
                    x.reasons.iter().all(|r| r == "newest"),
                    "round {round}: {:?}",
                    x.reasons
                ),
            }
        }
    }
}

/// No set a kept incremental set needs is removed, whatever the flags:
/// not by --keep-last 1, not by --delete-corrupt; once no kept set needs
/// a chain, the policy decides on it again.
#[test]
fn a_kept_set_keeps_its_chain() {
    let full = "app-base-20261201T010000Z";
    let inc1 = "app-base-20261202T010000Z";
    let inc2 = "app-base-20261203T010000Z";
    let chain = |e: Entry| match e.name.as_str() {
        n if n == inc1 => e.needing(vec![full.into()]),
        n if n == inc2 => e.needing(vec![full.into(), inc1.into()]),
        _ => e,
    };
    let entries: Vec<Entry> = sets(&[(full, 10), (inc1, 20), (inc2, 30)], |n| {
        if n == full {
            Status::Corrupt("a flipped byte".into())
        } else {
            Status::Good
        }
    })
    .into_iter()
    .map(chain)
    .collect();
    let d = apply(&entries, &rules(last(1), 1, true), at(100));
    let of = |name: &str| d.iter().find(|x| entries[x.index].name == name).unwrap();
    assert_eq!(of(inc2).action, Action::Keep);
    assert_eq!(of(inc1).action, Action::Keep);
    assert!(of(inc1).reasons.contains(&format!("needed by {inc2}")));
    assert!(
        matches!(of(full).action, Action::Corrupt(_)),
        "{:?}",
        of(full)
    );
    assert!(of(full).reasons.contains(&format!("needed by {inc2}")));
    // A newer full set kept alone: the old chain goes.
    let mut more = entries.clone();
    more.push(Entry::set(
        "app-base-20261204T010000Z",
        at(40),
        Status::Good,
    ));
    let d = apply(&more, &rules(last(1), 1, true), at(100));
    for e in [full, inc1, inc2] {
        let x = d.iter().find(|x| more[x.index].name == e).unwrap();
        assert_eq!(x.action, Action::Delete, "{e}: {x:?}");
    }
}

/// A set named for a year from now (anyone who can write a name can make
/// one) is nobody's "newest": the newest set of the present is, and the
/// far one, corrupt, goes with --delete-corrupt (it stayed for ever).
#[test]
fn a_set_dated_far_ahead_is_not_the_newest() {
    let now = at(1_000_000);
    let entries = vec![
        Entry::set(
            "app-ahead",
            at(1_000_000 + 365 * 86400),
            Status::Corrupt("not signed".into()),
        ),
        Entry::set("app-b", at(999_000), Status::Good),
        Entry::set("app-a", at(998_000), Status::Good),
    ];
    let d = apply(&entries, &rules(last(1), 1, true), now);
    let of = |n: &str| d.iter().find(|x| entries[x.index].name == n).unwrap();
    assert_eq!(of("app-ahead").action, Action::Delete);
    assert_eq!(of("app-b").action, Action::Keep);
    assert!(
        of("app-b").reasons.contains(&"newest".to_string()),
        "{:?}",
        of("app-b").reasons
    );
    assert_eq!(of("app-a").action, Action::Delete);
}
