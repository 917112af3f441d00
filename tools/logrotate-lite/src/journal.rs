//! The journal that makes a rotation run restartable: before a log's
//! first step its whole plan is appended, then each step as it completes,
//! then `done`. A run killed at any point leaves at most one step whose
//! completion is unrecorded, and every step can tell whether it was done
//! (see `exec::run`), so the next run finishes the plan exactly once.
//! Appends are not fsynced: they are for a killed process, whose writes
//! the kernel keeps; the state file itself is written durably.
//!
//! The journal's plans are carried out as root (their paths renamed and
//! removed, their compress commands run): it is never opened through a
//! symlink, replayed only when root or the running user owns it and nobody
//! else can change it, and then only as far as the configuration vouches
//! for each plan (`crate::replay`): ownership alone proves little where
//! systemd chowns a shared state directory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::NaiveDateTime;
use opskit::safefs;
use opskit::{Error, IoContext};
use serde::{Deserialize, Serialize};

use crate::plan::Plan;

/// One line of the journal.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Entry {
    /// A log's whole plan, before its first step.
    Plan { at: String, plan: Plan },
    /// Step `i` (main, then after) of a log's plan is done.
    Step { step: PathBuf, i: usize },
    /// The log's rotation is finished.
    Done { done: PathBuf },
}

pub struct Journal {
    file: Option<Mutex<File>>,
}

/// A plan a killed run left unfinished.
pub struct Unfinished {
    pub plan: Plan,
    pub at: NaiveDateTime,
    /// Steps (main, then after) recorded as done.
    pub done_steps: usize,
}

const TIME: &str = "%Y-%m-%dT%H:%M:%S";

/// The most a journal is read: a plan is a few KiB, a run a few thousand
/// logs at most.
const MAX_JOURNAL: u64 = 64 << 20;

/// What a journal holds: the logs whose rotation finished (with the time
/// to record), and the plans that did not.
pub type Contents = (Vec<(PathBuf, NaiveDateTime)>, Vec<Unfinished>);

pub fn path_for(state: &Path) -> PathBuf {
    PathBuf::from(format!("{}.opskit-journal", state.display()))
}

impl Journal {
    pub fn disabled() -> Journal {
        Journal { file: None }
    }

    /// Open (or create, 0600) the journal to append to.
    pub fn open(path: &Path) -> opskit::Result<Journal> {
        let mut opts = OpenOptions::new();
        opts.create(true).append(true).mode(0o600);
        let f =
            safefs::open_nofollow(path, &mut opts).map_err(|e| e.context("opening the journal"))?;
        Ok(Journal {
            file: Some(Mutex::new(f)),
        })
    }

    fn append(&self, e: &Entry) {
        if let (Some(f), Ok(mut line)) = (&self.file, serde_json::to_string(e)) {
            line.push('\n');
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            // One write per line: a killed run leaves whole lines.
            let _ = f.write_all(line.as_bytes());
        }
    }

    pub fn plan(&self, p: &Plan, at: NaiveDateTime) {
        self.append(&Entry::Plan {
            at: at.format(TIME).to_string(),
            plan: p.clone(),
        });
    }

    pub fn step(&self, log: &Path, i: usize) {
        self.append(&Entry::Step {
            step: log.to_path_buf(),
            i,
        });
    }

    pub fn done(&self, log: &Path) {
        self.append(&Entry::Done {
            done: log.to_path_buf(),
        });
    }

    /// What the journal at `path` holds (nothing, when there is none);
    /// a journal that is a link, someone else's, writable by others or
    /// too big is an error naming it.
    pub fn read(path: &Path) -> opskit::Result<Contents> {
        match path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
            _ => {}
        }
        let trusted = || -> opskit::Result<Vec<u8>> {
            let f = safefs::open_nofollow(path, OpenOptions::new().read(true))?;
            safefs::check_private(path, &f.metadata().at("checking", path)?)?;
            safefs::read_bounded(f, path, MAX_JOURNAL)
        };
        let bytes = trusted().map_err(|e| {
            Error::failure(e.msg).context("not replaying the journal of an interrupted run")
        })?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    fn parse(text: &str) -> Contents {
        let mut finished = vec![];
        let mut open: BTreeMap<PathBuf, Unfinished> = BTreeMap::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Entry>(line) else {
                continue; // a line torn by the kill
            };
            match entry {
                Entry::Done { done } => {
                    if let Some(u) = open.remove(&done) {
                        finished.push((u.plan.log, u.at));
                    }
                }
                Entry::Step { step, i } => {
                    if let Some(u) = open.get_mut(&step) {
                        u.done_steps = u.done_steps.max(i + 1);
                    }
                }
                Entry::Plan { at, plan } => {
                    let Ok(at) = NaiveDateTime::parse_from_str(&at, TIME) else {
                        continue;
                    };
                    open.insert(
                        plan.log.clone(),
                        Unfinished {
                            plan,
                            at,
                            done_steps: 0,
                        },
                    );
                }
            }
        }
        (finished, open.into_values().collect())
    }
}
