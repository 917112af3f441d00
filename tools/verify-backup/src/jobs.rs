//! The sets a run verifies: `--latest ROOT`, the operands, or the records
//! on stdin (pgbackup's `backup` records; their other fields pass through).

use std::path::{Path, PathBuf};

use opskit::reader::{Line, LineError};
use opskit::records::{Backup, ErrorRecord, Verify};
use opskit::upstream::{self, Upstream};
use opskit::{Emitter, Error, Result};

use crate::{Args, Job, Tally};

/// The sets to verify: `--latest`, the operands, or the records on stdin.
pub(crate) fn jobs(args: &Args, em: &mut Emitter, tally: &mut Tally) -> Result<Vec<Job>> {
    if let Some(root) = &args.latest {
        return Ok(vec![Job {
            path: latest(root)?,
            incoming: None,
        }]);
    }
    if !(args.sets.is_empty() || args.sets == ["-"]) {
        return Ok(args
            .sets
            .iter()
            .map(|s| Job {
                path: PathBuf::from(s),
                incoming: None,
            })
            .collect());
    }
    let read = upstream::read(em, job_from_record)?;
    for _ in 0..read.failures {
        tally.error();
    }
    Ok(read.work)
}

/// The fields verify-backup reads from a record of a kind it does not know.
#[derive(serde::Deserialize)]
struct AnyRecord {
    path: Option<String>,
    ok: Option<bool>,
    message: Option<String>,
}

/// A record names a set by `path` (pgbackup's `backup`, another `verify`);
/// an `error` record, or one that failed without naming a set, is an
/// upstream failure to pass on.
fn job_from_record(line: &Line) -> std::result::Result<Upstream<Job>, LineError> {
    let set = |path: String| {
        Upstream::Work(Job {
            path: PathBuf::from(path),
            incoming: Some(line.fields.clone()),
        })
    };
    Ok(match line.event() {
        "summary" => Upstream::Nothing,
        "backup" => set(line.parse::<Backup>()?.path),
        "verify" => set(line.parse::<Verify>()?.path),
        "error" => Upstream::Failed(line.parse::<ErrorRecord>()?),
        _ => {
            let r: AnyRecord = line.parse()?;
            match (r.path, r.ok) {
                (Some(p), _) => set(p),
                (None, Some(false)) => {
                    let mut e = ErrorRecord::new(
                        r.message.unwrap_or_else(|| "upstream step failed".into()),
                    );
                    e.extra = line.fields.clone();
                    Upstream::Failed(e)
                }
                (None, _) => Upstream::Nothing,
            }
        }
    })
}

/// The newest set under `root` (`opskit::root`'s rules: a set with a
/// broken manifest is the newest all the same, verified and failed, never
/// skipped for an older one).
pub fn latest(root: &Path) -> Result<PathBuf> {
    opskit::root::sets(root)?
        .pop()
        .map(|s| s.path)
        .ok_or_else(|| Error::failure(format!("no complete backup set under {}", root.display())))
}
