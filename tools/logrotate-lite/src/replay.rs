//! Finishing the rotations a killed run left half-done, from its journal.
//!
//! The journal is carried out as root, so it is believed only as far as
//! the configuration vouches for it: a plan is finished only when its log
//! is one a block of the configuration names, every file a step touches is
//! in that log's directory or the block's old directory, and every command
//! it runs (compresscmd, shred) is the block's own. Anything else is not
//! carried out and is reported; the log is then rotated as usual.

use std::path::Path;

use opskit::records::{Rotate, RotateAction};
use opskit::{Emitter, Error};

use crate::config::{Block, Config};
use crate::exec::{self, Done};
use crate::journal::{Journal, Unfinished};
use crate::plan::Step;
use crate::report::{Tally, add_done};
use crate::state::State;

/// Finish the rotations a killed run left half-done, those the
/// configuration `cfg` vouches for.
pub fn replay(
    journal: &Path,
    cfg: &Config,
    state: &mut State,
    t: &mut Tally,
    em: &mut Emitter,
) -> Result<(), Error> {
    let (finished, open) = Journal::read(journal)?;
    for (log, at) in finished {
        if block_of(cfg, &log).is_some() {
            state.entries.insert(log.display().to_string(), at);
        }
    }
    let (open, refused): (Vec<Unfinished>, Vec<(Unfinished, String)>) =
        open.into_iter()
            .fold((vec![], vec![]), |(mut ok, mut no), u| {
                match vouch(&u, cfg) {
                    Ok(()) => ok.push(u),
                    Err(why) => no.push((u, why)),
                }
                (ok, no)
            });
    for (u, why) in refused {
        t.failed += 1;
        let msg = format!(
            "not finishing an interrupted run's rotation of {}: {why}; the journal is not the configuration's",
            u.plan.log.display()
        );
        log::error!("{msg}");
        em.emit(
            &Rotate::new(u.plan.log.display().to_string(), None, RotateAction::Failed).reason(msg),
        )?;
    }
    // Temp files of the killed run (compression, copies) go first.
    let mut dirs = std::collections::BTreeSet::new();
    for u in &open {
        let logdir = u.plan.log.parent().unwrap_or(Path::new(""));
        for st in u.plan.main.iter().chain(&u.plan.after) {
            if let Step::Compress { dst: f, .. } | Step::Copy { to: f, .. } = st {
                dirs.extend(f.parent().map(|d| (d.to_path_buf(), logdir.to_path_buf())));
            }
        }
    }
    for (d, logdir) in dirs {
        crate::at::clear_temps(&d, &logdir, stale_temp);
    }
    for u in open {
        let log = u.plan.log.display().to_string();
        let mut done = Done::default();
        let mut err = None;
        for s in u.plan.main.iter().chain(&u.plan.after).skip(u.done_steps) {
            if let Err(e) = exec::run(s, &u.plan, &mut done, &mut |_, _| Ok(()), true) {
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

/// The block of `cfg` that has `log`: one of its patterns names it (a
/// glob's `*` never crossing a `/`), and an earlier block with
/// `ignoreduplicates` did not take it.
fn block_of<'a>(cfg: &'a Config, log: &Path) -> Option<&'a Block> {
    let how = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    cfg.blocks.iter().find(|b| {
        !b.exclude.iter().any(|x| x == log)
            && b.patterns.iter().any(|p| {
                Path::new(p) == log
                    || glob::Pattern::new(p).is_ok_and(|g| g.matches_path_with(log, how))
            })
    })
}

/// Why the journal's plan `u` is not carried out, if it is not: see the
/// module's comment.
fn vouch(u: &Unfinished, cfg: &Config) -> Result<(), String> {
    let log = &u.plan.log;
    let b = block_of(cfg, log).ok_or("its log is in no block of the configuration")?;
    let o = &b.opts;
    let logdir = log.parent().unwrap_or(Path::new("/"));
    let dirs = [logdir.to_path_buf(), o.rotated_dir(log)];
    for st in u.plan.main.iter().chain(&u.plan.after) {
        let (paths, command_differs) = match st {
            Step::Compress {
                src, dst, command, ..
            } => (
                vec![src, dst],
                command.is_some() && *command != o.compress_command(),
            ),
            Step::Remove { path, shred, .. } => {
                (vec![path], shred.is_some() && *shred != o.shred_command())
            }
            Step::Rename { from, to } | Step::Copy { from, to, .. } => (vec![from, to], false),
            Step::Create { path, .. } => (vec![path], false),
            Step::Script { arg, .. } => (arg.iter().collect(), false),
            Step::Mail { file, .. } => (vec![file], false),
        };
        if command_differs {
            return Err(format!(
                "a step runs a command that is not {}'s compresscmd or shred",
                b.at
            ));
        }
        if let Some(p) = paths
            .into_iter()
            .find(|p| !p.parent().is_some_and(|d| dirs.iter().any(|x| x == d)))
        {
            return Err(format!(
                "a step names {}, outside {} and its old directory",
                p.display(),
                logdir.display()
            ));
        }
    }
    Ok(())
}

/// Whether `name` is a temp file left by a run that is no longer alive.
fn stale_temp(name: &str) -> bool {
    opskit::durable::parse_temp_name(name).is_some_and(|(_, pid)| {
        !Path::new(&format!("/proc/{pid}")).exists() || pid == std::process::id()
    })
}
