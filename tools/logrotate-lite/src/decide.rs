//! Whether a log is due: logrotate's rules, from the state file's last
//! rotation, the size criteria and the flags.

use chrono::{Datelike, NaiveDateTime, Timelike};

use crate::config::{Freq, Opts};

/// Why a log is rotated, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Rotate(&'static str),
    Skip(&'static str),
}

/// The decision for a regular file of `size` bytes last rotated at
/// `last` (for a log first seen, `now` truncated to the hour). `age_s`
/// (seconds since its mtime) is for `minage`: a log not older than that
/// many days is not rotated, unless forced (as logrotate: -f overrides it).
pub fn decide(
    o: &Opts,
    size: u64,
    age_s: Option<i64>,
    last: NaiveDateTime,
    now: NaiveDateTime,
    force: bool,
) -> Verdict {
    let mut v = if force {
        Verdict::Rotate("forced")
    } else if let Some(threshold) = o.size {
        if size >= threshold {
            Verdict::Rotate("size")
        } else {
            Verdict::Skip("not due")
        }
    } else if last.date() > now.date() {
        Verdict::Rotate("last rotated in the future")
    } else {
        let (ld, nd) = (last.date(), now.date());
        let differs = ld != nd || last.hour() != now.hour();
        let due = differs
            && match o.freq {
                Freq::None => false,
                Freq::Hourly => true,
                Freq::Daily => ld != nd,
                Freq::Weekly(7) => (nd - ld).num_days() >= 7,
                Freq::Weekly(w) => {
                    (nd.weekday().num_days_from_sunday() == u32::from(w) && ld != nd)
                        || (nd - ld).num_days() >= 7
                }
                Freq::Monthly => ld.month() != nd.month() || ld.year() != nd.year(),
                Freq::Yearly => ld.year() != nd.year(),
            };
        let due = due && o.minsize.is_none_or(|m| size >= m);
        if due {
            Verdict::Rotate("due")
        } else {
            Verdict::Skip("not due")
        }
    };
    if v == Verdict::Skip("not due") && o.maxsize.is_some_and(|m| size > m) {
        v = Verdict::Rotate("maxsize");
    }
    if !o.ifempty && size == 0 && matches!(v, Verdict::Rotate(_)) {
        v = Verdict::Skip("empty");
    }
    if !force
        && matches!(v, Verdict::Rotate(_))
        && let (Some(days), Some(age)) = (o.minage, age_s)
        && age <= days as i64 * 86_400
    {
        v = Verdict::Skip("younger than minage");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    fn opts(f: impl FnOnce(&mut Opts)) -> Opts {
        let mut o = Opts::default();
        f(&mut o);
        o
    }

    // Each case was checked against Debian's logrotate 3.21 on Monday 2026-11-23.
    #[test]
    fn as_logrotate_decides() {
        let now = at("2026-11-23 11:52");
        let d = |o: &Opts, last: &str| decide(o, 5, None, at(last), now, false);
        let daily = opts(|o| o.freq = Freq::Daily);
        assert_eq!(d(&daily, "2026-11-22 03:00"), Verdict::Rotate("due"));
        assert_eq!(d(&daily, "2026-11-23 01:00"), Verdict::Skip("not due"));
        assert_eq!(d(&daily, "2026-11-23 13:00"), Verdict::Skip("not due"));
        assert_eq!(
            d(&daily, "2026-11-24 11:00"),
            Verdict::Rotate("last rotated in the future")
        );
        assert_eq!(
            d(&opts(|_| {}), "2026-11-22 03:00"),
            Verdict::Skip("not due")
        );
        let weekly = opts(|o| o.freq = Freq::Weekly(0));
        assert_eq!(d(&weekly, "2026-11-22 03:00"), Verdict::Skip("not due"));
        assert_eq!(d(&weekly, "2026-11-17 03:00"), Verdict::Skip("not due"));
        assert_eq!(d(&weekly, "2026-11-16 03:00"), Verdict::Rotate("due"));
        assert_eq!(
            d(&opts(|o| o.freq = Freq::Weekly(1)), "2026-11-22 03:00"),
            Verdict::Rotate("due")
        );
        assert_eq!(
            d(&opts(|o| o.freq = Freq::Weekly(7)), "2026-11-17 03:00"),
            Verdict::Skip("not due")
        );
        assert_eq!(
            d(&opts(|o| o.freq = Freq::Hourly), "2026-11-23 10:59"),
            Verdict::Rotate("due")
        );
        assert_eq!(
            d(&opts(|o| o.freq = Freq::Hourly), "2026-11-23 13:00"),
            Verdict::Rotate("due")
        );
        assert_eq!(
            d(&opts(|o| o.freq = Freq::Monthly), "2026-10-31 01:00"),
            Verdict::Rotate("due")
        );
        assert_eq!(
            d(&opts(|o| o.freq = Freq::Yearly), "2025-12-31 01:00"),
            Verdict::Rotate("due")
        );
        let maxsize = opts(|o| (o.freq, o.maxsize) = (Freq::Daily, Some(1)));
        assert_eq!(d(&maxsize, "2026-11-23 01:00"), Verdict::Rotate("maxsize"));
        let minsize = opts(|o| (o.freq, o.minsize) = (Freq::Daily, Some(100)));
        assert_eq!(d(&minsize, "2026-11-20 01:00"), Verdict::Skip("not due"));
        let size = opts(|o| (o.size, o.minsize) = (Some(1), Some(3)));
        assert_eq!(d(&size, "2026-11-23 11:00"), Verdict::Rotate("size"));
        let empty = opts(|o| (o.freq, o.ifempty) = (Freq::Daily, false));
        assert_eq!(
            decide(&empty, 0, None, at("2026-11-20 01:00"), now, true),
            Verdict::Skip("empty")
        );
    }
}
