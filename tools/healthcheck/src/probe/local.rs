//! Checks on this machine: `disk:PATH`, `backup:ROOT`, `migrations:DIR`.

use std::collections::HashMap;
use std::io::BufReader;
use std::path::Path;

use chrono::{DateTime, Utc};
use opskit::backupset::{self, MANIFEST};
use opskit::reader::RecordReader;
use opskit::records::{Depth, Verify};

use super::Observation;
use crate::spec::Check;

fn path_of(c: &Check) -> &str {
    c.target.split_once(':').map(|(_, p)| p).unwrap_or("")
}

struct Fs {
    total: u64,
    avail: u64,
    files: u64,
    files_avail: u64,
}

#[allow(unsafe_code)]
fn statvfs(path: &Path) -> std::io::Result<Fs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: `c` is a valid NUL-terminated string and `st` a zeroed
    // statvfs the call fills in; nothing is kept past the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(Fs {
        total: st.f_blocks as u64 * frsize,
        avail: st.f_bavail as u64 * frsize,
        files: st.f_files as u64,
        files_avail: st.f_favail as u64,
    })
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

pub fn disk(c: &Check) -> Result<Observation, String> {
    let path = Path::new(path_of(c));
    let fs = statvfs(path).map_err(|e| opskit::exit::describe_io("checking", path, &e))?;
    let mut obs = Observation::default();
    let free_pct = pct(fs.avail, fs.total);
    obs.set("free_bytes", fs.avail);
    obs.set("total_bytes", fs.total);
    obs.set("free_pct", free_pct);
    // Some file systems (btrfs) report no inode limit: no value, not 0 %.
    obs.set("inodes_free_pct", pct(fs.files_avail, fs.files));
    obs.summary = format!(
        "{} free of {} ({}%) on {}",
        opskit::units::format_size(fs.avail),
        opskit::units::format_size(fs.total),
        free_pct.unwrap_or(0.0),
        path.display()
    );
    Ok(obs)
}

