//! Whether the archive holds every WAL segment a base set needs to recover
//! to the newest archived point: from the set's start segment to the newest
//! segment archived on its timeline or on a later one (a point-in-time
//! restore branches a new timeline; recovery follows it).
//!
//! A segment counts as there when any timeline from the set's up to the
//! newest has it archived. The switch points inside `.history` files are
//! not read (they are encrypted with the rest in an encrypted archive), so
//! a segment archived only on a sibling branch also counts; a window where
//! archiving failed is missing on every timeline and is always found.
//!
//! A root with no archived WAL is fine for a set taken with `archive_mode`
//! off (it recovers to its own end only) and a failure for one taken with
//! archiving on, or for an older set in a root whose archive was emptied
//! (see [`NoArchive`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::backupset::PhysicalInfo;
use crate::walstore::{self, archived_wal, segment_name, segment_of};
use crate::{Error, Result};

/// What following the archive from a base set found.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// The timelines seen from the set's on.
    pub timelines: Vec<u32>,
    /// The newest archived segment on those timelines.
    pub newest: Option<String>,
    /// Segments from the set's start to the newest that are archived.
    pub segments: u64,
    /// Segments missing in between, and the first few of them.
    pub missing: u64,
    pub first_missing: Vec<String>,
}

/// What the root of a base set holds for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Coverage {
    /// The archive, followed from the set's start.
    Chain(Chain),
    /// No archived WAL at all, and whether that is expected.
    NoArchive(NoArchive),
}

/// Why a base set's root has no archived WAL.
///
/// The set's manifest records the server's `archive_mode` when it was
/// taken: `on` or `always` means its WAL was being archived, and an
/// archive that is not there is lost WAL. Sets made before it was recorded
/// do not say; for them the root decides: walarchive creates `ROOT/wal/`
/// with the first file it archives, so a `wal/` directory with nothing
/// archived in it is an archive that was emptied.
#[derive(Debug, Clone, PartialEq)]
pub enum NoArchive {
    /// The set was taken with `archive_mode` off.
    NotArchiving,
    /// The set does not say, and the root never had an archive.
    NeverHad,
    /// The set was taken with this `archive_mode` (`on`, `always`).
    Expected(String),
    /// The set does not say, and the root's archive directory is there
    /// with nothing archived in it.
    Emptied,
}

impl NoArchive {
    /// Whether the set is fine without an archive (it recovers to its own
    /// end, as it was meant to).
    pub fn is_ok(&self) -> bool {
        matches!(self, NoArchive::NotArchiving | NoArchive::NeverHad)
    }

    /// What the `wal` check says about it, for the archive of `root`.
    pub fn describe(&self, root: &Path) -> String {
        let dir = walstore::dir(root);
        let state = if walstore::has_dir(root) {
            "holds no archived WAL"
        } else {
            "does not exist"
        };
        let only = "the set recovers to its own end only";
        match self {
            NoArchive::NotArchiving => {
                format!("taken with archive_mode off and no WAL archive in this root: {only}")
            }
            NoArchive::NeverHad => format!("no WAL archive in this root: {only}"),
            NoArchive::Expected(mode) => format!(
                "taken with archive_mode {mode}, but {} {state}: the WAL archived since is gone or goes elsewhere, and {only}",
                dir.display()
            ),
            NoArchive::Emptied => format!(
                "{} {state}: the archive this root had is gone, and {only}",
                dir.display()
            ),
        }
    }
}

impl Coverage {
    /// Whether the set can be recovered as far as it should.
    pub fn is_ok(&self) -> bool {
        match self {
            Coverage::Chain(c) => c.missing == 0,
            Coverage::NoArchive(n) => n.is_ok(),
        }
    }
}

/// Follow the archive under `root` from `info`'s start segment. A start
/// segment or segment size in the manifest that does not parse is an error
/// (a failed check), whatever the archive holds.
pub fn follow(root: &Path, info: &PhysicalInfo) -> Result<Coverage> {
    let seg_size = info.wal_segment_size;
    if !walstore::valid_segment_size(seg_size) {
        return Err(Error::check(format!(
            "the manifest's wal_segment_size {seg_size} is not a WAL segment size (a power of two from 1 MiB to 1 GiB): the WAL this set needs cannot be named"
        )));
    }
    let Some((_, start)) = segment_of(&info.start_wal, seg_size) else {
        return Err(Error::check(format!(
            "the manifest's start_wal '{}' is not a WAL segment name (24 hex digits): the WAL this set needs cannot be found",
            info.start_wal.escape_debug()
        )));
    };
    let files = archived_wal(root)?;
    if files.is_empty() {
        return Ok(Coverage::NoArchive(no_archive(root, info)));
    }
    // Segment number -> the timelines that have it.
    let mut have: BTreeMap<u64, BTreeSet<u32>> = BTreeMap::new();
    for f in &files {
        if let Some((tli, n)) = segment_of(&f.name, seg_size)
            && tli >= info.timeline
        {
            have.entry(n).or_default().insert(tli);
        }
    }
    let timelines: BTreeSet<u32> = have.values().flatten().copied().collect();
    let newest = have.range(start..).next_back().map(|(n, t)| (*n, t));
    let mut chain = Chain {
        timelines: timelines.into_iter().collect(),
        newest: None,
        segments: 0,
        missing: 0,
        first_missing: Vec::new(),
    };
    let Some((last, tlis)) = newest else {
        // Nothing archived from the start on: the start segment itself is missing.
        chain.missing = 1;
        chain.first_missing.push(info.start_wal.clone());
        return Ok(Coverage::Chain(chain));
    };
    let top = *tlis.iter().next_back().expect("not empty");
    chain.newest = Some(segment_name(top, last, seg_size));
    for n in start..=last {
        if have.contains_key(&n) {
            chain.segments += 1;
        } else {
            chain.missing += 1;
            if chain.first_missing.len() < 3 {
                chain
                    .first_missing
                    .push(segment_name(info.timeline, n, seg_size));
            }
        }
    }
    Ok(Coverage::Chain(chain))
}

