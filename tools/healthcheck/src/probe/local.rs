//! Checks on this machine: `disk:PATH`, `backup:ROOT`, `migrations:DIR`.

use std::collections::HashMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use opskit::records::Depth;
use opskit::verdicts::VerdictLog;

use super::Observation;
use crate::spec::Check;

fn path_of(c: &Check) -> &str {
    c.target.split_once(':').map(|(_, p)| p).unwrap_or("")
}

fn pct(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

pub fn disk(c: &Check) -> Result<Observation, String> {
    let path = Path::new(path_of(c));
    let fs =
        opskit::sys::statvfs(path).map_err(|e| opskit::exit::describe_io("checking", path, &e))?;
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

fn read_verify_log(root: &Path, sets: &[opskit::root::Set]) -> Result<Verified, String> {
    // One reader of the log for every tool: each set's latest verdict.
    let verdicts = VerdictLog::local(root).latest().map_err(|e| e.msg)?;
    let mut v = Verified {
        last_ok: verdicts.values().max_by_key(|x| x.at).map(|x| x.ok),
        ..Verified::default()
    };
    // Sets oldest first: the last that passed is the newest.
    for s in sets {
        let Some(x) = verdicts.get(&s.name).filter(|x| x.ok) else {
            continue;
        };
        v.newest = Some((s.time, s.name.clone()));
        if x.depth > Some(Depth::Quick) {
            v.in_full = Some((s.time, s.name.clone()));
        }
        if let Some(d) = x.depth {
            v.depth.insert(s.name.clone(), d);
        }
        if let Some((secs, at)) = x.restore {
            let tested = at.unwrap_or(s.time);
            if v.restore.is_none_or(|(t, _)| tested >= t) {
                v.restore = Some((tested, secs));
            }
        }
    }
    Ok(v)
}

/// The sets of a backup root (`opskit::root`'s rules: a symlink is never
/// a set, a set-named directory with anything named MANIFEST.json in it
/// is one), and the newest set with the bytes its manifest lists. The
/// newest set's manifest must parse, as every reader of the set needs it:
/// if it does not, the newest backup is broken, and that is the check's
/// failure (CRITICAL).
type Sets = (Vec<opskit::root::Set>, Option<(String, DateTime<Utc>, u64)>);

fn sets_in(root: &Path) -> Result<Sets, String> {
    let sets = opskit::root::sets(root).map_err(|e| e.msg)?;
    let newest = match sets.last() {
        None => None,
        Some(s) => {
            let m = s
                .manifest()
                .map_err(|e| format!("newest set {} has no usable manifest: {}", s.name, e.msg))?;
            Some((s.name.clone(), s.time, m.bytes()))
        }
    };
    Ok((sets, newest))
}

pub fn backup(c: &Check) -> Result<Observation, String> {
    let root = Path::new(path_of(c));
    let (sets, newest) = sets_in(root)?;
    let verified = read_verify_log(root, &sets)?;
    let mut obs = Observation::default();
    obs.set("sets", sets.len());
    obs.set("newest", newest.as_ref().map(|(n, ..)| n.clone()));
    obs.set("age_s", newest.as_ref().map(|(_, t, _)| age(*t)));
    let bytes = newest.as_ref().map(|(.., b)| *b);
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
        Some((n, t, _)) => format!(
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
    let s = opskit::walstore::survey(root).map_err(|e| e.msg)?;
    let archive = opskit::walstore::dir(root);
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
            archive.display(),
            age,
            s.missing,
            s.first_missing
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        ),
        _ => format!("no archived WAL in {}", archive.display()),
    };
    // The window adds to the archive's report; it never hides it.
    if let Err(e) = window(c, root, &mut obs) {
        obs.summary
            .push_str(&format!("; recovery window not known: {e}"));
    }
    Ok(obs)
}

/// How much slack the newest recoverable point gets beyond archive_timeout.
const WINDOW_SLACK_S: f64 = 300.0;

/// The `wal:` check's recovery window: its newest point's age and its
/// width (opskit::window), and how far the newest point is behind
/// archive_timeout + 5 min (read from the check's database, or
/// DATABASE_URL; 0 when neither answers). No verified base set: no window,
/// and the fields are null.
fn window(c: &Check, root: &Path, obs: &mut Observation) -> Result<(), String> {
    let w = opskit::window::local(root).map_err(|e| e.msg)?;
    // The newest range's end: an older range's is not the newest point.
    let newest = w.pitr.last().and_then(|r| r.to);
    let oldest = w.pitr.first().map(|r| r.from);
    let Some(newest) = newest else {
        if !w.pitr.is_empty() {
            obs.summary
                .push_str("; the newest recoverable point is not known (segments archived without their last transaction read)");
        }
        return Ok(());
    };
    let timeout = archive_timeout(c);
    let age = age(newest);
    let overdue = age - timeout.unwrap_or(0.0) - WINDOW_SLACK_S;
    obs.set("window_newest", opskit::window::show_time(newest));
    obs.set("window_oldest", oldest.map(opskit::window::show_time));
    obs.set("window_age_s", opskit::record::round_ms(age));
    obs.set(
        "window_width_s",
        oldest.map(|o| opskit::record::round_ms((newest - o).as_seconds_f64())),
    );
    obs.set("archive_timeout_s", timeout);
    obs.set(
        "window_overdue_s",
        opskit::record::round_ms(overdue.max(0.0)),
    );
    obs.summary.push_str(&format!(
        "; recovers to any time from {} to {} ({:.0} s old{})",
        oldest.map(opskit::window::show_time).unwrap_or_default(),
        opskit::window::show_time(newest),
        age,
        if timeout.is_none() {
            ", archive_timeout not read: give the check a database"
        } else {
            ""
        }
    ));
    Ok(())
}

/// The server's archive_timeout in seconds, from the check's database (or
/// DATABASE_URL), when it answers.
fn archive_timeout(c: &Check) -> Option<f64> {
    let target = c
        .database
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())?;
    let mut spec = super::pg::spec_of(&target).ok()?;
    spec.connect_timeout = c.timeout;
    spec.application_name = Some("opskit-healthcheck".into());
    let mut client = spec.connect().ok()?;
    let row = client
        .query_one(
            "SELECT setting::float8 FROM pg_settings WHERE name = 'archive_timeout'",
            &[],
        )
        .ok()?;
    Some(row.get(0))
}

