//! The last transaction a WAL segment ends, read with PostgreSQL's own
//! `pg_waldump` when `walarchive push` archives it: the commit time the
//! recovery window's newest point is made of ([`crate::window`]), recorded
//! in the segment's checksum file ([`crate::sidecar::LastXact`]).
//!
//! Best effort: a segment that cannot be read this way (no pg_waldump of
//! the server's version, a file not named as its segment) is archived all
//! the same, its last transaction `Unread`; the window then says its newest
//! point is not known exactly rather than guess it from a file's mtime.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::sidecar::LastXact;

/// The last commit or abort record of the segment at `path` (named as its
/// segment, as `%p` is: `pg_wal/<name>`), with the newest commit time in
/// the segment (commit times are taken before the record is written, so
/// the last record is not always the newest). Only that segment is read: a
/// record that ends in the next one is not replayable from the archive
/// until that one is archived too, so it is not counted.
///
/// pg_waldump prints a prepared transaction's name (`PREPARE gid …`) as
/// the user gave it, newlines included, and any database user can prepare
/// one: a line that looks like a commit may be forged. So the lines must
/// name positions inside this segment, rising; and the two records chosen
/// are read again on their own (`pg_waldump -s LSN -n 1`), where a record's
/// first line is PostgreSQL's own. Anything else: `Unread`.
pub fn last_xact(path: &Path) -> LastXact {
    let Some(tool) = pg_waldump(path) else {
        log::debug!(
            "no pg_waldump for {}: its last transaction is not recorded",
            path.display()
        );
        return LastXact::Unread;
    };
    let Some(range) = segment_range(path) else {
        return LastXact::Unread;
    };
    let mut cmd = waldump(&tool);
    cmd.arg("--rmgr=Transaction").arg(path).arg(path);
    let Some((lines, ok, records, prepared)) = run(cmd, &range) else {
        log::warn!(
            "{}: pg_waldump printed records out of order or outside the segment; its last transaction is not recorded",
            path.display()
        );
        return LastXact::Unread;
    };
    // pg_waldump exits non-zero when a segment ends in a record it cannot
    // finish reading, after printing every record before it; one that
    // printed nothing and failed did not read the segment.
    if !ok && lines == 0 {
        log::debug!("{} could not read {}", tool.display(), path.display());
        return LastXact::Unread;
    }
    let (Some(last), Some(newest)) = (
        records.last().copied(),
        records.iter().copied().max_by_key(|(t, _)| *t),
    ) else {
        return LastXact::NoneIn;
    };
    // Only a prepared transaction's name is user text in this listing, and
    // it is printed with its PREPARE record: without one, every line is
    // PostgreSQL's own.
    for (t, lsn) in [last, newest].into_iter().filter(|_| prepared) {
        if !confirmed(&tool, path, t, lsn) {
            log::warn!(
                "{}: the record at {} is not the commit pg_waldump listed; its last transaction is not recorded",
                path.display(),
                crate::physical::format_lsn(lsn)
            );
            return LastXact::Unread;
        }
    }
    LastXact::At(newest.0, last.1)
}

/// [`last_xact`] on another thread (pg_waldump is a process of its own):
/// `walarchive push` compresses the segment meanwhile, so the archive
/// command takes about the longer of the two, not their sum.
pub fn spawn(path: PathBuf) -> std::thread::JoinHandle<LastXact> {
    std::thread::spawn(move || last_xact(&path))
}

/// The WAL positions segment `path` holds: from its name and size.
fn segment_range(path: &Path) -> Option<std::ops::Range<u64>> {
    let name = path.file_name()?.to_str()?;
    let size = std::fs::metadata(path).ok()?.len();
    if !crate::walstore::valid_segment_size(size) {
        return None;
    }
    let (_, n) = crate::walstore::segment_of(name, size)?;
    Some(n * size..(n + 1) * size)
}

/// A commit or abort record: its time and where it starts.
type Xact = (DateTime<Utc>, u64);

/// What a pg_waldump run printed: lines read, whether it exited 0, the
/// commit and abort records in order, and whether it listed a PREPARE.
type Listing = (u64, bool, Vec<Xact>, bool);

/// pg_waldump at `tool`, printing commit times in UTC whatever the
/// archiver's zone, its output piped and its complaints dropped.
fn waldump(tool: &Path) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// Run pg_waldump, streaming its lines (see [`Listing`]), or None when a
/// record lies outside `range` or does not rise.
fn run(mut cmd: Command, range: &std::ops::Range<u64>) -> Option<Listing> {
    let mut child = cmd.spawn().ok()?;
    let (mut lines, mut records, mut sane, mut prepared) = (0u64, Vec::new(), true, false);
    if let Some(out) = child.stdout.take() {
        // Streamed, one line at a time: a busy segment holds 100 000 commits.
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            lines += 1;
            prepared |= line.contains("desc: PREPARE");
            if let Some(LastXact::At(t, lsn)) = parse_line(&line) {
                let rises = records.last().is_none_or(|&(_, prev)| lsn > prev);
                sane &= range.contains(&lsn) && rises;
                records.push((t, lsn));
            }
        }
    }
    let ok = child.wait().is_ok_and(|s| s.success());
    sane.then_some((lines, ok, records, prepared))
}

