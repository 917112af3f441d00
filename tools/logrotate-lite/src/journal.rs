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
use serde_json::json;

use crate::plan::Plan;

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

    fn append(&self, v: serde_json::Value) {
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|p| p.into_inner());
            // One write per line: a killed run leaves whole lines.
            let _ = f.write_all(format!("{v}\n").as_bytes());
        }
    }

    pub fn plan(&self, p: &Plan, at: NaiveDateTime) {
        self.append(json!({"at": at.format(TIME).to_string(), "plan": p}));
    }

    pub fn step(&self, log: &Path, i: usize) {
        self.append(json!({"step": log, "i": i}));
    }

    pub fn done(&self, log: &Path) {
        self.append(json!({"done": log}));
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
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue; // a line torn by the kill
            };
            if let Some(log) = v["done"].as_str() {
                if let Some(u) = open.remove(Path::new(log)) {
                    finished.push((u.plan.log, u.at));
                }
            } else if let (Some(log), Some(i)) = (v["step"].as_str(), v["i"].as_u64()) {
                if let Some(u) = open.get_mut(Path::new(log)) {
                    u.done_steps = u.done_steps.max(i as usize + 1);
                }
            } else if let (Ok(plan), Some(at)) = (
                serde_json::from_value::<Plan>(v["plan"].clone()),
                v["at"]
                    .as_str()
                    .and_then(|a| NaiveDateTime::parse_from_str(a, TIME).ok()),
            ) {
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
        (finished, open.into_values().collect())
    }
}
