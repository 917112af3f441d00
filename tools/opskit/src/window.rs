//! The recovery window: to which points in time the sets and the WAL
//! archive of one place (a backup root, or the bucket its copies go to) can
//! bring the database back, computed once for every tool that shows it
//! (`walarchive window`, healthcheck's `wal:` check, `walarchive restore`).
//!
//! * Every dump set is a point: the time it was taken.
//! * Every restorable base set (verified, with every set of its chain
//!   present) starts a range at its end; the range goes on through the
//!   archived WAL from the set's start segment, with no segment missing,
//!   and ends at the last transaction (commit or abort) of the last such
//!   segment: recovery to a time stops at those records only. That time is
//!   read from the WAL when `walarchive push` archives a segment
//!   ([`crate::sidecar::LastXact`]), never from a file's mtime; where it was
//!   not read, the range's end is unknown and said so.
//!
//! Ranges that overlap are one range; a gap in the archive splits them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::Result;
use crate::backupset::{Manifest, PhysicalInfo};
use crate::records::{RecoveryWindow, WindowRange};
use crate::sidecar::{LastXact, Sidecar};
use crate::walstore::{self, segment_name, segment_of};

/// How many segments back from the newest a range's end is looked for
/// (segments that end no transaction: an idle server's switches).
const LOOK_BACK: u64 = 4096;

/// Where the WAL archive's names and checksum files are read: the root's
/// `wal/` or the bucket's `PREFIX/wal/`.
pub trait WalSource {
    /// Every archived WAL file's name (its checksum file is there).
    fn names(&self) -> Result<Vec<String>>;
    /// The checksum file of archived WAL file `name`.
    fn sidecar(&self, name: &str) -> Result<Option<Sidecar>>;
}

/// The archive in a backup root.
pub struct LocalWal<'a>(pub &'a Path);

impl WalSource for LocalWal<'_> {
    fn names(&self) -> Result<Vec<String>> {
        Ok(walstore::archived_wal(self.0)?
            .into_iter()
            .map(|w| w.name)
            .collect())
    }

    fn sidecar(&self, name: &str) -> Result<Option<Sidecar>> {
        match walstore::timeline_dir(self.0, name) {
            Some(dir) => Sidecar::read(&dir.join(walstore::sidecar_name(name))),
            None => Ok(None),
        }
    }
}

/// One set as the window sees it.
pub struct SetView {
    pub name: String,
    pub manifest: Manifest,
    /// Its latest verification passed (None: never verified).
    pub verified: Option<bool>,
}

/// The newest point a base set recovers to through the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct Newest {
    /// The last transaction's commit time (None: not recorded, or no
    /// archive: then `segment` says how far the WAL goes).
    pub time: Option<DateTime<Utc>>,
    /// Where that transaction's record starts.
    pub lsn: Option<u64>,
    /// The last archived segment with none missing before it.
    pub segment: Option<String>,
    /// The segment whose checksum file records that transaction, and
    /// that file as it was read (what a signature check must look at).
    pub xact_segment: Option<String>,
    pub sidecar: Option<Sidecar>,
    pub timeline: u32,
}

/// Segment number → the timelines that have it, from the base set's on.
type Have = BTreeMap<u64, BTreeSet<u32>>;

fn have(names: &[String], info: &PhysicalInfo) -> Have {
    let mut out = Have::new();
    for n in names {
        if let Some((tli, seg)) = segment_of(n, info.wal_segment_size)
            && tli >= info.timeline
        {
            out.entry(seg).or_default().insert(tli);
        }
    }
    out
}

/// How far the archive in `src` takes the base set of `info`.
pub fn newest(src: &dyn WalSource, info: &PhysicalInfo) -> Result<Newest> {
    newest_in(src, &have(&src.names()?, info), info)
}

/// The segments recovery replays from the set's start, as
/// `recovery_target_timeline = latest` follows them: at each segment the
/// newest timeline that has it, never going back to an older one (a
/// primary that went on archiving after its standby was promoted left
/// segments on the old timeline past the fork), until one is missing.
fn replayed(have: &Have, start: u64) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut tli = 0;
    let mut n = start;
    while let Some(t) = have.get(&n).and_then(|ts| ts.range(tli..).next_back()) {
        tli = *t;
        out.push((n, tli));
        n += 1;
    }
    out
}