/// Whether the record at `lsn`, read on its own, is a commit or abort of
/// time `t`.
fn confirmed(tool: &Path, path: &Path, t: DateTime<Utc>, lsn: u64) -> bool {
    let mut cmd = waldump(tool);
    cmd.arg("-s")
        .arg(crate::physical::format_lsn(lsn))
        .args(["-n", "1"])
        .arg(path);
    // Only the first line: the record's own, before any text a user gave.
    let first = run_first_line(cmd);
    matches!(first.as_deref().and_then(parse_line), Some(LastXact::At(t2, l2)) if t2 == t && l2 == lsn)
}

fn run_first_line(mut cmd: Command) -> Option<String> {
    let mut child = cmd.spawn().ok()?;
    let mut first = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).take(64 << 10).read_line(&mut first);
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(first)
}

/// `rmgr: Transaction len …, lsn: 0/02773A38, prev …, desc: COMMIT 2026-12-07 03:58:49.034616 UTC; …`
/// (or ABORT, COMMIT_PREPARED 725: …, ABORT_PREPARED 725: …).
fn parse_line(line: &str) -> Option<LastXact> {
    let lsn = line.split("lsn: ").nth(1)?.split(',').next()?;
    let lsn = crate::physical::parse_lsn(lsn)?;
    let desc = line.split("desc: ").nth(1)?;
    let (kind, rest) = desc.split_once(' ')?;
    if !matches!(
        kind,
        "COMMIT" | "ABORT" | "COMMIT_PREPARED" | "ABORT_PREPARED"
    ) {
        return None;
    }
    // A prepared transaction's record names its xid first: `725: <time>`.
    let rest = match rest.split_once(": ") {
        Some((xid, t)) if xid.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => rest,
    };
    let stamp = rest.split(" UTC").next()?;
    let t = NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f").ok()?;
    Some(LastXact::At(
        DateTime::from_naive_utc_and_offset(t, Utc),
        lsn,
    ))
}

/// The pg_waldump of the server archiving `path`: beside the `postgres`
/// that runs the archive command (found up the process tree), else in
/// `OPSKIT_PG_BINDIR`, else one of the data directory's major version
/// (`PG_VERSION` beside `pg_wal/`).
fn pg_waldump(path: &Path) -> Option<PathBuf> {
    // A bindir given explicitly wins over the one found.
    let given = std::env::var_os("OPSKIT_PG_BINDIR").map(PathBuf::from);
    for bin in [given, server_bindir()].into_iter().flatten() {
        let t = bin.join("pg_waldump");
        if t.is_file() {
            return Some(t);
        }
    }
    let data = path.parent()?.parent()?;
    let version = std::fs::read_to_string(data.join("PG_VERSION")).ok()?;
    let major = crate::pgtools::major_of_version(version.trim())?;
    crate::pgtools::find_exact("pg_waldump", major, version.trim(), None, "postgresql")
        .ok()
        .map(|t| t.path)
}

/// The bindir of the `postgres` process this one runs under (the archiver
/// runs `sh -c archive_command`): at most a few parents up.
fn server_bindir() -> Option<PathBuf> {
    let mut pid = std::process::id();
    for _ in 0..4 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
        let after = stat.rsplit_once(')')?.1;
        pid = after.split_whitespace().nth(1)?.parse().ok()?;
        if pid <= 1 {
            return None;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        if exe.file_name().is_some_and(|n| n == "postgres") {
            return exe.parent().map(Path::to_path_buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_and_abort_lines() {
        let at = |l: &str| match parse_line(l) {
            Some(LastXact::At(t, lsn)) => Some((t.to_rfc3339(), lsn)),
            _ => None,
        };
        let commit = "rmgr: Transaction len (rec/tot):     66/    66, tx:        723, lsn: 0/015006D0, prev 0/01500630, desc: COMMIT 2026-12-07 03:58:48.224844 UTC; inval msgs: snapshot 2396";
        assert_eq!(
            at(commit),
            Some(("2026-12-07T03:58:48.224844+00:00".into(), 0x15006D0))
        );
        let abort = "rmgr: Transaction len (rec/tot): 70/ 70, tx: 724, lsn: 1/02773A38, prev 0/027739F8, desc: ABORT 2026-12-07 03:58:49 UTC; rels: base/5/16384";
        assert_eq!(
            at(abort),
            Some(("2026-12-07T03:58:49+00:00".into(), 0x1_0277_3A38))
        );
        let prepared = "rmgr: Transaction len (rec/tot): 98/98, tx: 0, lsn: 0/03000110, prev 0/030000D8, desc: COMMIT_PREPARED 725: 2026-12-07 04:00:00.5 UTC";
        assert_eq!(
            at(prepared),
            Some(("2026-12-07T04:00:00.500+00:00".into(), 0x3000110))
        );
        for other in [
            "rmgr: Transaction len (rec/tot): 30/30, tx: 725, lsn: 0/03000080, prev 0/03000048, desc: PREPARE gid x: 2026-12-07 04:00:00 UTC",
            "rmgr: Transaction len (rec/tot): 30/30, tx: 0, lsn: 0/03000080, prev 0/03000048, desc: ASSIGNMENT xtop 1: subxacts: 2",
            "pg_waldump: error: error in WAL record at 0/3000110: invalid record length",
        ] {
            assert_eq!(parse_line(other), None, "{other}");
        }
    }
}
