//! `offsite push-wal`: the WAL archive of the backup root
//! (`ROOT/wal/<timeline>/`) copied to `PREFIX/wal/<timeline>/` as it grows.
//! Each archived file goes up as it is stored (compressed, encrypted), its
//! `.sha256` checksum file last, so a remote WAL file without its checksum
//! file is not there, exactly as locally. One listing per run finds what is
//! missing; a timer runs it every minute. Remote WAL no kept remote base set
//! needs is deleted by `offsite prune` ([`prune_remote`]).

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args as ClapArgs;
use opskit::backupset::Manifest;
use opskit::record::Fields;
use opskit::records::{OffsiteCounts, Prune, PruneAction, Push};
use opskit::walstore::{self, SIDECAR};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result};
use opskit_s3::Store;

use crate::upload::Upload;

#[derive(Debug, ClapArgs)]
pub struct PushWalArgs {
    /// s3://BUCKET[/PREFIX] (default: --url, OPSKIT_OFFSITE_URL).
    #[arg(value_name = "URL")]
    pub bucket: Option<String>,

    /// The root whose wal/ walarchive fills, when point-in-time recovery
    /// has a root of its own (default: --root, OPSKIT_BACKUP_ROOT).
    #[arg(long, value_name = "DIR", env = "OPSKIT_PITR_ROOT")]
    pub wal_root: Option<PathBuf>,

    /// Also push a WAL archive that is not encrypted.
    #[arg(long)]
    pub allow_unencrypted: bool,

    /// Object Lock for the uploaded objects, as for sets (COMPLIANCE).
    #[arg(long, value_name = "N")]
    pub retain_days: Option<u32>,

    /// Where push-wal keeps the newest file it confirmed in the bucket
    /// (systemd's StateDirectory= sets it). With it, a checksum file found
    /// in the bucket for a newer file is compared with the local one, not
    /// taken for the upload: a forged one fails the push, named.
    #[arg(long, value_name = "DIR", env = "STATE_DIRECTORY")]
    pub state_dir: Option<PathBuf>,
}

pub fn push(args: &crate::Args, p: &PushWalArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let start = Instant::now();
    let root = p.wal_root.clone().or_else(|| args.root.clone()).ok_or_else(|| {
        Error::usage(
            "push-wal needs the root of the WAL archive: --wal-root (OPSKIT_PITR_ROOT) or --root (OPSKIT_BACKUP_ROOT)",
        )
    })?;
    let store = args.store(p.bucket.as_deref())?;
    let local = walstore::archived_wal(&root)?;
    let remote: HashMap<String, u64> = store
        .list(&store.remote.key(walstore::WAL_DIR, ""), None)?
        .0
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let lock = p.retain_days.map(opskit_s3::retain_until);
    let mut rec = Push {
        extra: Fields::new(),
        ok: true,
        set: walstore::WAL_DIR.into(),
        path: walstore::dir(&root).display().to_string(),
        url: store.remote.url(&format!("{}/", walstore::WAL_DIR)),
        encrypted: true,
        uploaded: 0,
        skipped: 0,
        bytes: 0,
        error: None,
        duration_s: 0.0,
    };
    let mut marks = crate::walmark::Marks::load(p.state_dir.as_deref())?;
    let mut result = Ok(());
    for w in &local {
        let files = w.files();
        let sidecar_key = key_of(&store, w, &files[0]);
        let tli = tli_of(w);
        if remote.contains_key(&sidecar_key) {
            let checked = match marks.known(&rec.url, &tli, &w.name) {
                crate::walmark::Known::Unchecked => same_sidecar(&store, &sidecar_key, &files[0]),
                _ => Ok(()),
            };
            if let Err(e) = checked {
                result = Err(e);
                break;
            }
            marks.confirm(&rec.url, &tli, &w.name);
            rec.skipped += 1;
            continue;
        }
        if files[1..]
            .iter()
            .any(|f| !f.to_string_lossy().ends_with(opskit::crypt::EXT))
        {
            rec.encrypted = false;
            if !p.allow_unencrypted {
                result = Err(Error::failure(format!(
                    "{}: the WAL archive is not encrypted (walarchive push --encrypt-to); pass --allow-unencrypted to push it anyway",
                    w.dir.join(&w.name).display()
                )));
                break;
            }
        }
        // The stored file(s), then the checksum file that makes it archived.
        let mut order = files[1..].to_vec();
        order.push(files[0].clone());
        if let Err(e) = upload_all(&store, w, &order, lock.as_deref(), &mut rec) {
            result = Err(e);
            break;
        }
        marks.confirm(&rec.url, &tli, &w.name);
    }
    // What was confirmed, also by a run that failed: files go in order, and
    // a failure stops the run, so nothing past it is confirmed.
    if let Err(e) = marks.save() {
        result = result.and(Err(e));
    }
    rec.duration_s = opskit::record::secs(start.elapsed());
    let exit = match &result {
        Ok(()) => Exit::Ok,
        Err(e) => {
            rec.ok = false;
            rec.error = Some(e.msg.clone());
            log::error!("{}", e.msg);
            Exit::Failure
        }
    };
    em.emit(&rec)?;
    let counts = OffsiteCounts {
        sets: 1,
        done: u64::from(rec.ok),
        failed: u64::from(!rec.ok),
        bytes: rec.bytes,
    };
    Ok(Done::new(exit, counts))
}