fn newest_in(src: &dyn WalSource, have: &Have, info: &PhysicalInfo) -> Result<Newest> {
    let seg_size = info.wal_segment_size;
    let mut out = Newest {
        time: None,
        lsn: None,
        segment: None,
        xact_segment: None,
        sidecar: None,
        timeline: info.timeline,
    };
    // A manifest naming no segment size PostgreSQL allows names no
    // segment either.
    let start = match segment_of(&info.start_wal, seg_size) {
        Some((_, start)) if walstore::valid_segment_size(seg_size) => start,
        _ => return Ok(out),
    };
    let run = replayed(have, start);
    let Some(&(end, tli)) = run.last() else {
        return Ok(out);
    };
    out.segment = Some(segment_name(tli, end, seg_size));
    out.timeline = tli;
    for &(n, tli) in run.iter().rev().take(LOOK_BACK as usize) {
        let name = segment_name(tli, n, seg_size);
        // One that cannot be read is one whose last transaction is not
        // known: it ends the look back, it does not fail the window.
        let side = src.sidecar(&name).unwrap_or_else(|e| {
            log::warn!("{name}: {}; its last transaction is not known", e.msg);
            None
        });
        match side.as_ref().map(|s| s.xact) {
            Some(LastXact::At(t, lsn)) => {
                out.time = Some(t);
                out.lsn = Some(lsn);
                out.xact_segment = Some(name);
                out.sidecar = side;
                break;
            }
            Some(LastXact::NoneIn) => continue,
            _ => break,
        }
    }
    Ok(out)
}

/// The window of `sets` and the archive in `src`.
pub fn compute(sets: &[SetView], src: &dyn WalSource) -> Result<RecoveryWindow> {
    let names = src.names()?;
    // Base sets of one timeline and segment size share the archive's map,
    // and those whose WAL ends in one segment share its end: each checksum
    // file is read once, not once per set.
    let mut maps: BTreeMap<(u32, u64), Have> = BTreeMap::new();
    let mut ends: BTreeMap<String, Newest> = BTreeMap::new();
    let present: BTreeSet<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let mut w = RecoveryWindow::default();
    for s in sets.iter().filter(|s| s.manifest.database.is_some()) {
        let t = s.manifest.finished_at;
        w.dump_sets += 1;
        w.dumps_verified += u64::from(s.verified == Some(true));
        w.dump_oldest = Some(w.dump_oldest.map_or(t, |o| o.min(t)));
        w.dump_newest = Some(w.dump_newest.map_or(t, |o| o.max(t)));
    }
    let mut ranges = Vec::new();
    for s in sets {
        let Some(info) = &s.manifest.physical else {
            continue;
        };
        let whole = crate::chain::needs(&s.manifest)
            .iter()
            .all(|p| present.contains(p.as_str()));
        if s.verified != Some(true) || !whole {
            w.bases_unusable += 1;
            continue;
        }
        w.base_sets += 1;
        let from = s.manifest.finished_at;
        let have = maps
            .entry((info.timeline, info.wal_segment_size))
            .or_insert_with(|| have(&names, info));
        let n = match replayed_end(have, info) {
            // Shared when found: a set starting earlier could look further
            // back past segments that end no transaction.
            Some(key) if ends.get(&key).is_some_and(|n| n.time.is_some()) => ends[&key].clone(),
            key => {
                let n = newest_in(src, have, info)?;
                if let Some(k) = key {
                    ends.insert(k, n.clone());
                }
                n
            }
        };
        // A last transaction before the set ended: the set's own end is
        // the only point (recovery_target = immediate).
        let to = match (n.time, &n.segment) {
            (Some(t), _) => Some(t.max(from)),
            (None, None) => Some(from),
            (None, Some(_)) => None,
        };
        ranges.push(WindowRange {
            from,
            to,
            to_lsn: n
                .lsn
                .filter(|_| n.time.is_some_and(|t| t >= from))
                .map(crate::physical::format_lsn),
            timeline: n.timeline,
            base_sets: 1,
            first_base: s.name.clone(),
            newest_segment: n.segment,
        });
    }
    w.pitr = merge(ranges);
    let points = w
        .pitr
        .iter()
        .flat_map(|r| [Some(r.from), r.to])
        .chain([w.dump_oldest, w.dump_newest])
        .flatten();
    for t in points {
        w.oldest = Some(w.oldest.map_or(t, |o| o.min(t)));
        w.newest = Some(w.newest.map_or(t, |o| o.max(t)));
    }
    Ok(w)
}

