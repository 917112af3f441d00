//! What a base set needs beyond its own files: the WAL archived from its
//! start on, and, for an incremental set, every ancestor of its chain.

use std::path::Path;

use opskit::backupset::Manifest;
use opskit::sign::Trust;

use crate::checks::{Check, Name};

/// A base set: the WAL archive of its root holds every segment from the
/// set's start to the newest archived one, so it recovers to any time
/// since it was taken. No archive passes only for a set that was not
/// archiving (opskit::walchain::NoArchive); a start segment that does not
/// parse fails.
pub(crate) fn wal_chain(set: &Path, info: &opskit::backupset::PhysicalInfo) -> Check {
    use opskit::walchain::Coverage;
    let root = set.parent().unwrap_or(Path::new("."));
    let (ok, detail) = match opskit::walchain::follow(root, info) {
        Ok(Coverage::NoArchive(n)) => (n.is_ok(), n.describe(root)),
        Ok(Coverage::Chain(c)) if c.missing == 0 => (
            true,
            format!(
                "{} segments archived from {} to {} (timelines {:?}): it recovers to any time since it was taken",
                c.segments,
                info.start_wal,
                c.newest.as_deref().unwrap_or("-"),
                c.timelines
            ),
        ),
        Ok(Coverage::Chain(c)) => (
            false,
            format!(
                "{} segments missing from the archive between {} and {} (first: {}): recovery from this set stops before them",
                c.missing,
                info.start_wal,
                c.newest.as_deref().unwrap_or("-"),
                c.first_missing.join(", ")
            ),
        ),
        Err(e) => (false, e.msg),
    };
    if ok {
        Check::pass(Name::Wal, None, detail)
    } else {
        Check::fail(Name::Wal, None, detail)
    }
}

/// An incremental set's chain is whole: every ancestor in the root,
/// signed, the one recorded, in order, on one timeline, and none whose
/// latest verification failed.
pub(crate) fn ancestors(set: &Path, m: &Manifest, trust: &Trust) -> Check {
    let chain = match opskit::chain::resolve(set, m, trust) {
        Ok(c) => c,
        Err(e) => return Check::fail(Name::Chain, None, e),
    };
    let root = set.parent().unwrap_or(Path::new("."));
    let names = opskit::chain::names(&chain);
    let failed = opskit::verdicts::VerdictLog::local(root)
        .passed()
        .map(|v| {
            names[..names.len() - 1]
                .iter()
                .filter(|n| v.get(n.as_str()) == Some(&false))
                .cloned()
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !failed.is_empty() {
        return Check::fail(
            Name::Chain,
            None,
            format!("its ancestor {} failed verification", failed.join(", ")),
        );
    }
    Check::pass(
        Name::Chain,
        None,
        format!(
            "{} sets back to its full set: {}",
            names.len(),
            names.join(" <- ")
        ),
    )
}
