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
use opskit::{Done, Emitter, Error, Exit, IoContext, Result, pgtools};

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
    /// Who may have signed the base set and the WAL.
    pub trust: &'a opskit::sign::Trust,
}

pub fn restore(req: &Request, em: &mut Emitter) -> Result<Done<WalCounts>> {
    let start = Instant::now();
    if req.pgdata.exists() {
        return Err(Error::usage(format!(
            "--pgdata {} already exists: recovery writes a new data directory, never over one",
            req.pgdata.display()
        )));
    }
    let (set, _) = choose(req)?;
    let m = trusted_base(req, &set)?;
    let info = m.physical.as_ref().expect("checked by trusted_base");
    let major = pgtools::major_of_num(info.server_version_num);
    let verify = pgtools::find_exact(
        "pg_verifybackup",
        major,
        &info.server_version,
        req.bindir,
        "postgresql-client",
    )?;
    let chain = opskit::chain::resolve(&set, &m, req.trust)
        .map_err(|e| Error::failure(format!("{e}; nothing was written")))?;
    let stop = stop_setting(req, info)?;
    log::info!(
        "unpacking {} into {}",
        opskit::chain::names(&chain).join(" + "),
        req.pgdata.display()
    );
    let files = match opskit::chain::materialize(&chain, req.ids, req.pgdata, req.bindir, &verify) {
        Ok(n) => n,
        Err(opskit::chain::Failed::Unpack(e)) => return Err(e),
        Err(opskit::chain::Failed::Verify(e)) => {
            return Err(Error::check(format!(
                "{}: {e}; the data directory was removed",
                set.display()
            )));
        }
    };
    let mut settings = vec![
        ("restore_command", fetch_command(req)?),
        ("recovery_target_action", "promote".to_string()),
        ("recovery_target_timeline", "latest".to_string()),
    ];
    settings.extend(stop);
    if let Err(e) = opskit::recovery::write_recovery(req.pgdata, &info.superuser, &settings) {
        let _ = std::fs::remove_dir_all(req.pgdata);
        return Err(e);
    }
    // On the command line only: the set's postgresql.conf could name
    // another data directory (production's) or a pid file anywhere.
    let pgdata = req.pgdata.canonicalize().at("resolving", req.pgdata)?;
    // The primary's max_connections and the like, as its control file has
    // them (forced, not raised to): the set's own configuration may have
    // stayed on its machine.
    let mut ours = read_control(req.pgdata, major, &info.server_version, req.bindir)
        .unwrap_or_else(|e| {
            log::warn!(
                "{}; the copy starts with the set's own max_connections and the like",
                e.msg
            );
            Vec::new()
        });
    ours.extend(settings.iter().cloned());
    ours.push(("data_directory", pgdata.display().to_string()));
    ours.push((
        "external_pid_file",
        pgdata.join("external.pid").display().to_string(),
    ));
    let forced = opskit::recovery::forced_settings(major, &ours);
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
        start_options: opskit::recovery::pg_ctl_options(&forced),
        session_options: opskit::recovery::session_options(major),
        overrides: forced.into_iter().collect(),
        files,
        duration_s: opskit::record::secs(start.elapsed()),
    })?;
    let bytes = m.bytes();
    Ok(Done::new(Exit::Ok, WalCounts { files: 1, bytes }))
}