fn age(t: DateTime<Utc>) -> f64 {
    ((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// What verify-backup's result log says: the newest set that passed (and
/// the newest that passed in full, that is deeper than checksums, and the
/// newest that passed a restore test), and the latest verdict.
#[derive(Default)]
struct Verified {
    newest: Option<(DateTime<Utc>, String)>,
    in_full: Option<(DateTime<Utc>, String)>,
    /// The deepest passing verification of each set.
    depth: HashMap<String, Depth>,
    restore: Option<(DateTime<Utc>, f64)>,
    last_ok: Option<bool>,
}

fn read_verify_log(file: &Path, sets: &HashMap<String, DateTime<Utc>>) -> Result<Verified, String> {
    let mut v = Verified::default();
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(opskit::exit::describe_io("reading", file, &e)),
    };
    let mut rd = RecordReader::new(BufReader::new(f));
    for line in rd.by_ref() {
        // A torn last line after a crash, or a record of another kind.
        let Ok(line) = line else { continue };
        let Ok(rec) = line.parse::<Verify>() else {
            continue;
        };
        v.last_ok = Some(rec.ok);
        let Some(&at) = sets.get(&rec.set) else {
            continue; // a set since pruned
        };
        if !rec.ok {
            continue;
        }
        if v.newest.as_ref().is_none_or(|(t, _)| at >= *t) {
            v.newest = Some((at, rec.set.clone()));
        }
        if rec.depth > Depth::Quick && v.in_full.as_ref().is_none_or(|(t, _)| at >= *t) {
            v.in_full = Some((at, rec.set.clone()));
        }
        let d = v.depth.entry(rec.set.clone()).or_insert(rec.depth);
        *d = (*d).max(rec.depth);
        if let Some(rs) = rec.restore_s {
            let tested = line.ts().unwrap_or(at);
            if v.restore.is_none_or(|(t, _)| tested >= t) {
                v.restore = Some((tested, rs));
            }
        }
    }
    match rd.take_io_error() {
        Some(e) => Err(format!("{}: {}", file.display(), e.msg)),
        None => Ok(v),
    }
}

pub fn backup(c: &Check) -> Result<Observation, String> {
    let root = Path::new(path_of(c));
    let rd = std::fs::read_dir(root)
        .map_err(|e| opskit::exit::describe_io("reading backup root", root, &e))?;
    let mut sets = HashMap::new();
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((_, at)) = backupset::parse_set_dir_name(&name) else {
            continue;
        };
        // A set is complete once its manifest is in place (pgbackup renames
        // the finished set into place; a staging dir has a temp name).
        if entry.path().join(MANIFEST).is_file() {
            sets.insert(name, at);
        }
    }
    let newest = sets
        .iter()
        .max_by_key(|(_, t)| **t)
        .map(|(n, t)| (n.clone(), *t));
    let verified = read_verify_log(&root.join(backupset::VERIFIED_LOG), &sets)?;
    let mut obs = Observation::default();
    obs.set("sets", sets.len());
    obs.set("newest", newest.as_ref().map(|(n, _)| n.clone()));
    obs.set("age_s", newest.as_ref().map(|(_, t)| age(*t)));
    let bytes = newest
        .as_ref()
        .and_then(|(n, _)| backupset::read_manifest(&root.join(n)).ok())
        .map(|(m, _)| m.files.iter().map(|f| f.bytes).sum::<u64>());
    obs.set("newest_bytes", bytes);
    obs.set("verified", verified.newest.as_ref().map(|(_, n)| n.clone()));
    obs.set(
        "verified_age_s",
        verified.newest.as_ref().map(|(t, _)| age(*t)),
    );
    let depth = verified
        .newest
        .as_ref()
        .and_then(|(_, n)| verified.depth.get(n))
        .copied();
    obs.set("verified_depth", depth.map(Depth::as_str));
    obs.set(
        "full_verified",
        verified.in_full.as_ref().map(|(_, n)| n.clone()),
    );
    obs.set(
        "full_verified_age_s",
        verified.in_full.as_ref().map(|(t, _)| age(*t)),
    );
    obs.set("last_verify_ok", verified.last_ok);
    obs.set(
        "restore_tested_age_s",
        verified.restore.map(|(t, _)| age(t)),
    );
    obs.set("restore_s", verified.restore.map(|(_, s)| s));
    let hours = |s: f64| format!("{:.1} h", s / 3600.0);
    obs.summary = match &newest {
        None => format!("no complete backup set in {}", root.display()),
        Some((n, t)) => format!(
            "newest set {n} is {} old; newest verified: {}",
            hours(age(*t)),
            verified
                .newest
                .as_ref()
                .map(|(t, n)| {
                    let how = match depth {
                        Some(Depth::Quick) => ", checksums only",
                        _ => "",
                    };
                    format!("{n} ({} old{how})", hours(age(*t)))
                })
                .unwrap_or("none".into())
        ),
    };
    Ok(obs)
}

/// `wal:ROOT`: walarchive's archive in a backup root.
pub fn wal(c: &Check) -> Result<Observation, String> {
    let root = Path::new(path_of(c));
    let s = walarchive::store::Archive::new(root)
        .survey()
        .map_err(|e| e.msg)?;
    let mut obs = Observation::default();
    obs.set("files", s.files);
    obs.set("segments", s.segments);
    obs.set("timelines", s.timelines);
    let newest_age = s
        .newest
        .as_ref()
        .map(|(_, t)| t.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0));
    obs.set("newest", s.newest.as_ref().map(|(n, _)| n.clone()));
    obs.set("age_s", newest_age);
    obs.set("gaps", s.missing);
    obs.set("first_gap", s.first_missing.clone());
    obs.summary = match (&s.newest, newest_age) {
        (Some((n, _)), Some(age)) => format!(
            "{} segments on {} timeline(s) in {}; newest {n} archived {:.0} s ago; {} missing{}",
            s.segments,
            s.timelines,
            root.join("wal").display(),
            age,
            s.missing,
            s.first_missing
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ),
        _ => format!("no archived WAL in {}", root.join("wal").display()),
    };
    Ok(obs)
}

pub fn migrations(c: &Check) -> Result<Observation, String> {
    let dir = Path::new(path_of(c));
    let files = migrate::parse::load_dir(dir).map_err(|e| e.msg)?;
    let mut spec = super::pg::spec_of(c.database.as_deref().unwrap_or("postgres:"))?;
    spec.connect_timeout = c.timeout;
    let mut db = migrate::db::Db::connect(&spec).map_err(|e| e.msg)?;
    let n = migrate::report::counts(&db.applied().map_err(|e| e.msg)?, &files);
    let mut obs = Observation::default();
    obs.set("pending", n.pending);
    obs.set("applied", n.applied);
    obs.set("dirty", n.dirty);
    obs.set("files", n.files);
    obs.summary = format!(
        "{} pending, {} applied, {} dirty",
        n.pending, n.applied, n.dirty
    );
    Ok(obs)
}
