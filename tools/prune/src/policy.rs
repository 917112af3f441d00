//! The retention policy, with the meaning restic's `forget` gives each flag,
//! so a policy moves between the two without surprises:
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
//!
//! Durations are restic's: `1y5m7d2h` (years, months, days, hours),
//! subtracted as restic subtracts them (Go's `AddDate`: a month back from
//! March 31 is March 2 or 3, not the end of February).

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Timelike, Utc};
use chrono_tz::Tz;

use opskit::Error;

/// restic's duration: years, months, days, hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    /// Parse `1y5m7d2h` (any subset, in any order, each unit once).
    pub fn parse(s: &str) -> Result<Span, Error> {
        let bad = |why: &str| {
            Error::usage(format!(
                "invalid duration '{s}': {why} (restic's form: e.g. 7d, 4w is not accepted, 1y6m, 2d12h; y=years m=months d=days h=hours)"
            ))
        };
        let mut span = Span::default();
        let mut seen = String::new();
        let mut num = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            if num.is_empty() {
                return Err(bad("expected a number before each unit"));
            }
            let n: u32 = num.parse().map_err(|_| bad("number too large"))?;
            num.clear();
            if seen.contains(c) {
                return Err(bad("a unit appears twice"));
            }
            seen.push(c);
            match c {
                'y' => span.years = n,
                'm' => span.months = n,
                'd' => span.days = n,
                'h' => span.hours = n,
                _ => return Err(bad("unknown unit")),
            }
        }
        if !num.is_empty() {
            return Err(bad("missing unit"));
        }
        if seen.is_empty() {
            return Err(bad("empty"));
        }
        Ok(span)
    }

    /// `t` minus this span, exactly as restic computes it: Go's
    /// `AddDate(-y, -m, -d)`, which subtracts years, months and days from
    /// the date's fields and then normalises an overflowing day forward
    /// (2016-03-31 minus 1m is "February 31", i.e. 2016-03-02), then the
    /// hours.
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let months = i64::from(t.year()) * 12 + i64::from(t.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let (year, month0) = (months.div_euclid(12), months.rem_euclid(12));
        let first = i32::try_from(year)
            .ok()
            .and_then(|y| NaiveDate::from_ymd_opt(y, month0 as u32 + 1, 1));
        let Some(first) = first else {
            return DateTime::<Utc>::MIN_UTC;
        };
        // Day 1 of the month plus (day - 1 - days) days: Go's normalisation.
        let day_offset = i64::from(t.day()) - 1 - i64::from(self.days);
        first
            .and_time(t.time())
            .and_utc()
            .checked_add_signed(TimeDelta::days(day_offset) - TimeDelta::hours(self.hours as i64))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n > 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

pub const PERIODS: [Period; 5] = [
    Period::Hourly,
    Period::Daily,
    Period::Weekly,
    Period::Monthly,
    Period::Yearly,
];

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period a time falls in, as a label (`2026-11-23`, `2026-W47`).
    pub fn label(self, t: DateTime<Utc>, tz: Tz) -> String {
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

/// A complete policy.
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
pub fn apply(
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

#[cfg(test)]
mod tests;
