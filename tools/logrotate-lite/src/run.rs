//! A rotation run: the state file locked and read, an interrupted run
//! finished from the journal (`crate::replay`), each block's logs decided, rotated (scripts
//! around them, compression on every core), the state written back.

use std::path::Path;

use chrono::Timelike;
use opskit::records::{ErrorRecord, RotateCounts};
use opskit::{Done as Finished, Emitter, Error, IoContext};

use crate::block::BlockRun;
use crate::config::Config;
use crate::journal::{self, Journal};
use crate::report::Tally;
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
        crate::replay::replay(&journal, cfg, &mut state, &mut t, em)?;
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
