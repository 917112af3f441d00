//! `walarchive restore`: prepare a new data directory for point-in-time
//! recovery: the newest verified base set that ended before the target,
//! unpacked (sha256 checked) and passed by `pg_verifybackup`, then
//! `recovery.signal` and the settings that make PostgreSQL fetch WAL from
//! this archive, stop at the target and promote. Starting the cluster, the
//! health gate and the swap are restore-system.sh's.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, NaiveDateTime, Utc};
use opskit::backupset::{self, Manifest};
use opskit::crypt::Identities;
use opskit::records::{Recovery, WalCounts};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result, pgtools, physical};

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Time(DateTime<Utc>),
    Latest,
    Immediate,
}

/// `2026-12-04T14:03:00Z`, `2026-12-04 14:03:00+01:00`, or without a zone
/// (UTC): the recovery target time.
pub fn parse_time(s: &str) -> std::result::Result<DateTime<Utc>, String> {
    let t = s.trim().replacen(' ', "T", 1);
    if let Ok(d) = DateTime::parse_from_rfc3339(&t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(&t, f) {
            return Ok(n.and_utc());
        }
    }
    Err(format!(
        "'{s}' is not a time (use 2026-12-04T14:03:00Z, or 2026-12-04 14:03:00 for UTC)"
    ))
}

/// What `restore` needs.
pub struct Request<'a> {
    pub root: &'a Path,
    pub target: Target,
    pub pgdata: &'a Path,
    pub set: Option<&'a str>,
    pub ids: Option<&'a Identities>,
    pub bindir: Option<&'a Path>,
}

pub fn restore(req: &Request, em: &mut Emitter) -> Result<Done<WalCounts>> {
    let start = Instant::now();
    if req.pgdata.exists() {
        return Err(Error::usage(format!(
            "--pgdata {} already exists: recovery writes a new data directory, never over one",
            req.pgdata.display()
        )));
    }
    let (set, m) = choose(req)?;
    let info = m.physical.as_ref().expect("chosen sets are base sets");
    if m.encryption.is_some() && req.ids.is_none() {
        return Err(Error::usage(format!(
            "{} is encrypted: give its identity (--identity FILE or OPSKIT_AGE_IDENTITY)",
            set.display()
        )));
    }
    if let (Some(ids), Some(enc)) = (req.ids, &m.encryption) {
        ids.check_matches(&enc.recipients, &set.display().to_string())?;
    }
    let major = pgtools::major_of_num(info.server_version_num);
    let verify = pgtools::find("pg_verifybackup", major, &info.server_version, req.bindir)?;
    log::info!("unpacking {} into {}", set.display(), req.pgdata.display());
    let files = physical::unpack(&set, &m, req.ids, req.pgdata)?;
    if let Err(e) = physical::pg_verifybackup(&verify, req.pgdata) {
        let _ = std::fs::remove_dir_all(req.pgdata);
        return Err(Error::check(format!(
            "{}: {e}; the data directory was removed",
            set.display()
        )));
    }
    let mut settings = vec![
        ("restore_command", fetch_command(req)?),
        ("recovery_target_action", "promote".to_string()),
        ("recovery_target_timeline", "latest".to_string()),
    ];
    match &req.target {
        Target::Time(t) => {
            settings.push((
                "recovery_target_time",
                t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            ));
        }
        Target::Immediate => settings.push(("recovery_target", "immediate".to_string())),
        Target::Latest => {}
    }
    if let Err(e) = physical::write_recovery(req.pgdata, &settings) {
        let _ = std::fs::remove_dir_all(req.pgdata);
        return Err(e);
    }
    let (target, target_time) = match req.target {
        Target::Time(t) => ("time", Some(t)),
        Target::Latest => ("latest", None),
        Target::Immediate => ("immediate", None),
    };
    em.emit(&Recovery {
        ok: true,
        set: m.set.clone(),
        base_finished_at: m.finished_at,
        pgdata: req.pgdata.display().to_string(),
        target: target.into(),
        target_time,
        superuser: info.superuser.clone(),
        files,
        duration_s: opskit::record::secs(start.elapsed()),
    })?;
    let bytes = m.files.iter().map(|f| f.bytes).sum();
    Ok(Done::new(Exit::Ok, WalCounts { files: 1, bytes }))
}

