//! logrotate's state file (`logrotate state -- version 2`, one
//! `"path" Y-M-D-h:m:s` line per log, local time), so a server can switch
//! between logrotate and logrotate-lite either way.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::Path;

use chrono::NaiveDateTime;

pub const HEADER: &str = "logrotate state -- version 2";

/// The most a state file is read (about 100 bytes a log).
const MAX_STATE: u64 = 64 << 20;
const HEADER_V1: &str = "logrotate state -- version 1";

/// When each log was last rotated (or first seen).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct State {
    pub entries: BTreeMap<String, NaiveDateTime>,
}

/// A line of the state file that could not be read.
#[derive(Debug, Clone)]
pub struct Problem {
    pub line: usize,
    pub msg: String,
}

pub fn format_time(t: &NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    format!(
        "{}-{}-{}-{}:{}:{}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let mut it = s.split(['-', ':']);
    let mut n = || it.next().and_then(|v| v.parse::<u32>().ok());
    let (y, mo, d) = (n()?, n()?, n()?);
    // Old state files have only the date.
    let (h, mi, se) = (n().unwrap_or(0), n().unwrap_or(0), n().unwrap_or(0));
    chrono::NaiveDate::from_ymd_opt(y as i32, mo, d)?.and_hms_opt(h, mi, se)
}

/// `"path with \" quote"` → the path, and the rest of the line.
fn quoted(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &rest[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl State {
    /// Parse a state file's text; unreadable lines are reported, not fatal.
    pub fn parse(text: &str) -> (State, Vec<Problem>) {
        let mut st = State::default();
        let mut problems = vec![];
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.trim().is_empty() || (i == 0 && line.starts_with("logrotate state")) {
                // Version 1 (older logrotate, and logrotate's own tests)
                // is read as logrotate reads it; it is written back as 2.
                if i == 0 && line != HEADER && line != HEADER_V1 {
                    problems.push(Problem {
                        line: 1,
                        msg: format!("unknown state file version: {line}"),
                    });
                }
                continue;
            }
            let parsed =
                quoted(line.trim_start()).and_then(|(p, rest)| Some((p, parse_time(rest.trim())?)));
            match parsed {
                Some((p, t)) => {
                    st.entries.insert(p, t);
                }
                None => problems.push(Problem {
                    line: line_no,
                    msg: format!("cannot read: {}", line.chars().take(80).collect::<String>()),
                }),
            }
        }
        (st, problems)
    }

    /// Read the state file (none: empty): never through a symlink, nor
    /// from a FIFO, and at most [`MAX_STATE`] bytes.
    pub fn read(path: &Path) -> opskit::Result<(State, Vec<Problem>)> {
        match path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((State::default(), vec![]));
            }
            _ => {}
        }
        let f = opskit::safefs::open_nofollow(path, OpenOptions::new().read(true))?;
        let bytes = opskit::safefs::read_bounded(f, path, MAX_STATE)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| opskit::Error::failure(format!("{}: not UTF-8 text", path.display())))?;
        Ok(State::parse(&text))
    }

    pub fn render(&self) -> String {
        let mut out = String::from(HEADER);
        out.push('\n');
        for (p, t) in &self.entries {
            let esc = p.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("\"{esc}\" {}\n", format_time(t)));
        }
        out
    }

    /// Write atomically: temp file, fsync, rename, fsync the directory.
    pub fn write(&self, path: &Path) -> opskit::Result<()> {
        opskit::durable::write_file(path, 0o644, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_lines() {
        let text = "logrotate state -- version 2\n\"/var/log/a.log\" 2026-11-23-3:0:0\n\"/var/log/we \\\"ird\\\".log\" 2026-1-2-13:45:7\ngarbage here\n\"/var/log/old.log\" 2020-5-6\n\"/var/log/bad.log\" 2026-13-40-1:1:1\n";
        let (st, problems) = State::parse(text);
        assert_eq!(st.entries.len(), 3);
        assert_eq!(
            format_time(&st.entries["/var/log/we \"ird\".log"]),
            "2026-1-2-13:45:7"
        );
        assert_eq!(
            format_time(&st.entries["/var/log/old.log"]),
            "2020-5-6-0:0:0"
        );
        assert_eq!(problems.iter().map(|p| p.line).collect::<Vec<_>>(), [4, 6]);
        let (again, p2) = State::parse(&st.render());
        assert_eq!(again, st);
        assert!(p2.is_empty());
    }
}
