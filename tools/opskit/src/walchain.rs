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

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::Result;
use crate::backupset::PhysicalInfo;
use crate::physical::{archived_wal, segment_of};

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

/// Follow the archive under `root` from `info`'s start segment; `None`
/// when the root has no archive.
pub fn follow(root: &Path, info: &PhysicalInfo) -> Result<Option<Chain>> {
    let seg_size = info.wal_segment_size;
    let files = archived_wal(root)?;
    if files.is_empty() {
        return Ok(None);
    }
    let Some((_, start)) = segment_of(&info.start_wal, seg_size) else {
        return Ok(None);
    };
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
        return Ok(Some(chain));
    };
    let top = *tlis.iter().next_back().expect("not empty");
    chain.newest = Some(name_of(top, last, seg_size));
    for n in start..=last {
        if have.contains_key(&n) {
            chain.segments += 1;
        } else {
            chain.missing += 1;
            if chain.first_missing.len() < 3 {
                chain
                    .first_missing
                    .push(name_of(info.timeline, n, seg_size));
            }
        }
    }
    Ok(Some(chain))
}

fn name_of(tli: u32, n: u64, seg_size: u64) -> String {
    let per_log = (1u64 << 32) / seg_size;
    format!("{tli:08X}{:08X}{:08X}", n / per_log, n % per_log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(start: &str) -> PhysicalInfo {
        PhysicalInfo {
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
        }
    }

    fn archive(names: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            let dir = d.path().join("wal").join(&n[..8]);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{n}.zst")), "x").unwrap();
            std::fs::write(dir.join(format!("{n}.sha256")), "x").unwrap();
        }
        d
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
        let c = follow(d.path(), &info("000000010000000000000004"))
            .unwrap()
            .unwrap();
        assert_eq!(c.missing, 0, "{c:?}");
        assert_eq!(c.segments, 3);
        assert_eq!(c.timelines, vec![1, 2]);
        assert_eq!(c.newest.as_deref(), Some("000000020000000000000006"));

        let d = archive(&[
            "000000010000000000000004",
            "0000000100000000000000FF",
            "000000010000000100000000",
        ]);
        let c = follow(d.path(), &info("000000010000000000000004"))
            .unwrap()
            .unwrap();
        assert_eq!(c.missing, 0xFF - 5, "{c:?}");
        assert_eq!(c.first_missing[0], "000000010000000000000005");

        // The start segment itself not archived.
        let d = archive(&["000000010000000000000001"]);
        let c = follow(d.path(), &info("000000010000000000000004"))
            .unwrap()
            .unwrap();
        assert_eq!(c.missing, 1);
        assert!(
            follow(&d.path().join("none"), &info("000000010000000000000004"))
                .unwrap()
                .is_none()
        );
    }
}