pub fn migrations(c: &Check) -> Result<Observation, String> {
    let dir = Path::new(path_of(c));
    let mut spec = super::pg::spec_of(c.database.as_deref().unwrap_or("postgres:"))?;
    spec.connect_timeout = c.timeout;
    spec.application_name = Some("opskit-healthcheck".into());
    let mut client = spec.connect().map_err(|e| e.msg)?;
    let n = opskit::migrations::status(dir, &mut client).map_err(|e| e.msg)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_log_is_not_read_through_a_link_or_a_fifo() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join(opskit::backupset::VERIFIED_LOG);
        let set = "app-20261123T030005Z";
        let sets = vec![opskit::root::Set {
            name: set.to_string(),
            series: "app".into(),
            time: Utc::now(),
            path: d.path().join(set),
        }];
        assert!(read_verify_log(d.path(), &sets).unwrap().last_ok.is_none());
        let elsewhere = d.path().join("elsewhere");
        let rec = serde_json::json!({"event": "verify", "tool": "verify-backup", "ok": true,
            "set": set, "path": "/x", "depth": "structural", "failed_checks": 0,
            "checks": [], "duration_s": 0.1});
        std::fs::write(&elsewhere, format!("{rec}\n")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &log).unwrap();
        let e = read_verify_log(d.path(), &sets).err().unwrap();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(&log).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(&log)
            .status()
            .unwrap();
        assert!(st.success());
        let e = read_verify_log(d.path(), &sets).err().unwrap();
        assert!(e.contains("a FIFO"), "{e}");
        std::fs::remove_file(&log).unwrap();
        std::fs::rename(&elsewhere, &log).unwrap();
        let v = read_verify_log(d.path(), &sets).unwrap();
        assert_eq!(v.last_ok, Some(true));
        assert_eq!(v.newest.map(|(_, n)| n).as_deref(), Some(set));
    }
}
