//! What a run reports: the counts behind its `summary`, and what a
//! rotation's `rotate` record says of it (the files it created, compressed
//! and deleted, the bytes it left, the steps a dry run would take).

use opskit::records::{Rotate, RotateCounts};
use opskit::{Done as Finished, Exit};

use crate::exec::Done;
use crate::plan::{Plan, Step};

/// The counts of a run, for its summary.
#[derive(Default)]
pub(crate) struct Tally {
    pub logs: usize,
    pub rotated: usize,
    pub skipped: usize,
    pub failed: usize,
    pub errors: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Tally {
    pub fn finish(&self, dry_run: bool) -> Finished<RotateCounts> {
        let exit = if self.errors > 0 || self.failed > 0 {
            Exit::CheckFailed
        } else {
            Exit::Ok
        };
        Finished::new(
            exit,
            RotateCounts {
                logs: Some(self.logs),
                rotated: Some(self.rotated),
                skipped: Some(self.skipped),
                failed: Some(self.failed),
                errors: self.errors,
                bytes_before: Some(self.bytes_before),
                bytes_after: Some(self.bytes_after),
                dry_run: Some(dry_run),
                blocks: None,
            },
        )
    }
}

/// The files a rotation created, compressed and deleted, and its warnings.
pub(crate) fn add_done(rec: &mut Rotate, d: &Done) {
    rec.created = Some(d.created.clone());
    rec.compressed = Some(d.compressed.clone());
    rec.deleted = Some(d.deleted.clone());
    if !d.warnings.is_empty() {
        rec.warnings = Some(d.warnings.clone());
    }
}

/// Bytes of the rotated copy this rotation left (compressed or not).
pub(crate) fn produced_bytes(p: &Plan, d: &Done) -> u64 {
    if d.bytes_after > 0 {
        return d.bytes_after;
    }
    // A copy (copytruncate, copy, renamecopy's) names the rotation; else
    // the rename of the log does.
    let steps = || p.main.iter().chain(&p.after);
    steps()
        .find_map(|s| match s {
            Step::Copy { to, .. } => Some(to.clone()),
            _ => None,
        })
        .or_else(|| {
            steps().find_map(|s| match s {
                Step::Rename { from, to } if *from == p.log => Some(to.clone()),
                _ => None,
            })
        })
        .and_then(|f| f.symlink_metadata().ok())
        .map(|m| m.len())
        .unwrap_or(0)
}

pub(crate) fn describe(s: &Step) -> String {
    match s {
        Step::Compress { src, dst, .. } => {
            format!("compress {} -> {}", src.display(), dst.display())
        }
        Step::Remove { path, why, .. } => format!("remove {} ({why})", path.display()),
        Step::Rename { from, to } => format!("rename {} -> {}", from.display(), to.display()),
        Step::Copy { from, to, truncate } => format!(
            "{} {} -> {}",
            if *truncate { "copytruncate" } else { "copy" },
            from.display(),
            to.display()
        ),
        Step::Create { path, .. } => format!("create {}", path.display()),
        Step::Script { which, arg } => match arg {
            Some(a) => format!("run {} {}", which.name(), a.display()),
            None => format!("run {}", which.name()),
        },
        Step::Mail { file, address, .. } => format!("mail {} to {address}", file.display()),
    }
}
