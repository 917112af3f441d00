//! `--physical --incremental`: which set the next base set builds on, or
//! why it is a full one after all.
//!
//! The parent is the newest base set of the same series in the root whose
//! latest verdict passed, from the same cluster and timeline. What
//! `pg_basebackup --incremental` needs of it is its `backup_manifest`,
//! which every base set keeps in plain beside its tar (file names, sizes
//! and checksums of the data directory, no data): the server holds only
//! age public keys and never decrypts an earlier set to take the next.

use std::io::Write;
use std::path::{Path, PathBuf};

use opskit::backupset::{self, ChainLink, FileKind, Manifest};
use opskit::records::FallbackKind;
use opskit::{Error, IoContext, Result, physical};
use postgres::Client;

use crate::physical::Cluster;

/// The set an incremental builds on, and where its `backup_manifest` is
/// (with the sha256 its manifest lists).
pub struct Parent {
    pub name: String,
    pub chain: Vec<ChainLink>,
    pub manifest: PathBuf,
    pub sha256: String,
}

/// What the run takes: an incremental on `Parent`, or a full set (with
/// the reason when an incremental was asked for).
pub enum Plan {
    Full,
    Incremental(Parent),
    Fallback(FallbackKind, String),
}

pub struct Ask<'a> {
    pub root: &'a Path,
    pub series: &'a str,
    pub parent: Option<&'a str>,
    pub fallback_full: bool,
    /// A full set once the chain's full set is this old.
    pub full_every: Option<std::time::Duration>,
}

pub fn plan(ask: &Ask, cluster: &Cluster, client: &mut Client) -> Result<Plan> {
    if cluster.version_num < 170000 {
        let why = format!(
            "PostgreSQL {} has no incremental base backups (17 and later do)",
            cluster.version
        );
        return if ask.fallback_full {
            Ok(Plan::Fallback(FallbackKind::ServerVersion, why))
        } else {
            Err(Error::usage(format!(
                "--incremental: {why}; take full sets, or add --fallback-full"
            )))
        };
    }
    let found = match ask.parent {
        Some(name) => named(ask.root, name).map(Some)?,
        None => newest_verified(ask.root, ask.series)?,
    };
    let Some((path, m)) = found else {
        return Ok(Plan::Fallback(
            FallbackKind::NoParent,
            format!(
                "no base set of series {} under {} passed verification yet",
                ask.series,
                ask.root.display()
            ),
        ));
    };
    if let Some(why) = due_for_full(&m, ask.full_every) {
        return Ok(Plan::Fallback(FallbackKind::Scheduled, why));
    }
    match usable(&path, &m, cluster, client) {
        Ok(parent) => Ok(Plan::Incremental(parent)),
        Err((_, why)) if ask.parent.is_some() => Err(Error::failure(format!(
            "--parent {}: {why}",
            path.display()
        ))),
        Err((kind, why)) => Ok(Plan::Fallback(kind, why)),
    }
}

/// Why the chain `m` ends must stop: its full set started `full_every`
/// ago or longer.
fn due_for_full(m: &Manifest, full_every: Option<std::time::Duration>) -> Option<String> {
    let every = full_every?;
    let full = opskit::chain::needs(m)
        .into_iter()
        .next()
        .unwrap_or_else(|| m.set.clone());
    let (_, at) = backupset::parse_set_dir_name(&full)?;
    let age = (chrono::Utc::now() - at).to_std().unwrap_or_default();
    (age >= every).then(|| {
        format!(
            "the chain's full set {full} is {} old (--full-every {})",
            opskit::units::format_duration(age),
            opskit::units::format_duration(every)
        )
    })
}

fn named(root: &Path, name: &str) -> Result<(PathBuf, Manifest)> {
    let path = opskit::root::named(root, name);
    if path.parent().map(|p| p.canonicalize().ok()) != Some(root.canonicalize().ok()) {
        return Err(Error::usage(format!(
            "--parent {}: an incremental's parent must be a set of the same root ({})",
            path.display(),
            root.display()
        )));
    }
    let (m, _) = backupset::read_manifest(&path)?;
    Ok((path, m))
}

/// The newest base set of `series` whose latest verdict passed, by the
/// rule every tool uses (`opskit::verdicts::newest_passed`).
fn newest_verified(root: &Path, series: &str) -> Result<Option<(PathBuf, Manifest)>> {
    let sets = opskit::root::sets(root)?;
    let verdicts = opskit::verdicts::VerdictLog::local(root).latest()?;
    let base = |s: &opskit::root::Set| {
        s.series == series && s.manifest().is_ok_and(|m| m.physical.is_some())
    };
    match opskit::verdicts::newest_passed(&sets, &verdicts, base) {
        Some(s) => Ok(Some((s.path.clone(), s.manifest()?))),
        None => Ok(None),
    }
}