/// The restore_command: this walarchive, this root, and the identity for
/// an encrypted archive.
fn fetch_command(req: &Request) -> Result<String> {
    let me = std::env::current_exe().map_err(|e| Error::failure(format!("own path: {e}")))?;
    let root = req.root.canonicalize().at("resolving", req.root)?;
    let mut cmd = format!("{} fetch %f %p --root {}", me.display(), root.display());
    if let Some(ids) = req.ids {
        let p = ids.path().canonicalize().at("resolving", ids.path())?;
        cmd.push_str(&format!(" --identity {}", p.display()));
    }
    Ok(cmd)
}

/// The base set to start from: the one named, or the newest base set that
/// passed verification and ended before the target time.
fn choose(req: &Request) -> Result<(PathBuf, Manifest)> {
    if let Some(name) = req.set {
        let path = if name.contains('/') {
            PathBuf::from(name)
        } else {
            req.root.join(name)
        };
        let (m, _) = backupset::read_manifest(&path)?;
        if m.physical.is_none() {
            return Err(Error::usage(format!(
                "{} is a dump, not a base set (pgbackup --physical)",
                path.display()
            )));
        }
        return Ok((path, m));
    }
    let verdicts = backupset::latest_verdicts(req.root)?;
    let mut bases = Vec::new();
    for e in std::fs::read_dir(req.root)
        .at("listing", req.root)?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if backupset::parse_set_dir_name(&name).is_none() {
            continue;
        }
        if let Ok((m, _)) = backupset::read_manifest(&e.path())
            && m.physical.is_some()
        {
            bases.push((e.path(), m, verdicts.get(&name).copied()));
        }
    }
    bases.sort_by_key(|(_, m, _)| std::cmp::Reverse(m.finished_at));
    if bases.is_empty() {
        return Err(Error::failure(format!(
            "no base set under {} (make one with pgbackup --physical)",
            req.root.display()
        )));
    }
    let before = |m: &Manifest| match req.target {
        Target::Time(t) => m.finished_at < t,
        _ => true,
    };
    let oldest = bases.last().map(|(_, m, _)| m.finished_at);
    let pick = bases
        .into_iter()
        .filter(|(_, m, _)| before(m))
        .find(|(_, _, ok)| *ok == Some(true));
    match pick {
        Some((p, m, _)) => {
            log::info!(
                "starting from {} (verified; ended {})",
                p.display(),
                m.finished_at
            );
            Ok((p, m))
        }
        None => Err(Error::failure(match (&req.target, oldest) {
            (Target::Time(t), Some(o)) if o >= *t => format!(
                "no base set ended before {t}: the oldest ended at {o}; a base backup cannot be recovered to a time before it ended"
            ),
            _ => format!(
                "no base set under {} passed verification{} (verify-backup --record; or name one with --set)",
                req.root.display(),
                match &req.target {
                    Target::Time(t) => format!(" and ended before {t}"),
                    _ => String::new(),
                }
            ),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_times() {
        let utc = |s| parse_time(s).unwrap().to_rfc3339();
        assert_eq!(utc("2026-12-04T14:03:00Z"), "2026-12-04T14:03:00+00:00");
        assert_eq!(utc("2026-12-04 14:03:00"), "2026-12-04T14:03:00+00:00");
        assert_eq!(
            utc("2026-12-04 15:03:00+01:00"),
            "2026-12-04T14:03:00+00:00"
        );
        assert_eq!(
            utc("2026-12-04 14:03:00.250"),
            "2026-12-04T14:03:00.250+00:00"
        );
        assert!(parse_time("yesterday").unwrap_err().contains("'yesterday'"));
    }
}
