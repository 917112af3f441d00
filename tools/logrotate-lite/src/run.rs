//! A rotation run: the state file locked and read, an interrupted run
//! finished from the journal, each block's logs decided, rotated (scripts
//! around them, compression on every core), the state written back.

use std::path::Path;

use chrono::Timelike;
use opskit::records::{ErrorRecord, Rotate, RotateAction, RotateCounts};
use opskit::{Done as Finished, Emitter, Error, IoContext};

use crate::block::BlockRun;
use crate::config::Config;
use crate::exec::{self, Done};
use crate::journal::{self, Journal};
use crate::plan::Step;
use crate::report::{Tally, add_done};
use crate::state::State;

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
    let (mut state, problems) =
        State::read(state_path).map_err(|e| e.context("reading state file"))?;
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
        Journal::open(&journal)?
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
    let (finished, open) = Journal::read(journal)?;
    for (log, at) in finished {
        state.entries.insert(log.display().to_string(), at);
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

/// Whether `name` is a temp file left by a run that is no longer alive.
fn stale_temp(name: &str) -> bool {
    opskit::durable::parse_temp_name(name).is_some_and(|(_, pid)| {
        !Path::new(&format!("/proc/{pid}")).exists() || pid == std::process::id()
    })
}
