//! A rotation run: the state file locked and read, an interrupted run
//! finished from the journal, each block's logs decided, rotated (scripts
//! around them, compression on every core), the state written back.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::Timelike;
use opskit::records::{ErrorRecord, Rotate, RotateAction, RotateCounts};
use opskit::{Done as Finished, Emitter, Error, Exit, IoContext};

use crate::block::BlockRun;
use crate::config::Config;
use crate::exec::{self, Done};
use crate::journal::{self, Journal};
use crate::plan::{Plan, Step};
use crate::state::State;

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
    fn finish(&self, dry_run: bool) -> Finished<RotateCounts> {
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

pub fn run(
    cfg: &Config,
    state_path: &Path,
    force: bool,
    dry: bool,
    em: &mut Emitter,
) -> Result<Finished<RotateCounts>, Error> {
    let mut t = Tally {
        errors: cfg.errors.len(),
        ..Tally::default()
    };
    if let Some(dir) = state_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at("creating state directory", dir)?;
    }
    let _lock = if dry {
        None
    } else {
        Some(opskit::lock::acquire(
            Path::new(&format!("{}.lock", state_path.display())),
            std::time::Duration::ZERO,
        )?)
    };
    let (mut state, problems) = State::read(state_path).at("reading state file", state_path)?;
    for p in &problems {
        t.errors += 1;
        let at = format!("{}:{}", state_path.display(), p.line);
        let msg = format!("{at}: {}", p.msg);
        log::error!("{msg}");
        em.emit(&ErrorRecord::new(msg).at(at))?;
    }
    let now = chrono::Local::now()
        .naive_local()
        .with_nanosecond(0)
        .expect("valid");
    let journal = journal::path_for(state_path);
    if !dry {
        replay(&journal, &mut state, &mut t, em)?;
    }
    let jf = if dry {
        Journal::disabled()
    } else {
        Journal::open(&journal).at("opening journal", &journal)?
    };
    for b in &cfg.blocks {
        let run = BlockRun {
            b,
            now,
            force,
            dry,
            journal: &jf,
            t: &mut t,
            em,
        };
        run.run(&mut state)?;
    }
    if !dry {
        // As logrotate: entries of logs that are gone and were last
        // rotated over a year ago are forgotten.
        state
            .entries
            .retain(|p, t| Path::new(p).exists() || (now - *t).num_days() <= 365);
        state.write(state_path)?;
        drop(jf);
        let _ = std::fs::remove_file(&journal);
    }
    Ok(t.finish(dry))
}

/// Finish the rotations a killed run left half-done.
fn replay(journal: &Path, state: &mut State, t: &mut Tally, em: &mut Emitter) -> Result<(), Error> {
    let (finished, open) = Journal::read(journal);
    for (log, at) in finished {
        state.entries.insert(log.display().to_string(), at);
    }
    // Temp files of the killed run (compression, copies) go first.
    let mut dirs = std::collections::BTreeSet::new();
    for u in &open {
        for st in u.plan.main.iter().chain(&u.plan.after) {
            if let Step::Compress { dst: f, .. } | Step::Copy { to: f, .. } = st {
                dirs.extend(f.parent().map(Path::to_path_buf));
            }
        }
    }
    for d in dirs {
        clear_stale_temps(&d);
    }
    for u in open {
        let log = u.plan.log.display().to_string();
        let mut done = Done::default();
        let mut err = None;
        for s in u.plan.main.iter().chain(&u.plan.after).skip(u.done_steps) {
            if let Err(e) = exec::run(s, &mut done, &mut |_, _| Ok(()), true) {
                err = Some(e);
                break;
            }
        }
        let mut rec = match &err {
            Some(e) => {
                t.failed += 1;
                Rotate::new(log, None, RotateAction::Failed)
                    .reason(format!("finishing an interrupted run: {e}"))
            }
            None => {
                state.entries.insert(log.clone(), u.at);
                Rotate::new(log, None, RotateAction::Finished).reason("interrupted run")
            }
        };
        add_done(&mut rec, &done);
        em.emit(&rec)?;
    }
    Ok(())
}

/// Remove temp files left by a run that is no longer alive.
fn clear_stale_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((_, pid)) = opskit::durable::parse_temp_name(&name)
            && (!Path::new(&format!("/proc/{pid}")).exists() || pid == std::process::id())
        {
            let _ = std::fs::remove_file(e.path());
        }
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

/// The logs a block's patterns name: globs expanded and sorted; a pattern
/// matching nothing stays as it is (and is then missing).
pub(crate) fn expand(patterns: &[String]) -> Vec<PathBuf> {
    let mut out = vec![];
    for p in patterns {
        let is_glob = p.contains(['*', '?', '[']);
        let found: Vec<PathBuf> = if is_glob {
            glob::glob(p)
                .map(|g| g.flatten().collect())
                .unwrap_or_default()
        } else {
            vec![]
        };
        if found.is_empty() {
            out.push(PathBuf::from(p));
        } else {
            out.extend(found);
        }
    }
    out.dedup();
    out
}

/// A name that looks like a rotated log (`x.log.1`, `x.log.2.gz`, `x-20261123`).
pub(crate) fn looks_rotated(p: &Path) -> bool {
    let n = p.file_name().unwrap_or_default().to_string_lossy();
    let n = n.strip_suffix(".gz").unwrap_or(&n);
    let tail = n.rsplit(['.', '-']).next().unwrap_or("");
    !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) && n.len() > tail.len()
}

/// logrotate refuses, as root without `su`, a log whose directory others
/// can write to (they could swap the log for a link to anything).
pub(crate) fn insecure_parent(log: &Path) -> Option<String> {
    let dir = log.parent()?;
    let m = dir.metadata().ok()?;
    let world = m.mode() & 0o002 != 0;
    let group = m.mode() & 0o020 != 0 && m.gid() != 0;
    (world || group).then(|| format!("skipping {} because its directory {} is writable by others than root; set 'su' to the user and group owning it", log.display(), dir.display()))
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
        .and_then(|f| f.metadata().ok())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names() {
        for n in [
            "a.log.1",
            "a.log.2.gz",
            "a.log-20261123",
            "a.log-20261123.gz",
        ] {
            assert!(looks_rotated(Path::new(n)), "{n}");
        }
        for n in ["a.log", "access.log", "2026.log"] {
            assert!(!looks_rotated(Path::new(n)), "{n}");
        }
    }
}
