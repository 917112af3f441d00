//! WAL retention: once the sets are decided, archived WAL older than the
//! start segment of the oldest base set that is kept goes, and nothing a
//! kept base set needs: every segment from its start on stays, on every
//! timeline, and timeline history files always stay. A root without a kept
//! base set keeps all its WAL (nothing says what is safe to delete).

use std::path::{Path, PathBuf};

use opskit::backupset;
use opskit::records::{Prune, PruneAction};
use opskit::walstore::{self, ArchivedWal};
use opskit::{Emitter, Result};

/// The first segment the kept base sets need: (its number, its name, the
/// segment size).
fn oldest_start(kept: &[PathBuf]) -> Option<(u64, String, u64)> {
    // Every kept set's manifest, or no WAL is deleted: a base set whose
    // manifest cannot be read may still need any of it.
    let mut manifests = Vec::new();
    for set in kept {
        match backupset::read_manifest(set) {
            Ok((m, _)) => manifests.push(m),
            Err(e) => {
                log::warn!("{}; the WAL archive is left whole", e.msg);
                return None;
            }
        }
    }
    walstore::oldest_start(&manifests)
}

/// Delete (unless `held`) the WAL no kept base set needs and report it in
/// one `prune` record; the bytes freed.
pub fn prune(root: &Path, kept: &[PathBuf], held: bool, em: &mut Emitter) -> Result<u64> {
    let archived = walstore::archived_wal(root)?;
    if archived.is_empty() {
        return Ok(0);
    }
    let Some((first, name, seg_size)) = oldest_start(kept) else {
        log::info!("no base set is kept (or one could not be read): the WAL archive is left whole");
        return Ok(0);
    };
    let doomed: Vec<&ArchivedWal> = archived
        .iter()
        .filter(|w| walstore::wal_before(&w.name, first, seg_size))
        .collect();
    if doomed.is_empty() {
        return Ok(0);
    }
    let (mut bytes, mut error) = (0u64, None);
    if !held {
        for w in &doomed {
            // The checksum file first: a half-deleted file is "not archived".
            for f in w.files() {
                let size = f.symlink_metadata().map(|m| m.len()).unwrap_or(0);
                match std::fs::remove_file(&f) {
                    Ok(()) => bytes += size,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        error.get_or_insert_with(|| opskit::exit::describe_io("deleting", &f, &e));
                    }
                }
            }
        }
    }
    let detail = format!(
        "{} archived WAL files before {name}, where the oldest base set kept starts",
        doomed.len()
    );
    log::info!(
        "{}{detail}",
        if held { "would delete " } else { "deleted " }
    );
    em.emit(&Prune {
        path: walstore::dir(root).display().to_string(),
        name: walstore::WAL_DIR.into(),
        created_at: None,
        action: PruneAction::Delete,
        reasons: None,
        detail: Some(detail),
        verified: None,
        verified_depth: None,
        bytes: (!held).then_some(bytes),
        deleted: Some(!held && error.is_none()),
        error: error.clone(),
    })?;
    match error {
        Some(e) => Err(opskit::Error::failure(e)),
        None => Ok(bytes),
    }
}
