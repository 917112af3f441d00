//! `--newest-verified ROOT`: the set a restore takes, asked of the tool
//! instead of re-derived from the log with jq. The rule is the one every
//! tool uses (`opskit::verdicts`): a set's **latest** verdict counts, so a
//! set that passed and then failed a later verification is not taken; sets
//! are ordered by time, then name (`opskit::root`).

use std::path::Path;

use opskit::records::{NewestVerified, SetKind, VerifyCounts};
use opskit::verdicts::{VerdictLog, newest_passed};
use opskit::{Done, Emitter, Error, Exit, Result};

use crate::checks::Depth;

/// Report the newest set of `kind` (and of `series`, when given) under
/// `root` whose latest verification passed (exit 1 when there is none).
pub fn run(
    root: &Path,
    kind: SetKind,
    series: Option<&str>,
    em: &mut Emitter,
) -> Result<Done<VerifyCounts>> {
    let sets = opskit::root::sets(root)?;
    let verdicts = VerdictLog::local(root).latest()?;
    let wanted = |s: &opskit::root::Set| {
        series.is_none_or(|want| s.series == want) && s.manifest().is_ok_and(|m| m.is_of(kind))
    };
    let Some(set) = newest_passed(&sets, &verdicts, wanted) else {
        return Err(Error::check(format!(
            "no {} set{} under {} has passed its latest verification (see verify-backup --record)",
            match kind {
                SetKind::Dump => "dump",
                SetKind::Base => "base",
            },
            series.map(|s| format!(" of {s}")).unwrap_or_default(),
            root.display()
        )));
    };
    let v = &verdicts[&set.name];
    em.emit(&NewestVerified {
        set: set.name.clone(),
        path: set.path.display().to_string(),
        kind,
        created_at: set.time,
        depth: v.depth,
        verified_at: v.at,
    })?;
    let counts = VerifyCounts {
        sets: 1,
        passed: 1,
        failed: 0,
        errors: 0,
        depth: v.depth.unwrap_or(Depth::Quick),
    };
    Ok(Done::new(Exit::Ok, counts))
}
