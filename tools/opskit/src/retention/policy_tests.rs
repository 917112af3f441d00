//! Table tests of the keep rules over synthetic timelines.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::policy::keep_reasons;
use super::{Policy, Span};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn now() -> DateTime<Utc> {
    t("2027-06-01T00:00:00Z")
}

/// Reasons per set for times given newest first.
fn run(times: &[&str], p: &Policy, tz: Tz) -> Vec<Vec<String>> {
    let ts: Vec<DateTime<Utc>> = times.iter().map(|s| t(s)).collect();
    keep_reasons(&ts, p, tz, now())
}

fn kept(r: &[Vec<String>]) -> Vec<usize> {
    r.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_empty())
        .map(|(i, _)| i)
        .collect()
}

fn counts(daily: i64) -> [i64; 5] {
    [0, daily, 0, 0, 0]
}

#[test]
fn spans_parse_like_restic() {
    assert_eq!(
        Span::parse("7d").unwrap(),
        Span {
            days: 7,
            ..Default::default()
        }
    );
    assert_eq!(
        Span::parse("1y5m7d2h").unwrap(),
        Span {
            years: 1,
            months: 5,
            days: 7,
            hours: 2
        }
    );
    for bad in ["", "7", "7w", "d", "1d1d", "-1d", "1.5d"] {
        let e = Span::parse(bad).unwrap_err();
        assert!(e.msg.contains(&format!("'{bad}'")), "{bad}: {}", e.msg);
    }
    // Go's AddDate, as restic uses it: "February 31" is March 3 (2026) or
    // March 2 (2016, a leap year); it was clamped to the end of February.
    let before = |span: &str, at: &str| Span::parse(span).unwrap().before(t(at));
    assert_eq!(
        before("1m", "2026-03-31T00:00:00Z"),
        t("2026-03-03T00:00:00Z")
    );
    assert_eq!(
        before("1m", "2016-03-31T12:00:00Z"),
        t("2016-03-02T12:00:00Z")
    );
    assert_eq!(
        before("1y", "2016-02-29T00:00:00Z"),
        t("2015-03-01T00:00:00Z")
    );
    assert_eq!(
        before("1y2m3d4h", "2026-11-23T03:00:00Z"),
        t("2025-09-19T23:00:00Z")
    );
    assert_eq!(
        before("31d", "2026-03-01T00:00:00Z"),
        t("2026-01-29T00:00:00Z")
    );
    assert_eq!(
        before("14m", "2026-01-15T00:00:00Z"),
        t("2024-11-15T00:00:00Z")
    );
    assert_eq!(Span::parse("2d3h").unwrap().to_string(), "2d3h");
}