/// Why `root` has no archived WAL for the set of `info` (see [`NoArchive`]).
fn no_archive(root: &Path, info: &PhysicalInfo) -> NoArchive {
    match info.archive_mode.as_deref() {
        Some("off") => NoArchive::NotArchiving,
        Some(mode) => NoArchive::Expected(mode.to_string()),
        None if walstore::has_dir(root) => NoArchive::Emptied,
        None => NoArchive::NeverHad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(start: &str) -> PhysicalInfo {
        PhysicalInfo {
            incremental: None,
            server: String::new(),
            server_version: "15".into(),
            server_version_num: 150000,
            pg_basebackup_version: "15".into(),
            system_identifier: "1".into(),
            superuser: "postgres".into(),
            timeline: 1,
            start_lsn: "0/0".into(),
            end_lsn: "0/0".into(),
            start_wal: start.into(),
            wal_segment_size: 16 << 20,
            file: "base.tar.zst".into(),
            archive_mode: None,
            source: None,
        }
    }

    fn archive(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            let dir = walstore::timeline_dir(d.path(), n).unwrap();
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{n}.zst")), "x").unwrap();
            std::fs::write(dir.join(walstore::sidecar_name(n)), "x").unwrap();
        }
        d
    }

    fn chain(root: &Path, info: &PhysicalInfo) -> Chain {
        match follow(root, info).unwrap() {
            Coverage::Chain(c) => c,
            other => panic!("{other:?}"),
        }
    }

    fn no_archive(root: &Path, info: &PhysicalInfo) -> NoArchive {
        match follow(root, info).unwrap() {
            Coverage::NoArchive(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn follows_a_new_timeline_and_finds_gaps() {
        let d = archive(&[
            "000000010000000000000003",
            "000000010000000000000004",
            "000000010000000000000005",
            "00000002.history",
            "000000020000000000000005",
            "000000020000000000000006",
        ]);
        let c = chain(d.path(), &info("000000010000000000000004"));
        assert_eq!(c.missing, 0, "{c:?}");
        assert_eq!(c.segments, 3);
        assert_eq!(c.timelines, vec![1, 2]);
        assert_eq!(c.newest.as_deref(), Some("000000020000000000000006"));

        let d = archive(&[
            "000000010000000000000004",
            "0000000100000000000000FF",
            "000000010000000100000000",
        ]);
        let c = chain(d.path(), &info("000000010000000000000004"));
        assert_eq!(c.missing, 0xFF - 5, "{c:?}");
        assert_eq!(c.first_missing[0], "000000010000000000000005");

        // The start segment itself not archived.
        let d = archive(&["000000010000000000000001"]);
        let c = chain(d.path(), &info("000000010000000000000004"));
        assert_eq!(c.missing, 1);
    }

    #[test]
    fn a_start_segment_or_size_that_does_not_parse_is_a_failure() {
        let d = archive(&["000000010000000000000004"]);
        for root in [d.path(), &d.path().join("none")] {
            let e = follow(root, &info("00000001000000000000000")).unwrap_err();
            assert_eq!(e.exit, crate::Exit::CheckFailed);
            assert!(e.msg.contains("start_wal '00000001000000000000000'"), "{e}");
            let mut bad = info("000000010000000000000004");
            bad.wal_segment_size = 0;
            let e = follow(root, &bad).unwrap_err();
            assert!(e.msg.contains("wal_segment_size 0"), "{e}");
        }
    }

    #[test]
    fn no_archive_is_a_failure_only_when_one_was_expected() {
        let d = tempfile::tempdir().unwrap();
        let mut set = info("000000010000000000000004");
        // An older set (archive_mode not recorded), a root that never had one.
        let n = no_archive(d.path(), &set);
        assert_eq!(n, NoArchive::NeverHad);
        assert!(n.is_ok());
        assert!(
            n.describe(d.path())
                .contains("recovers to its own end only")
        );
        // Taken with archiving off: fine.
        set.archive_mode = Some("off".into());
        assert_eq!(no_archive(d.path(), &set), NoArchive::NotArchiving);
        assert!(Coverage::NoArchive(NoArchive::NotArchiving).is_ok());
        // Taken with archiving on (or always): its WAL should be here.
        for mode in ["on", "always"] {
            set.archive_mode = Some(mode.into());
            let n = no_archive(d.path(), &set);
            assert_eq!(n, NoArchive::Expected(mode.into()));
            assert!(!n.is_ok());
            let text = n.describe(d.path());
            assert!(
                text.contains(&format!("archive_mode {mode}")) && text.contains("does not exist"),
                "{text}"
            );
        }
        // An older set in a root whose archive directory is there, emptied
        // (a timeline directory with only its lock left).
        std::fs::create_dir_all(walstore::dir(d.path()).join("00000001")).unwrap();
        std::fs::write(
            walstore::dir(d.path())
                .join("00000001")
                .join(walstore::PUSH_LOCK),
            "",
        )
        .unwrap();
        set.archive_mode = None;
        let n = no_archive(d.path(), &set);
        assert_eq!(n, NoArchive::Emptied);
        assert!(!n.is_ok());
        assert!(n.describe(d.path()).contains("holds no archived WAL"));
        // ... but a set taken with archiving off still needs none.
        set.archive_mode = Some("off".into());
        assert!(no_archive(d.path(), &set).is_ok());
    }
}