/// The timeline directory's name of `w`.
fn tli_of(w: &walstore::ArchivedWal) -> String {
    w.dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The checksum file at `key` in the bucket is `local`'s, byte for byte
/// (its signature included), or the push fails naming it.
fn same_sidecar(store: &Store, key: &str, local: &std::path::Path) -> Result<()> {
    const MAX: u64 = 1 << 20;
    let url = format!("s3://{}/{key}", store.remote.bucket);
    let here = opskit::safefs::read_regular(local, MAX)?;
    let (_, body) = store.get(key)?;
    let there = opskit::safefs::read_bounded(body, std::path::Path::new(&url), MAX)?;
    if there == here {
        return Ok(());
    }
    Err(Error::failure(format!(
        "{url} is not the checksum file this server archived (someone with the bucket's keys wrote it, or another server archives into this prefix): it is not overwritten, and the WAL from {} on is not pushed until it is removed",
        local.display()
    )))
}

/// `PREFIX/wal/<timeline>/<file>`.
fn key_of(store: &Store, w: &walstore::ArchivedWal, file: &std::path::Path) -> String {
    let tli = tli_of(w);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    store
        .remote
        .key(walstore::WAL_DIR, &format!("{tli}/{name}"))
}

fn upload_all(
    store: &Store,
    w: &walstore::ArchivedWal,
    files: &[PathBuf],
    lock: Option<&str>,
    rec: &mut Push,
) -> Result<()> {
    for f in files {
        // Sent as read: the checksum file with its signature, byte for byte.
        let mut bytes = Vec::new();
        opskit::safefs::open_nofollow(f, std::fs::OpenOptions::new().read(true))?
            .read_to_end(&mut bytes)
            .at("reading", f)?;
        let sha = opskit::gz::sha256_hex(&bytes);
        let key = key_of(store, w, f);
        let up = Upload {
            store,
            key: &key,
            path: f,
            data: Some(&bytes),
            size: bytes.len() as u64,
            sha: &sha,
            lock,
            jobs: 1,
            progress: &Default::default(),
        };
        if up.run()? {
            rec.uploaded += 1;
            rec.bytes += bytes.len() as u64;
        }
    }
    Ok(())
}

/// After `offsite prune` decided the remote sets: delete the remote WAL
/// older than the start of the oldest kept remote base set (checksum file
/// first), never a history file, nothing when no base set is kept.
pub fn prune_remote(
    store: &Store,
    kept: &[&Result<Manifest>],
    dry_run: bool,
    em: &mut Emitter,
) -> Result<u64> {
    // Every kept set's manifest, or no WAL is deleted: a base set whose
    // manifest cannot be read may still need any of it.
    let mut manifests = Vec::new();
    for read in kept {
        match read {
            Ok(m) => manifests.push(m),
            Err(e) => {
                log::warn!("{}; the remote WAL is left whole", e.msg);
                return Ok(0);
            }
        }
    }
    let oldest = walstore::oldest_start(manifests);
    let Some((first, start_wal, seg_size)) = oldest else {
        return Ok(0);
    };
    let prefix = store.remote.key(walstore::WAL_DIR, "");
    let (objects, _) = store.list(&prefix, None)?;
    let mut doomed: Vec<(String, u64)> = objects
        .into_iter()
        .filter(|o| {
            let name = o.key.rsplit('/').next().unwrap_or("");
            walstore::wal_before(name, first, seg_size)
        })
        .map(|o| (o.key, o.size))
        .collect();
    if doomed.is_empty() {
        return Ok(0);
    }
    // Checksum files first.
    doomed.sort_by_key(|(k, _)| !k.ends_with(SIDECAR));
    let mut bytes = 0;
    let mut error = None;
    if !dry_run {
        for (k, size) in &doomed {
            match store.delete(k) {
                Ok(()) => bytes += size,
                Err(e) => {
                    error = Some(e.msg);
                    break;
                }
            }
        }
    }
    let files = doomed.iter().filter(|(k, _)| k.ends_with(SIDECAR)).count();
    em.emit(&Prune {
        path: store.remote.url(&format!("{}/", walstore::WAL_DIR)),
        name: walstore::WAL_DIR.into(),
        created_at: None,
        action: PruneAction::Delete,
        reasons: None,
        detail: Some(format!(
            "{files} archived WAL files before {start_wal}, where the oldest kept base set starts"
        )),
        verified: None,
        verified_depth: None,
        bytes: (!dry_run).then_some(bytes),
        deleted: Some(!dry_run && error.is_none()),
        error: error.clone(),
    })?;
    match error {
        Some(e) => Err(Error::failure(e)),
        None => Ok(bytes),
    }
}
