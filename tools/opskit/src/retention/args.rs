//! The policy's flags, flattened into the arguments of every tool that
//! applies it (`prune`, `offsite prune`): the same flags, with the same
//! meaning, for a local root and a bucket.

use chrono_tz::Tz;

use super::{Policy, Rules, Span};
use crate::Error;

/// The policy and its safety rules.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicyArgs {
    /// Keep the N newest sets.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_last: Option<i64>,
    /// Keep the newest set of each of the N newest hours with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest set of each of the N newest days with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_daily: Option<i64>,
    /// Keep the newest set of each of the N newest ISO weeks with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest set of each of the N newest months with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest set of each of the N newest years with a set.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = count)]
    pub keep_yearly: Option<i64>,
    /// Keep every set newer than DURATION before the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within: Option<Span>,
    /// Keep the newest set of each hour within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_hourly: Option<Span>,
    /// Keep the newest set of each day within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_daily: Option<Span>,
    /// Keep the newest set of each ISO week within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_weekly: Option<Span>,
    /// Keep the newest set of each month within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_monthly: Option<Span>,
    /// Keep the newest set of each year within DURATION of the newest set.
    #[arg(long, value_name = "DURATION", value_parser = span)]
    pub keep_within_yearly: Option<Span>,

    /// Calendar periods in this IANA zone (e.g. Europe/Berlin) instead of UTC.
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = zone)]
    pub tz: Tz,

    /// Always keep this many of the newest sets that passed verification
    /// (unverified sets fill in when too few are verified).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_keep: usize,

    /// Delete sets that failed verification (never the newest set).
    #[arg(long)]
    pub delete_corrupt: bool,
}

impl PolicyArgs {
    /// The rules; no keep rule given is a usage error, never "delete
    /// everything".
    pub fn checked(&self) -> Result<Rules, Error> {
        let policy = self.policy();
        if policy.is_empty() {
            return Err(Error::usage(
                "no keep rule given: refusing to delete every set (use e.g. --keep-daily 7 --keep-weekly 4)",
            ));
        }
        Ok(Rules {
            policy,
            tz: self.tz,
            min_keep: self.min_keep,
            delete_corrupt: self.delete_corrupt,
        })
    }

    /// The keep rules as given (possibly none).
    fn policy(&self) -> Policy {
        Policy {
            last: self.keep_last.unwrap_or(0),
            counts: [
                self.keep_hourly.unwrap_or(0),
                self.keep_daily.unwrap_or(0),
                self.keep_weekly.unwrap_or(0),
                self.keep_monthly.unwrap_or(0),
                self.keep_yearly.unwrap_or(0),
            ],
            within: self.keep_within,
            within_periods: [
                self.keep_within_hourly,
                self.keep_within_daily,
                self.keep_within_weekly,
                self.keep_within_monthly,
                self.keep_within_yearly,
            ],
        }
    }
}

fn count(s: &str) -> Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!(
            "'{s}' is not a count (a whole number, or -1 for unlimited)"
        )),
    }
}

fn span(s: &str) -> Result<Span, String> {
    Span::parse(s).map_err(|e| e.msg)
}

fn zone(s: &str) -> Result<Tz, String> {
    s.parse::<Tz>()
        .map_err(|_| format!("unknown time zone '{s}' (use an IANA name such as Europe/Berlin)"))
}