/// Why `m` cannot be built on, or its [`Parent`].
fn usable(
    path: &Path,
    m: &Manifest,
    cluster: &Cluster,
    client: &mut Client,
) -> std::result::Result<Parent, (FallbackKind, String)> {
    use FallbackKind as K;
    let name = m.set.clone();
    let info = m.physical.as_ref().ok_or_else(|| {
        (
            K::ParentUnusable,
            format!("{name} is a dump, not a base set"),
        )
    })?;
    if info.system_identifier != cluster.system_identifier {
        return Err((
            K::ParentUnusable,
            format!(
                "{name} is of another cluster (system identifier {}, this one {})",
                info.system_identifier, cluster.system_identifier
            ),
        ));
    }
    if info.timeline != cluster.timeline {
        return Err((
            K::Timeline,
            format!(
                "{name} is on timeline {}, the server on {} (a promotion since): a new chain starts",
                info.timeline, cluster.timeline
            ),
        ));
    }
    if cluster.summarize_wal != Some(true) {
        return Err((K::SummarizeWalOff,
            "summarize_wal is off on the server: incremental base backups need WAL summaries (ALTER SYSTEM SET summarize_wal = on)".into(),
        ));
    }
    let start = physical::parse_lsn(&info.start_lsn).unwrap_or(u64::MAX);
    // Unreadable (a role without pg_monitor's rights): pg_basebackup
    // finds out, and the run takes a full set then (physical::run).
    if let Ok(oldest) = oldest_summary(client, info.timeline)
        && oldest.is_none_or(|o| o > start)
    {
        return Err((
            K::SummariesGone,
            format!(
                "the server's WAL summaries no longer reach back to {name}'s start ({}; wal_summary_keep_time)",
                info.start_lsn
            ),
        ));
    }
    let root = path.parent().unwrap_or(Path::new("."));
    if let Some(gone) = opskit::chain::needs(m)
        .into_iter()
        .find(|a| !root.join(a).join(backupset::MANIFEST).is_file())
    {
        return Err((
            K::ParentUnusable,
            format!(
                "{name}'s ancestor {gone} is gone from {}: a new chain starts",
                root.display()
            ),
        ));
    }
    let Some(f) = m.files.iter().find(|f| f.kind == FileKind::BackupManifest) else {
        return Err((
            K::ParentUnusable,
            format!("{name} has no backup_manifest beside its tar (taken before incremental sets)"),
        ));
    };
    let mut chain = info
        .incremental
        .as_ref()
        .map(|i| i.chain.clone())
        .unwrap_or_default();
    chain.push(info.link(&name));
    Ok(Parent {
        name,
        chain,
        manifest: path.join(&f.name),
        sha256: f.sha256.clone(),
    })
}

/// The oldest LSN the server's WAL summaries cover on `timeline`.
fn oldest_summary(client: &mut Client, timeline: u32) -> std::result::Result<Option<u64>, String> {
    let row = client
        .query_one(
            "SELECT min(start_lsn)::text FROM pg_available_wal_summaries() WHERE tli = $1",
            &[&i64::from(timeline)],
        )
        .map_err(|e| {
            log::debug!("cannot read the WAL summaries: {e}");
            format!("reading the WAL summaries: {e}")
        })?;
    Ok(row
        .get::<_, Option<String>>(0)
        .and_then(|l| physical::parse_lsn(&l)))
}

impl Parent {
    /// Copy its backup_manifest to `dest` (a new file), whose sha256 must
    /// be the one its (signed, verified) manifest lists.
    pub fn copy_manifest(&self, dest: &Path) -> Result<()> {
        let src = &self.manifest;
        let f = opskit::safefs::open_nofollow(src, std::fs::OpenOptions::new().read(true))?;
        let mut h = opskit::gz::HashedReader::new(opskit::codec::AtMost::new(
            f,
            opskit::physical::MAX_BACKUP_MANIFEST,
            "the parent's backup_manifest",
        ));
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dest)
            .at("creating", dest)?;
        std::io::copy(&mut h, &mut out).at("copying", src)?;
        out.flush().at("writing", dest)?;
        let (_, got) = h.finish().at("reading", src)?;
        if got != self.sha256 {
            return Err(Error::check(format!(
                "{}: sha256 {got} is not its manifest's {}; take a full set (without --incremental)",
                src.display(),
                self.sha256
            )));
        }
        Ok(())
    }
}
