//! The journal that makes a rotation run restartable: before a log's
//! first step its whole plan is appended, then each step as it completes,
//! then `done`. A run killed at any point leaves at most one step whose
//! completion is unrecorded, and every step can tell whether it was done
//! (see `exec::run`), so the next run finishes the plan exactly once.
//! Appends are not fsynced: they are for a killed process, whose writes
//! the kernel keeps; the state file itself is written durably.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::NaiveDateTime;
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

pub fn path_for(state: &Path) -> PathBuf {
    PathBuf::from(format!("{}.opskit-journal", state.display()))
}

impl Journal {
    pub fn disabled() -> Journal {
        Journal { file: None }
    }

    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
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

    /// What a journal holds: the logs whose rotation finished (with the
    /// time to record), and the plans that did not.
    pub fn read(path: &Path) -> (Vec<(PathBuf, NaiveDateTime)>, Vec<Unfinished>) {
        let Ok(text) = std::fs::read_to_string(path) else {
            return (vec![], vec![]);
        };
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
