//! What logrotate checks when it reads a block, for each log its patterns
//! match now. An error at the block's `}` drops the block and the rest of
//! its file, before any log of it is recorded in the state:
//!
//! * the old directory (absolute, or relative to the log's directory) must
//!   exist unless `createolddir` is set;
//! * a log an earlier block has is a "duplicate log entry", unless that
//!   block had `ignoreduplicates`: then this block leaves the log out.

use std::collections::HashMap;
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

/// Claim a block's logs: the ones to leave out of it, or the duplicate
/// error.
pub(super) fn claim(
    patterns: &[String],
    o: &Opts,
    claimed: &mut HashMap<PathBuf, bool>,
) -> Result<Vec<PathBuf>, String> {
    let mut exclude = vec![];
    let mut mine = std::collections::HashSet::new();
    let logs = patterns.iter().flat_map(|p| matching(p));
    for log in logs.filter(|l| mine.insert(l.clone())) {
        match claimed.get(&log) {
            Some(true) => exclude.push(log),
            Some(false) => return Err(format!("duplicate log entry for {}", log.display())),
            None => {
                claimed.insert(log, o.ignoreduplicates);
            }
        }
    }
    Ok(exclude)
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