/// The setting that stops recovery at the target. A time after the newest
/// point the archive reaches from this set is refused: PostgreSQL would
/// replay everything, then fail ("recovery ended before configured
/// recovery target was reached"), and the WAL written since may hold the
/// very transactions the operator wants to leave out or keep. That newest
/// point itself is the last archived transaction: recovery to a time stops
/// only before a later one, which the archive does not hold, so it stops
/// after that record's position instead.
/// `walarchive control-settings`: the settings of `pgdata`'s control file
/// a recovering copy needs at least ([`opskit::recovery::control_settings`]),
/// read with the `pg_controldata` of its major version.
pub fn control(pgdata: &Path, bindir: Option<&Path>, em: &mut Emitter) -> Result<Done<WalCounts>> {
    let file = pgdata.join("PG_VERSION");
    let version = String::from_utf8_lossy(&opskit::safefs::read_regular(&file, 64)?)
        .trim()
        .to_string();
    let major: u32 = version.parse().map_err(|_| {
        Error::failure(format!(
            "{}: {version:?} is not a PostgreSQL major version",
            file.display()
        ))
    })?;
    let found = read_control(pgdata, major, &version, bindir)?;
    if found.is_empty() {
        return Err(Error::failure(format!(
            "pg_controldata -D {} gave none of max_connections and the like",
            pgdata.display()
        )));
    }
    em.emit(&opskit::records::ControlSettings {
        pgdata: pgdata.display().to_string(),
        settings: found
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect(),
        options: found
            .iter()
            .map(|(k, v)| format!("-c {k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    })?;
    Ok(Done::new(Exit::Ok, WalCounts { files: 0, bytes: 0 }))
}

/// The settings of `pgdata`'s control file a recovery needs at least
/// ([`opskit::recovery::control_settings`]), read with the `pg_controldata`
/// of PostgreSQL `major` (`version` names it in the error when missing).
fn read_control(
    pgdata: &Path,
    major: u32,
    version: &str,
    bindir: Option<&Path>,
) -> Result<Vec<(&'static str, String)>> {
    let tool = pgtools::find_exact("pg_controldata", major, version, bindir, "postgresql")?;
    Ok(opskit::recovery::control_settings(&tool.path, pgdata))
}

fn stop_setting(
    req: &Request,
    info: &opskit::backupset::PhysicalInfo,
) -> Result<Option<(&'static str, String)>> {
    let t = match &req.target {
        Target::Time(t) => *t,
        Target::Immediate => return Ok(Some(("recovery_target", "immediate".into()))),
        Target::Latest => return Ok(None),
    };
    let time = Some((
        "recovery_target_time",
        t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
    ));
    let reach = opskit::window::newest(&opskit::window::LocalWal(req.root), info)?;
    log::info!(
        "the archive reaches {} ({}), the last transaction archived",
        reach
            .time
            .map(opskit::window::show_time)
            .unwrap_or("an unrecorded time".into()),
        reach
            .xact_segment
            .as_deref()
            .or(reach.segment.as_deref())
            .unwrap_or("no segment")
    );
    let (Some(newest), Some(lsn), Some(seg), Some(side)) =
        (reach.time, reach.lsn, &reach.xact_segment, &reach.sidecar)
    else {
        return Ok(time);
    };
    // That time decides what is refused and where recovery stops: it is
    // used only when the checksum file it was read from is signed by a
    // trusted key, as every file recovery fetches must be.
    if let Err(e) = side.check(seg, req.trust) {
        return Err(Error::failure(format!(
            "the checksum file of {seg}, which records the archive's last transaction: {e}; nothing was written"
        )));
    }
    if t > newest {
        return Err(Error::failure(format!(
            "the archive ends before {}: its newest recoverable point is {}, the last transaction archived (in {}); WAL written since is not archived yet (SELECT pg_switch_wal() on the server archives it, or recover --to-latest). Recover to {} or earlier; nothing was written",
            opskit::window::show_time(t),
            opskit::window::show_time(newest),
            reach.segment.as_deref().unwrap_or("?"),
            opskit::window::show_time(newest),
        )));
    }
    if t == newest {
        log::info!(
            "{} is the last transaction archived: recovery stops after its record at {}",
            opskit::window::show_time(t),
            opskit::physical::format_lsn(lsn)
        );
        return Ok(Some((
            "recovery_target_lsn",
            opskit::physical::format_lsn(lsn),
        )));
    }
    Ok(time)
}

/// The chosen set's manifest, once its signature is checked (nothing from
/// the set is used before), it holds a base backup and the identity given
/// opens it.
fn trusted_base(req: &Request, set: &Path) -> Result<backupset::Manifest> {
    let m = backupset::load_trusted(set, req.trust)
        .map_err(|e| Error::failure(format!("{}: {}; nothing was written", set.display(), e.msg)))?
        .manifest;
    if m.physical.is_none() {
        return Err(Error::failure(format!(
            "{}: its signed manifest holds no base backup (it changed since it was chosen); nothing was written",
            set.display()
        )));
    }
    if m.encryption.is_some() && req.ids.is_none() {
        return Err(Error::usage(format!(
            "{} is encrypted: give its identity (--identity FILE or OPSKIT_AGE_IDENTITY)",
            set.display()
        )));
    }
    if let (Some(ids), Some(enc)) = (req.ids, &m.encryption) {
        ids.check_matches(&enc.recipients, &set.display().to_string())?;
    }
    Ok(m)
}

/// The restore_command: this walarchive, this root, and the identity for
/// an encrypted archive.
fn fetch_command(req: &Request) -> Result<String> {
    let me = std::env::current_exe().map_err(|e| Error::failure(format!("own path: {e}")))?;
    let root = req.root.canonicalize().at("resolving", req.root)?;
    // PostgreSQL runs it with `sh -c` after expanding `%`: every path is
    // quoted for the shell and its `%` doubled.
    let q = |p: &Path| opskit::sys::shell_quote(&p.display().to_string().replace('%', "%%"));
    let mut cmd = format!(
        "{} fetch %f %p --root {} {}",
        q(&me),
        q(&root),
        req.trust.child_args().replace('%', "%%")
    );
    if let Some(ids) = req.ids {
        let p = ids.path().canonicalize().at("resolving", ids.path())?;
        cmd.push_str(&format!(" --identity {}", q(&p)));
    }
    Ok(cmd)
}

/// The base set to start from: the one named, or the newest base set that
/// passed verification and ended before the target time.
fn choose(req: &Request) -> Result<(PathBuf, Manifest)> {
    if let Some(name) = req.set {
        let path = opskit::root::named(req.root, name);
        let (m, _) = backupset::read_manifest(&path)?;
        if m.physical.is_none() {
            return Err(Error::usage(format!(
                "{} is a dump, not a base set (pgbackup --physical)",
                path.display()
            )));
        }
        return Ok((path, m));
    }
    // The root's sets and each one's latest verdict, read as every tool
    // reads them (opskit::root, opskit::verdicts).
    let verdicts = opskit::verdicts::VerdictLog::local(req.root).passed()?;
    let mut bases = Vec::new();
    for s in opskit::root::sets(req.root)? {
        if let Ok(m) = s.manifest()
            && m.physical.is_some()
        {
            bases.push((s.path, m, verdicts.get(&s.name).copied()));
        }
    }
    // Newest first; the same end time: by name, as everywhere.
    bases.sort_by(|(pa, ma, _), (pb, mb, _)| (mb.finished_at, pb).cmp(&(ma.finished_at, pa)));
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
    let restorable = |p: &Path, m: &Manifest| match opskit::chain::resolve(p, m, req.trust) {
        Ok(_) => true,
        Err(e) => {
            log::warn!("passing over {}: {e}", p.display());
            false
        }
    };
    let pick = bases
        .into_iter()
        .filter(|(_, m, _)| before(m))
        .find(|(p, m, ok)| *ok == Some(true) && restorable(p, m));
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
