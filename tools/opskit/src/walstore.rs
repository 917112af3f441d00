//! The WAL archive in a backup root, described once. Every tool that reads
//! or writes it (`walarchive push/fetch/restore`, healthcheck's `wal:`
//! check, verify-backup's `wal` check, prune and offsite) asks here.
//!
//! ```text
//! ROOT/wal/<timeline>/<name>.zst[.age]     the stored file (compressed, maybe encrypted)
//! ROOT/wal/<timeline>/<name>.sha256        its checksum file (crate::sidecar), written last
//! ROOT/wal/<timeline>/.<file>.tmp.<pid>    a push under way (or killed)
//! ROOT/wal/<timeline>/.push.lock           one push per timeline at a time
//! ```
//!
//! `<name>` is the name PostgreSQL gives (`%f`): a segment, a timeline
//! history file, a backup label or a partial segment; `<timeline>` is its
//! first eight hex digits. A WAL file without its checksum file is not
//! archived. The segment arithmetic (segment numbers and names for a
//! segment size) lives here too.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::backupset::{Codec, Manifest};
use crate::codec::Compression;
use crate::sidecar::Sidecar;
use crate::{Error, IoContext, Result};

/// The archive's directory in a backup root.
pub const WAL_DIR: &str = "wal";
/// The checksum file's suffix: it marks a WAL file archived.
pub const SIDECAR: &str = ".sha256";
/// The lock a push of one timeline holds (in its directory).
pub const PUSH_LOCK: &str = ".push.lock";
/// How long a push waits for another push of the same timeline.
pub const PUSH_LOCK_WAIT: Duration = Duration::from_secs(60);
/// PostgreSQL's default segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;
/// What marks a temporary name: `.<file>.tmp.<pid>`.
const TMP_MARK: &str = ".tmp.";

/// The archive of `root`: `ROOT/wal`.
pub fn dir(root: &Path) -> PathBuf {
    root.join(WAL_DIR)
}

/// Whether `name` is a WAL file name PostgreSQL archives: a segment
/// (24 hex digits), a timeline history file, a backup label or a partial
/// segment.
pub fn valid_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
    };
    if let Some(t) = name.strip_suffix(".history") {
        return hex(t, 8);
    }
    if let Some(seg) = name.strip_suffix(".partial") {
        return hex(seg, 24);
    }
    if let Some(rest) = name.strip_suffix(".backup") {
        return rest
            .split_once('.')
            .is_some_and(|(seg, off)| hex(seg, 24) && hex(off, 8));
    }
    hex(name, 24)
}

/// The directory of WAL file `name`'s timeline (`None` when `name` is not
/// a WAL file name).
pub fn timeline_dir(root: &Path, name: &str) -> Option<PathBuf> {
    valid_name(name).then(|| dir(root).join(&name[..8]))
}

/// The checksum file's name of WAL file `name`.
pub fn sidecar_name(name: &str) -> String {
    format!("{name}{SIDECAR}")
}

/// The stored file's name of WAL file `name`: `<name>.zst[.age]` (the
/// compression's extension, `.age` when encrypted).
pub fn stored_name(name: &str, compression: Compression, sealed: bool) -> String {
    let age = if sealed { crate::crypt::EXT } else { "" };
    format!("{name}{}{age}", compression.ext())
}

/// Whether `file` is a stored file of WAL file `name` (the inverse of
/// [`stored_name`] for any compression).
pub fn is_stored(name: &str, file: &str) -> bool {
    let Some(rest) = file.strip_prefix(name) else {
        return false;
    };
    let rest = rest.strip_suffix(crate::crypt::EXT).unwrap_or(rest);
    rest.is_empty() || Codec::of_name(rest).is_some_and(|c| c.ext() == rest)
}

/// The temporary name this process writes `file` under, in the same
/// directory, before renaming it into place.
pub fn temp_name(file: &str) -> String {
    format!(".{file}{TMP_MARK}{}", std::process::id())
}

/// The pid in a temporary name, if `file` is one.
fn temp_pid(file: &str) -> Option<u32> {
    let (_, pid) = file.strip_prefix('.')?.rsplit_once(TMP_MARK)?;
    pid.parse().ok()
}

