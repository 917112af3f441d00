//! The keep rules, with the meaning restic's `forget` gives each flag, so a
//! policy moves between the two without surprises:
//!
//! * snapshots (here: sets) are taken newest first;
//! * `--keep-last N` keeps the N newest, counting sets, not distinct times;
//! * each calendar rule (hourly, daily, weekly by ISO week, monthly, yearly)
//!   keeps the newest set of each period it has not yet counted, until its
//!   count is used up; one set counts toward every rule it matches;
//! * a calendar rule with count left when the oldest set is reached keeps
//!   the oldest set too ("oldest daily ...");
//! * `--keep-within D` keeps every set newer than D before the newest set
//!   that is not in the future (not before now), and `--keep-within-daily D`
//!   etc. keep the newest set of each period within D, and the oldest set
//!   when it is within D;
//! * `-1` means unlimited; a policy with no rule is refused.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

use super::Span;

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

const PERIODS: [Period; 5] = [
    Period::Hourly,
    Period::Daily,
    Period::Weekly,
    Period::Monthly,
    Period::Yearly,
];

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period a time falls in, as a label (`2026-11-23`, `2026-W47`).
    fn label(self, t: DateTime<Utc>, tz: Tz) -> String {
        let l = t.with_timezone(&tz);
        match self {
            Period::Hourly => format!(
                "{:04}-{:02}-{:02}T{:02}",
                l.year(),
                l.month(),
                l.day(),
                l.hour()
            ),
            Period::Daily => format!("{:04}-{:02}-{:02}", l.year(), l.month(), l.day()),
            Period::Weekly => {
                let w = l.iso_week();
                format!("{:04}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => format!("{:04}-{:02}", l.year(), l.month()),
            Period::Yearly => format!("{:04}", l.year()),
        }
    }
}

/// The keep rules of a policy (restic's `ExpirePolicy`).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `--keep-last`; 0 off, -1 unlimited.
    pub last: i64,
    /// Counts for hourly, daily, weekly, monthly, yearly; 0 off, -1 unlimited.
    pub counts: [i64; 5],
    pub within: Option<Span>,
    /// `--keep-within-hourly` ... `--keep-within-yearly`.
    pub within_periods: [Option<Span>; 5],
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.counts.iter().all(|c| *c == 0)
            && self.within.is_none()
            && self.within_periods.iter().all(Option::is_none)
    }
}

/// Apply `policy` to set times sorted newest first; returns, for each set,
/// the reasons it is kept (empty: not kept by the policy).
pub(super) fn keep_reasons(
    times: &[DateTime<Utc>],
    policy: &Policy,
    tz: Tz,
    now: DateTime<Utc>,
) -> Vec<Vec<String>> {
    let mut reasons = vec![Vec::new(); times.len()];
    let mut counts = policy.counts;
    let mut last_label: [Option<String>; 5] = Default::default();
    let mut within_last: [Option<String>; 5] = Default::default();
    // Measured from the newest set not in the future.
    let latest = times
        .iter()
        .copied()
        .find(|t| *t <= now)
        .or_else(|| times.first().copied());
    let n = times.len();
    for (i, &t) in times.iter().enumerate() {
        let r = &mut reasons[i];
        if policy.last == -1 || (i as i64) < policy.last {
            r.push(format!("last {}", i + 1));
        }
        for (p, period) in PERIODS.iter().enumerate() {
            if counts[p] == 0 {
                continue;
            }
            let label = period.label(t, tz);
            let new_period = last_label[p].as_deref() != Some(label.as_str());
            if new_period || i == n - 1 {
                r.push(if new_period {
                    format!("{} {label}", period.name())
                } else {
                    format!("oldest {} {label}", period.name())
                });
                last_label[p] = Some(label);
                if counts[p] > 0 {
                    counts[p] -= 1;
                }
            }
        }
        if let (Some(span), Some(latest)) = (policy.within, latest)
            && t > span.before(latest)
        {
            r.push(format!("within {span}"));
        }
        for (p, period) in PERIODS.iter().enumerate() {
            let (Some(span), Some(latest)) = (policy.within_periods[p], latest) else {
                continue;
            };
            if t <= span.before(latest) {
                continue;
            }
            // As for the count rules, the oldest set is kept too when it
            // is within the span ("oldest yearly within 9999y").
            let label = period.label(t, tz);
            let new_period = within_last[p].as_deref() != Some(label.as_str());
            if new_period || i == n - 1 {
                let oldest = if new_period { "" } else { "oldest " };
                r.push(format!("{oldest}{} within {span} {label}", period.name()));
                within_last[p] = Some(label);
            }
        }
    }
    reasons
}
