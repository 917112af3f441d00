//! logrotate checks a block's `olddir` when it reads the block: for each
//! log its patterns match now, the old directory (absolute, or relative to
//! the log's directory) must exist unless `createolddir` is set. A missing
//! one is an error at the block's `}` that drops the block and the rest of
//! its file, before any log of it is recorded in the state.

use std::path::{Path, PathBuf};

use super::Opts;

/// The first missing old directory of a block, if any.
pub(super) fn missing(patterns: &[String], o: &Opts) -> Option<PathBuf> {
    let dir = o.olddir.as_deref()?;
    if o.createolddir.is_some() {
        return None;
    }
    patterns
        .iter()
        .flat_map(|p| matching(p))
        .filter_map(|log| log.parent().map(|d| d.join(dir)))
        .find(|old| !old.is_dir())
}

/// The files a pattern matches now (a plain path: itself, if it is there).
fn matching(pattern: &str) -> Vec<PathBuf> {
    if pattern.contains(['*', '?', '[']) {
        glob::glob(pattern)
            .map(|g| g.flatten().collect())
            .unwrap_or_default()
    } else {
        let p = Path::new(pattern);
        if p.symlink_metadata().is_ok() {
            vec![p.to_path_buf()]
        } else {
            vec![]
        }
    }
}