#[test]
fn keep_last_counts_sets_not_times() {
    let p = Policy {
        last: 3,
        ..Default::default()
    };
    let r = run(
        &[
            "2026-11-23T03:00:00Z",
            "2026-11-23T03:00:00Z",
            "2026-11-23T03:00:00Z",
            "2026-11-22T03:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 1, 2]);
    assert_eq!(r[2], vec!["last 3"]);
}

#[test]
fn daily_keeps_the_newest_of_each_day() {
    let p = Policy {
        counts: counts(2),
        ..Default::default()
    };
    let r = run(
        &[
            "2026-11-23T20:00:00Z",
            "2026-11-23T03:00:00Z",
            "2026-11-22T20:00:00Z",
            "2026-11-22T03:00:00Z",
            "2026-11-21T03:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 2]);
    assert_eq!(r[0], vec!["daily 2026-11-23"]);
    assert_eq!(r[2], vec!["daily 2026-11-22"]);
}

#[test]
fn a_rule_with_count_left_keeps_the_oldest_too() {
    let p = Policy {
        counts: counts(7),
        ..Default::default()
    };
    let r = run(
        &["2026-11-23T20:00:00Z", "2026-11-23T03:00:00Z"],
        &p,
        Tz::UTC,
    );
    assert_eq!(r[0], vec!["daily 2026-11-23"]);
    assert_eq!(r[1], vec!["oldest daily 2026-11-23"]);
    // With the count used up, the oldest goes.
    let p = Policy {
        counts: counts(1),
        ..Default::default()
    };
    let r = run(
        &["2026-11-23T20:00:00Z", "2026-11-22T03:00:00Z"],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0]);
}

#[test]
fn gaps_of_weeks_do_not_stretch_a_daily_rule() {
    // Backups stopped for weeks: daily 3 keeps the three newest days that
    // have a set, however far apart (unlike find -mtime +30).
    let p = Policy {
        counts: counts(3),
        ..Default::default()
    };
    let r = run(
        &[
            "2026-11-23T03:00:00Z",
            "2026-10-01T03:00:00Z",
            "2026-09-01T03:00:00Z",
            "2026-08-01T03:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 1, 2]);
}

#[test]
fn iso_week_53_and_the_year_boundary() {
    // 2027-01-01 (Friday) and 2026-12-28 (Monday) are both in 2026-W53.
    let p = Policy {
        counts: [0, 0, 10, 0, 0],
        ..Default::default()
    };
    let r = run(
        &[
            "2027-01-04T03:00:00Z",
            "2027-01-01T03:00:00Z",
            "2026-12-28T03:00:00Z",
            "2026-12-20T03:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(r[0], vec!["weekly 2027-W01"]);
    assert_eq!(r[1], vec!["weekly 2026-W53"]);
    assert!(r[2].is_empty());
    assert_eq!(r[3], vec!["weekly 2026-W51"]);
    let p = Policy {
        counts: [0, 0, 0, 2, 1],
        ..Default::default()
    };
    let r = run(
        &[
            "2027-01-04T03:00:00Z",
            "2026-12-28T03:00:00Z",
            "2026-11-28T03:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(r[0], vec!["monthly 2027-01", "yearly 2027"]);
    assert_eq!(r[1], vec!["monthly 2026-12"]);
    assert!(r[2].is_empty());
}

#[test]
fn one_set_counts_toward_every_rule_it_matches() {
    let p = Policy {
        last: 1,
        counts: [0, 1, 1, 1, 1],
        ..Default::default()
    };
    let r = run(
        &["2026-11-23T03:00:00Z", "2026-11-22T03:00:00Z"],
        &p,
        Tz::UTC,
    );
    assert_eq!(
        r[0],
        vec![
            "last 1",
            "daily 2026-11-23",
            "weekly 2026-W48",
            "monthly 2026-11",
            "yearly 2026"
        ]
    );
    assert!(
        r[1].is_empty(),
        "every count was used by the newest set: {:?}",
        r[1]
    );
}

#[test]
fn unlimited_keeps_every_period() {
    let p = Policy {
        counts: counts(-1),
        ..Default::default()
    };
    let r = run(
        &[
            "2026-11-23T03:00:00Z",
            "2026-11-22T03:00:00Z",
            "2026-11-22T01:00:00Z",
            "2020-01-01T00:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 1, 3]);
}

#[test]
fn within_counts_from_the_newest_set_not_from_now() {
    let p = Policy {
        within: Some(Span::parse("2d").unwrap()),
        ..Default::default()
    };
    // now() is months after the newest set; within still keeps its neighbours.
    let r = run(
        &[
            "2026-01-10T00:00:00Z",
            "2026-01-08T12:00:00Z",
            "2026-01-08T00:00:00Z",
            "2026-01-07T00:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 1]);
    assert_eq!(r[0], vec!["within 2d"]);
    // A set in the future does not move the reference.
    let r = run(
        &[
            "2030-01-01T00:00:00Z",
            "2026-01-10T00:00:00Z",
            "2026-01-08T12:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 1, 2]);
}

#[test]
fn within_periods_keep_the_newest_per_period_inside_the_span() {
    let p = Policy {
        within_periods: [None, Some(Span::parse("3d").unwrap()), None, None, None],
        ..Default::default()
    };
    let r = run(
        &[
            "2026-11-23T20:00:00Z",
            "2026-11-23T03:00:00Z",
            "2026-11-22T03:00:00Z",
            "2026-11-21T03:00:00Z",
            "2026-11-20T03:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0, 2, 3]);
    assert_eq!(r[0], vec!["daily within 3d 2026-11-23"]);
}

#[test]
fn calendar_periods_follow_the_time_zone() {
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let times = [
        "2026-03-28T23:30:00Z",
        "2026-03-28T22:30:00Z",
        "2026-03-27T12:00:00Z",
    ];
    let p = Policy {
        counts: counts(5),
        ..Default::default()
    };
    // In UTC the first two share a day; in Berlin 23:30Z is already the 29th.
    let utc = run(&times, &p, Tz::UTC);
    assert_eq!(kept(&utc), vec![0, 2]);
    let local = run(&times, &p, berlin);
    assert_eq!(kept(&local), vec![0, 1, 2]);
    assert_eq!(local[0], vec!["daily 2026-03-29"]);
}

#[test]
fn the_repeated_hour_of_a_dst_change_is_one_hourly_period() {
    // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET, so 00:30Z and
    // 01:30Z are both 02:30 local wall time.
    let berlin: Tz = "Europe/Berlin".parse().unwrap();
    let p = Policy {
        counts: [10, 0, 0, 0, 0],
        ..Default::default()
    };
    let r = run(
        &[
            "2026-10-25T01:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-24T12:00:00Z",
        ],
        &p,
        berlin,
    );
    assert_eq!(r[0], vec!["hourly 2026-10-25T02"]);
    assert!(r[1].is_empty());
    assert_eq!(r[2], vec!["hourly 2026-10-24T14"]);
}

#[test]
fn empty_policy_is_detected() {
    assert!(Policy::default().is_empty());
    assert!(
        !Policy {
            last: -1,
            ..Default::default()
        }
        .is_empty()
    );
    let _ = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0);
}

#[test]
fn keep_within_one_month_at_a_month_end_means_what_restic_means() {
    // restic: the newest at 2016-03-31T12:00 minus 1m is 2016-03-02T12:00;
    // 03-02 and 03-01 are older than that and go.
    let p = Policy {
        within: Some(Span::parse("1m").unwrap()),
        ..Default::default()
    };
    let r = run(
        &[
            "2016-03-31T12:00:00Z",
            "2016-03-02T12:00:00Z",
            "2016-03-01T12:00:00Z",
        ],
        &p,
        Tz::UTC,
    );
    assert_eq!(kept(&r), vec![0]);
}

#[test]
fn within_period_rules_keep_the_oldest_set_as_restic_does() {
    // The timeline: 2014-08-08T10:20:30Z, then every few days to
    // 2016. restic keeps 2014-08-08 for "oldest yearly within 9999y".
    let mut times = vec![];
    let mut at = t("2016-01-05T10:20:30Z");
    while at > t("2014-08-09T00:00:00Z") {
        times.push(at.to_rfc3339());
        at -= TimeDelta::days(3);
    }
    times.push("2014-08-08T10:20:30Z".into());
    let p = Policy {
        within: Some(Span::parse("1h").unwrap()),
        within_periods: [
            Some(Span::parse("1d").unwrap()),
            Some(Span::parse("7d").unwrap()),
            Some(Span::parse("1m").unwrap()),
            Some(Span::parse("1y").unwrap()),
            Some(Span::parse("9999y").unwrap()),
        ],
        ..Default::default()
    };
    let refs: Vec<&str> = times.iter().map(String::as_str).collect();
    let r = run(&refs, &p, Tz::UTC);
    let last = r.last().unwrap();
    assert_eq!(last, &vec!["oldest yearly within 9999y 2014"], "{r:?}");
    // The other 2014 sets share the oldest's year and are not kept by it.
    assert!(
        r[r.len() - 2].iter().all(|x| !x.starts_with("yearly")),
        "{r:?}"
    );
}