/// The last segment a base set's recovery replays (the cache key of
/// [`compute`]).
fn replayed_end(have: &Have, info: &PhysicalInfo) -> Option<String> {
    let seg_size = info.wal_segment_size;
    let (_, start) = segment_of(&info.start_wal, seg_size)?;
    if !walstore::valid_segment_size(seg_size) {
        return None;
    }
    let &(n, tli) = replayed(have, start).last()?;
    Some(segment_name(tli, n, seg_size))
}

/// Overlapping ranges as one, oldest first.
fn merge(mut ranges: Vec<WindowRange>) -> Vec<WindowRange> {
    ranges.sort_by_key(|r| r.from);
    let mut out: Vec<WindowRange> = Vec::new();
    for r in ranges {
        if let Some(cur) = out.last_mut()
            && let Some(to) = cur.to
            && r.from <= to
        {
            cur.base_sets += 1;
            if r.to.is_none_or(|t| t > to) {
                cur.to = r.to;
                cur.to_lsn = r.to_lsn;
                cur.timeline = r.timeline;
                cur.newest_segment = r.newest_segment;
            }
            continue;
        }
        out.push(r);
    }
    out
}

/// The sets of a backup root with their latest verdicts (sets whose
/// manifest does not read are left out: they restore to nothing).
pub fn local_sets(root: &Path) -> Result<Vec<SetView>> {
    let verdicts = crate::verdicts::VerdictLog::local(root).passed()?;
    let mut out = Vec::new();
    for s in crate::root::sets(root)? {
        if let Ok(m) = s.manifest() {
            out.push(SetView {
                verified: verdicts.get(&s.name).copied(),
                name: s.name,
                manifest: m,
            });
        }
    }
    Ok(out)
}

/// The window of a backup root.
pub fn local(root: &Path) -> Result<RecoveryWindow> {
    let sets = local_sets(root)?;
    let mut w = compute(&sets, &LocalWal(root))?;
    w.location = "local".into();
    w.at = root.display().to_string();
    Ok(w)
}

/// `2026-12-06T14:02:55.123456Z`: a window's time as a person reads it and
/// as `walarchive restore --to` takes it back (microseconds only when set).
pub fn show_time(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_micros() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

/// The window as lines for a person (`walarchive window --table`).
pub fn table(w: &RecoveryWindow) -> String {
    let mut out = format!("{} ({}):\n", w.at, w.location);
    if w.pitr.is_empty() {
        out.push_str("  PITR:  none (no verified base set");
        if w.bases_unusable > 0 {
            out.push_str(&format!(
                "; {} unverified or missing a parent",
                w.bases_unusable
            ));
        }
        out.push_str(")\n");
    }
    for r in &w.pitr {
        let to = match r.to {
            Some(t) if t == r.from => format!(
                "only the base set's end, {} (walarchive restore --immediate)",
                show_time(t)
            ),
            Some(t) => format!("any time from {} to {}", show_time(r.from), show_time(t)),
            None => format!(
                "any time from {} to the end of {} (its last transaction was not recorded at archiving)",
                show_time(r.from),
                r.newest_segment.as_deref().unwrap_or("?")
            ),
        };
        out.push_str(&format!(
            "  PITR:  {to} (timeline {}, {} base set(s) from {})\n",
            r.timeline, r.base_sets, r.first_base
        ));
    }
    match (w.dump_newest, w.dump_oldest) {
        (Some(n), Some(o)) => out.push_str(&format!(
            "  dumps: {} sets ({} verified), newest {}, oldest {}\n",
            w.dump_sets,
            w.dumps_verified,
            show_time(n),
            show_time(o)
        )),
        _ => out.push_str("  dumps: none\n"),
    }
    out
}

#[cfg(test)]
mod tests;
