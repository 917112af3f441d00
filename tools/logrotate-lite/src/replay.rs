//! Finishing the rotations a killed run left half-done, from its journal.
//!
//! The journal is carried out as root, so it is believed only as far as
//! the configuration vouches for it: a plan is finished only when its log
//! is one a block of the configuration names (no `.` or `..` in it), every
//! file a step touches is named after that log (its name less its
//! `extension`, as rotations are) in its directory or the block's old
//! directory, every command it runs (compresscmd, shred) is the block's
//! own, it truncates only under `copytruncate` and creates the log only
//! under `create`, with the mode and owner `create` gives. Anything else is
//! not carried out and is reported; the log is then rotated as usual.
//!
//! What it does not prove: a journal may name any log the block's glob
//! matches, and a `create` without a mode or owner takes the old log's,
//! which only the journal holds (any mode without setuid, setgid or sticky
//! bits is then taken). The journal is trusted only when root or the
//! running user owns it and nobody else can write it; this narrows what a
//! journal could do if that ever failed again.

use std::path::{Component, Path};

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
        // As the logs were found (glob's defaults); a log with `.` or `..`
        // in its path is refused before.
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
    if !plain(log) {
        return Err(format!("its log {} has a . or .. in it", log.display()));
    }
    let b = block_of(cfg, log).ok_or("its log is in no block of the configuration")?;
    let o = &b.opts;
    let logdir = log.parent().unwrap_or(Path::new("/"));
    let dirs = [logdir.to_path_buf(), o.rotated_dir(log)];
    // Every file a step touches is one of the log's own: named after it
    // as the planner names rotations (the log's name, less its extension).
    let (base, _) = o.rotation_base(log);
    for st in u.plan.main.iter().chain(&u.plan.after) {
        if let Some(why) = unlike_the_block(st, log, b) {
            return Err(why);
        }
        let outside = step_paths(st).into_iter().find(|p| {
            !p.parent().is_some_and(|d| dirs.iter().any(|x| x == d))
                || !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&base))
        });
        if let Some(p) = outside {
            return Err(format!(
                "a step names {}, not a rotation of {} in its directory or old directory",
                p.display(),
                log.display()
            ));
        }
    }
    Ok(())
}

/// Whether `p` is absolute and has no `.` or `..` in it.
fn plain(p: &Path) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// The files step `st` touches.
fn step_paths(st: &Step) -> Vec<&std::path::PathBuf> {
    match st {
        Step::Compress { src, dst, .. } => vec![src, dst],
        Step::Remove { path, .. } | Step::Create { path, .. } => vec![path],
        Step::Rename { from, to } | Step::Copy { from, to, .. } => vec![from, to],
        Step::Script { arg, .. } => arg.iter().collect(),
        Step::Mail { file, .. } => vec![file],
    }
}

/// How step `st` differs from what block `b` would plan for `log`: a
/// command that is not its own, a truncation or a new log it does not
/// configure, a mode or owner it does not give.
fn unlike_the_block(st: &Step, log: &Path, b: &Block) -> Option<String> {
    let o = &b.opts;
    let why = match st {
        Step::Compress { command, .. } if command.is_some() && *command != o.compress_command() => {
            "runs a compress command that is not its compresscmd"
        }
        Step::Remove { shred, .. } if shred.is_some() && *shred != o.shred_command() => {
            "runs a shred command it does not configure"
        }
        Step::Copy { from, truncate, .. } if *truncate && (!o.copytruncate || from != log) => {
            "truncates a file it does not copytruncate"
        }
        Step::Create {
            path,
            mode,
            owner,
            group,
        } => {
            let Some(c) = o.create.as_ref() else {
                return Some(format!("a step creates a log without create ({})", b.at));
            };
            let mode_ok = match c.mode {
                Some(m) => *mode == Some(m),
                None => mode.is_none_or(|m| m & 0o7000 == 0),
            };
            let named_ok =
                |want: &Option<String>, got: &Option<String>| want.is_none() || want == got;
            if path != log || !mode_ok || !named_ok(&c.owner, owner) || !named_ok(&c.group, group) {
                "creates a log with another name, mode or owner than its create"
            } else {
                return None;
            }
        }
        _ => return None,
    };
    Some(format!("a step {why} ({})", b.at))
}

/// Whether `name` is a temp file left by a run that is no longer alive.
fn stale_temp(name: &str) -> bool {
    opskit::durable::parse_temp_name(name).is_some_and(|(_, pid)| {
        !Path::new(&format!("/proc/{pid}")).exists() || pid == std::process::id()
    })
}