/// Remove the temporary files of pushes that were killed (their process
/// is gone) from a timeline directory; a running push's are left alone.
pub fn remove_stale_temps(tli_dir: &Path) {
    let Ok(rd) = fs::read_dir(tli_dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_pid(&name) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            log::warn!("removing {}, left by a killed push", e.path().display());
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Take the push lock of a timeline directory. One push per timeline at a
/// time: two servers archiving the same name (a failover gone wrong) must
/// not both see "not archived yet" and rename over each other.
pub fn lock_timeline(tli_dir: &Path) -> Result<crate::lock::Lock> {
    crate::lock::acquire(&tli_dir.join(PUSH_LOCK), PUSH_LOCK_WAIT)
}

/// Whether `n` is a segment size PostgreSQL allows: a power of two from
/// 1 MiB to 1 GiB.
pub fn valid_segment_size(n: u64) -> bool {
    n.is_power_of_two() && (1 << 20..=1 << 30).contains(&n)
}

/// How many segments one log file number holds (`0/00000000` to
/// `0/FFFFFFFF`): 256 for 16 MiB segments.
pub fn per_log(seg_size: u64) -> u64 {
    (1u64 << 32) / seg_size
}

/// The name of segment number `n` on `timeline`.
pub fn segment_name(timeline: u32, n: u64, seg_size: u64) -> String {
    let per_log = per_log(seg_size);
    format!("{timeline:08X}{:08X}{:08X}", n / per_log, n % per_log)
}

/// The 24-hex-digit name of the segment holding `lsn` on `timeline`.
pub fn wal_file_name(timeline: u32, lsn: u64, seg_size: u64) -> String {
    segment_name(timeline, lsn / seg_size, seg_size)
}

/// A segment name's timeline and segment number (`None` for anything
/// else: history files, backup labels, partial segments).
pub fn segment_of(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some((tli, log * per_log(seg_size) + seg))
}

/// Whether archived WAL file `name` lies before segment `first`: a
/// segment, a partial segment or a backup label before it. History files
/// never do (they are kept for every timeline).
pub fn wal_before(name: &str, first: u64, seg_size: u64) -> bool {
    name.len() >= 24
        && !name.contains(".history")
        && name.is_char_boundary(24)
        && segment_of(&name[..24], seg_size).is_some_and(|(_, n)| n < first)
}

/// Where the WAL the given base sets need starts: the earliest start
/// segment among them (its number, its name), with their segment size.
pub fn oldest_start<'a>(
    sets: impl IntoIterator<Item = &'a Manifest>,
) -> Option<(u64, String, u64)> {
    sets.into_iter()
        .filter_map(|m| {
            let info = m.physical.as_ref()?;
            let (_, n) = segment_of(&info.start_wal, info.wal_segment_size)?;
            Some((n, info.start_wal.clone(), info.wal_segment_size))
        })
        .min_by_key(|(n, _, _)| *n)
}

/// One archived WAL file (its checksum file is there).
#[derive(Debug, Clone)]
pub struct ArchivedWal {
    /// The WAL file's name (`%f`): a segment, `.history`, `.backup`, `.partial`.
    pub name: String,
    /// Its timeline directory.
    pub dir: PathBuf,
}

impl ArchivedWal {
    /// Its checksum file.
    pub fn sidecar(&self) -> PathBuf {
        self.dir.join(sidecar_name(&self.name))
    }

    /// The files that hold it: the checksum file first (removing it first
    /// makes the file "not archived" before its data goes), then the
    /// stored file(s).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = vec![self.sidecar()];
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if is_stored(&self.name, &e.file_name().to_string_lossy()) {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

/// Whether `root` has an archive directory (a real one, not a link):
/// walarchive creates it with the first file it archives.
pub fn has_dir(root: &Path) -> bool {
    crate::safefs::is_real_dir(&dir(root))
}

/// Every archived WAL file under `root`'s archive, by name (none when
/// there is no archive). Timeline directories that are symlinks are not
/// followed: prune deletes what is listed here.
pub fn archived_wal(root: &Path) -> Result<Vec<ArchivedWal>> {
    let dir = dir(root);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir, &e)),
    };
    let mut out = Vec::new();
    for tli in rd.flatten() {
        let path = tli.path();
        if !crate::safefs::is_real_dir(&path) {
            continue;
        }
        for e in fs::read_dir(&path).at("reading", &path)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_suffix(SIDECAR)
                && !name.starts_with('.')
            {
                out.push(ArchivedWal {
                    name: name.to_string(),
                    dir: path.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What the archive holds: its segments per timeline, the newest, and the
/// segments missing between each timeline's first and last.
#[derive(Debug, Default)]
pub struct Survey {
    /// Archived WAL files (segments, history files, backup labels).
    pub files: u64,
    pub segments: u64,
    pub timelines: u64,
    /// The most recently archived file and when (its `.sha256`'s mtime).
    pub newest: Option<(String, SystemTime)>,
    /// How many segments are missing, and the first of them.
    pub missing: u64,
    pub first_missing: Option<String>,
}

/// Survey `root`'s archive: a WAL file is archived when its checksum file
/// is there. Gaps are counted per timeline, from its first archived
/// segment to its last, with the segment size its checksum files record
/// (the original's size; 16 MiB when none says).
pub fn survey(root: &Path) -> Result<Survey> {
    let mut out = Survey::default();
    let mut timelines: BTreeMap<u32, Vec<&ArchivedWal>> = BTreeMap::new();
    let files = archived_wal(root)?;
    for w in files.iter().filter(|w| valid_name(&w.name)) {
        out.files += 1;
        let mtime = fs::metadata(w.sidecar()).and_then(|m| m.modified()).ok();
        if let Some(t) = mtime
            && out.newest.as_ref().is_none_or(|(_, n)| t > *n)
        {
            out.newest = Some((w.name.clone(), t));
        }
        if let Some((tli, _)) = segment_of(&w.name, DEFAULT_SEGMENT_SIZE) {
            timelines.entry(tli).or_default().push(w);
        }
    }
    for (tli, segs) in timelines {
        let seg_size = segs
            .iter()
            .find_map(|w| archived_segment_size(w))
            .unwrap_or(DEFAULT_SEGMENT_SIZE);
        let mut numbers: Vec<u64> = segs
            .iter()
            .filter_map(|w| segment_of(&w.name, seg_size))
            .map(|(_, n)| n)
            .collect();
        out.timelines += 1;
        out.segments += numbers.len() as u64;
        numbers.sort_unstable();
        numbers.dedup();
        for w in numbers.windows(2).filter(|w| w[1] > w[0] + 1) {
            out.missing += w[1] - w[0] - 1;
            out.first_missing
                .get_or_insert_with(|| segment_name(tli, w[0] + 1, seg_size));
        }
    }
    Ok(out)
}

/// The segment size an archived segment's checksum file records (its
/// original's size), when it reads and is one PostgreSQL allows.
fn archived_segment_size(w: &ArchivedWal) -> Option<u64> {
    let side = Sidecar::read(&w.sidecar()).ok()??;
    valid_segment_size(side.bytes).then_some(side.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = DEFAULT_SEGMENT_SIZE;

    #[test]
    fn wal_names() {
        for ok in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000002.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "00000001000000000000000g",
            "000000010000000000000001.zst",
            "0000000100000000000000001",
            "000000010000000000000001/x",
        ] {
            assert!(!valid_name(bad), "{bad}");
            assert!(timeline_dir(Path::new("/r"), bad).is_none(), "{bad}");
        }
        assert_eq!(
            timeline_dir(Path::new("/r"), "00000002.history"),
            Some(PathBuf::from("/r/wal/00000002"))
        );
    }

    #[test]
    fn stored_sidecar_and_temp_names() {
        let name = "000000010000000000000001";
        let zstd = Compression::parse("zstd").unwrap();
        let none = Compression::parse("none").unwrap();
        assert_eq!(stored_name(name, zstd, true), format!("{name}.zst.age"));
        assert_eq!(stored_name(name, none, false), name);
        assert_eq!(sidecar_name(name), format!("{name}.sha256"));
        for (file, stored) in [
            (format!("{name}.zst"), true),
            (format!("{name}.gz.age"), true),
            (format!("{name}.age"), true),
            (name.to_string(), true),
            (format!("{name}.sha256"), false),
            (format!("{name}.zst.tmp.1"), false),
            (format!("{name}.partial.zst"), false),
        ] {
            assert_eq!(is_stored(name, &file), stored, "{file}");
        }
        let tmp = temp_name(&format!("{name}.zst"));
        assert!(tmp.starts_with('.') && !is_stored(name, &tmp), "{tmp}");
        assert_eq!(temp_pid(&tmp), Some(std::process::id()));
        assert_eq!(temp_pid(name), None);
    }

    #[test]
    fn stale_temps_go_and_a_live_push_keeps_its_own() {
        let d = tempfile::tempdir().unwrap();
        let live = temp_name("000000010000000000000001.zst");
        let dead = ".000000010000000000000002.zst.tmp.4294967295";
        for n in [live.as_str(), dead, PUSH_LOCK] {
            fs::write(d.path().join(n), "x").unwrap();
        }
        remove_stale_temps(d.path());
        assert!(d.path().join(&live).exists());
        assert!(d.path().join(PUSH_LOCK).exists());
        assert!(!d.path().join(dead).exists());
    }

    #[test]
    fn segment_arithmetic() {
        assert_eq!(per_log(SEG), 256);
        assert!(valid_segment_size(SEG) && valid_segment_size(1 << 30));
        for bad in [0, 1, 3 << 20, 2 << 30] {
            assert!(!valid_segment_size(bad), "{bad}");
        }
        assert_eq!(wal_file_name(1, 0x2000028, SEG), "000000010000000000000002");
        assert_eq!(
            wal_file_name(2, 0x1_FF00_0000, SEG),
            "0000000200000001000000FF"
        );
        assert_eq!(segment_of("0000000200000001000000FF", SEG), Some((2, 511)));
        assert_eq!(segment_name(2, 511, SEG), "0000000200000001000000FF");
        assert_eq!(segment_of("00000002.history", SEG), None);
        // 64 MiB segments: 64 per log file.
        let big = 64 << 20;
        assert_eq!(segment_of("000000010000000100000003", big), Some((1, 67)));
        assert_eq!(segment_name(1, 67, big), "000000010000000100000003");
    }

    #[test]
    fn what_lies_before_a_segment() {
        let first = 0x10;
        for (name, before) in [
            ("00000001000000000000000F", true),
            ("000000010000000000000010", false),
            ("00000001000000000000000F.partial", true),
            ("00000001000000000000000F.00000028.backup", true),
            ("00000002.history", false),
            ("00000002.history.sha256", false),
        ] {
            assert_eq!(wal_before(name, first, SEG), before, "{name}");
        }
    }

    /// An archive of `names` with checksum files recording `bytes`.
    fn archive(names: &[&str], bytes: u64) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for n in names {
            let tli = timeline_dir(d.path(), n).unwrap();
            fs::create_dir_all(&tli).unwrap();
            let side = Sidecar {
                sha256: "a".repeat(64),
                bytes,
                stored: format!("{n}.zst"),
                xact: crate::sidecar::LastXact::Unread,
                signature: None,
            };
            fs::write(tli.join(&side.stored), "x").unwrap();
            fs::write(tli.join(sidecar_name(n)), side.line()).unwrap();
        }
        d
    }

    #[test]
    fn survey_counts_segments_and_gaps_per_timeline() {
        let d = archive(
            &[
                "0000000100000000000000FE",
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000002",
                "00000002.history",
                "000000020000000100000005",
            ],
            SEG,
        );
        fs::write(dir(d.path()).join("00000001/.push.lock"), "").unwrap();
        let s = survey(d.path()).unwrap();
        assert_eq!((s.files, s.segments, s.timelines), (6, 5, 2), "{s:?}");
        assert_eq!(s.missing, 1);
        assert_eq!(s.first_missing.as_deref(), Some("000000010000000100000001"));
        assert!(s.newest.is_some());
        let w = &archived_wal(d.path()).unwrap()[0];
        assert_eq!(w.files().len(), 2, "{:?}", w.files());

        // 64 MiB segments: 3F then the next log file's 00 is no gap.
        let d = archive(
            &["00000001000000000000003F", "000000010000000100000000"],
            64 << 20,
        );
        assert_eq!(survey(d.path()).unwrap().missing, 0);
        let none = survey(&d.path().join("nothing")).unwrap();
        assert_eq!((none.files, none.newest), (0, None));
    }
}
