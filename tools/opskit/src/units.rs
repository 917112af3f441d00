//! Durations (`300ms`, `90s`, `15m`, `26h`, `7d`, `4w`, `1h30m`) and sizes
//! (`512`, `10k`, `10M`, `1G`, `2T`; binary multiples as logrotate uses them).

use std::time::Duration;

use crate::Error;

/// Parse a duration: one or more `<number><unit>` parts, units `ms s m h d w`.
/// A bare number is refused: `30` could mean seconds or days.
pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let bad = |why: &str| {
        Error::usage(format!(
            "invalid duration '{s}': {why} (use e.g. 300ms, 90s, 15m, 26h, 7d, 4w, 1h30m)"
        ))
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad("empty"));
    }
    let mut total: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u128 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per: u128 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(ms_per)
            .and_then(|v| total.checked_add(v))
            .filter(|v| *v <= u64::MAX as u128)
            .ok_or_else(|| bad("too large"))?;
    }
    Ok(Duration::from_millis(total as u64))
}

/// [`parse_duration`] as a clap `value_parser` (`value_parser = units::duration_arg`).
pub fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.msg)
}

/// [`parse_size`] as a clap `value_parser`.
pub fn size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.msg)
}

/// The shortest exact form of a duration in the units [`parse_duration`] reads.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let units: [(u128, &str); 6] = [
        (604_800_000, "w"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
        (1, "ms"),
    ];
    let mut rest = ms;
    let mut out = String::new();
    for (per, u) in units {
        if rest >= per {
            out.push_str(&format!("{}{u}", rest / per));
            rest %= per;
        }
    }
    out
}

/// Parse a size in bytes: a number with an optional `k`, `M`, `G` or `T`
/// suffix (case-insensitive, optionally followed by `B` or `iB`), each 1024
/// times the one before.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let bad = |why: &str| {
        Error::usage(format!(
            "invalid size '{s}': {why} (use e.g. 512, 10k, 10M, 1G)"
        ))
    };
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad("expected a number"));
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad("number too large"))?;
    let suffix = t[digits..].trim_start().to_ascii_lowercase();
    let suffix = suffix
        .strip_suffix("ib")
        .or_else(|| suffix.strip_suffix('b'))
        .unwrap_or(&suffix);
    let shift = match suffix {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad("unknown unit")),
    };
    n.checked_mul(1u64 << shift).ok_or_else(|| bad("too large"))
}

/// A size for people: `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("300ms", 300),
            ("90s", 90_000),
            ("15m", 900_000),
            ("26h", 93_600_000),
            ("7d", 604_800_000),
            ("4w", 2_419_200_000),
            ("1h30m", 5_400_000),
            (" 2d12h ", 216_000_000),
            ("0s", 0),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
    }

    #[test]
    fn bad_durations_name_the_value() {
        for s in [
            "",
            "30",
            "5x",
            "h",
            "1.5h",
            "-3d",
            "1h30",
            "99999999999999999999999d",
        ] {
            let e = parse_duration(s).unwrap_err();
            assert_eq!(e.exit, crate::Exit::Usage);
            assert!(e.msg.contains(&format!("'{s}'")), "{s}: {}", e.msg);
        }
    }

    #[test]
    fn duration_round_trip() {
        for s in ["300ms", "90s", "1h30m", "1w2d", "26h"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes() {
        let cases = [
            ("512", 512),
            ("10k", 10 * 1024),
            ("10K", 10 * 1024),
            ("10M", 10 << 20),
            ("10MB", 10 << 20),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("2T", 2u64 << 40),
            ("0", 0),
        ];
        for (s, n) in cases {
            assert_eq!(parse_size(s).unwrap(), n, "{s}");
        }
    }

    #[test]
    fn bad_sizes_name_the_value() {
        for s in ["", "M", "10X", "1.5G", "-1", "99999999999T"] {
            let e = parse_size(s).unwrap_err();
            assert!(e.msg.contains(&format!("'{s}'")), "{s}: {}", e.msg);
        }
    }

    #[test]
    fn human_sizes() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(3 << 30), "3.0 GiB");
    }
}
