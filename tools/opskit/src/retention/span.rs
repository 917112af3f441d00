//! restic's durations (`1y5m7d2h`), counted back from a time as restic
//! counts them (Go's `AddDate`: a month back from March 31 is March 2 or
//! 3, not the end of February).

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};

use crate::Error;

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
