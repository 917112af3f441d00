//! One block of a config rotated: its logs selected, the block's scripts
//! run around them, each due log planned, journalled and rotated, the
//! compression on every core, one `rotate` record per log.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{NaiveDateTime, Timelike};
use opskit::records::{Rotate, RotateAction, Script, ScriptKind, Warning};
use opskit::sys::euid;
use opskit::{Emitter, Error};

use crate::config::Block;
use crate::decide::{Verdict, decide};
use crate::exec::{self, Done};
use crate::journal::Journal;
use crate::plan::{self, Plan, Step};
use crate::report::{Tally, add_done, describe, produced_bytes};
use crate::state::{State, format_time};
use crate::su::As;

type Result<T> = std::result::Result<T, Error>;

/// One block's run: what every phase of it needs.
pub(crate) struct BlockRun<'a> {
    pub b: &'a Block,
    pub now: NaiveDateTime,
    pub force: bool,
    pub dry: bool,
    pub journal: &'a Journal,
    pub t: &'a mut Tally,
    pub em: &'a mut Emitter,
}

/// A log rotated now, and how it went.
struct Rotation {
    log: PathBuf,
    size: u64,
    plan: Plan,
    done: Done,
    failed: Option<String>,
}

impl BlockRun<'_> {
    /// The phases of a block, in logrotate's order.
    pub fn run(mut self, state: &mut State) -> Result<()> {
        let due = self.select(state)?;
        if due.is_empty() {
            return Ok(());
        }
        let o = &self.b.opts;
        let who = match As::switch(o.su.as_ref().filter(|_| !self.dry), euid() == 0) {
            Ok(w) => w,
            Err(e) => return self.fail_all(&due, &e),
        };
        let patterns = self.b.patterns.join(" ");
        if !self.script(&who, ScriptKind::Firstaction, &patterns)? {
            return self.fail_all(&due, "firstaction failed");
        }
        if o.sharedscripts && !self.script(&who, ScriptKind::Prerotate, &patterns)? {
            // As for a log's own prerotate, logrotate counts the attempt as
            // the rotation: the logs wait for their next interval.
            for (log, _) in &due {
                state.entries.insert(log.display().to_string(), self.now);
            }
            return self.fail_all(&due, "prerotate failed");
        }
        self.create_olddir(&due[0].0);
        let mut rotations = self.rotate_each(&who, due)?;
        if o.sharedscripts {
            self.script(&who, ScriptKind::Postrotate, &patterns)?;
        }
        if !self.dry {
            self.finish_all(&who, &mut rotations)?;
        }
        self.script(&who, ScriptKind::Lastaction, &patterns)?;
        for r in rotations {
            self.report(state, r)?;
        }
        Ok(())
    }

    /// The block's logs that are due, each considered log recorded in the
    /// state (as logrotate records every log it considers); a `rotate`
    /// record for each skipped one.
    fn select(&mut self, state: &mut State) -> Result<Vec<(PathBuf, Metadata)>> {
        let first_seen = self
            .now
            .with_minute(0)
            .and_then(|n| n.with_second(0))
            .expect("valid");
        let mut due = vec![];
        let logs = expand(&self.b.patterns);
        for log in logs.into_iter().filter(|l| !self.b.exclude.contains(l)) {
            self.t.logs += 1;
            let key = log.display().to_string();
            let (meta, age_s) = match self.check_log(&log)? {
                Ok(found) => found,
                Err(skip) => {
                    // As logrotate: every log considered is recorded, a
                    // pattern that matched nothing under its own name.
                    if skip.record {
                        state.entries.entry(key).or_insert(first_seen);
                    }
                    self.skip(&log, &skip.reason, skip.error)?;
                    continue;
                }
            };
            let last = *state.entries.entry(key).or_insert(first_seen);
            match decide(&self.b.opts, meta.len(), age_s, last, self.now, self.force) {
                Verdict::Rotate(_) => due.push((log, meta)),
                Verdict::Skip(reason) => self.skip(&log, reason, false)?,
            }
        }
        Ok(due)
    }

    /// Whether a log can be rotated at all: what it is (identity, size,
    /// mode, owner) and its age in seconds, or why it is skipped.
    fn check_log(
        &mut self,
        log: &Path,
    ) -> Result<std::result::Result<(Metadata, Option<i64>), Skip>> {
        let o = &self.b.opts;
        let meta = match log.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let reason = if o.missingok {
                    "missing"
                } else {
                    "missing (no missingok)"
                };
                return Ok(Err(Skip::new(reason, !o.missingok)));
            }
            Err(e) => {
                return Ok(Err(
                    Skip::new(&format!("cannot stat: {e}"), true).unrecorded()
                ));
            }
        };
        let refused = if meta.file_type().is_symlink() {
            Some(Skip::new(
                "symlink: rotating symbolic links is refused, as logrotate does",
                false,
            ))
        } else if !meta.is_file() {
            Some(Skip::new("not a regular file", true))
        } else if meta.nlink() > 1 && !o.allowhardlink {
            let why = format!("{} hard links: refused, as logrotate does", meta.nlink());
            Some(Skip::new(&why, false))
        } else if euid() == 0 && o.su.is_none() {
            insecure_parent(log).map(|why| Skip::new(&why, true))
        } else {
            None
        };
        if let Some(skip) = refused {
            return Ok(Err(skip));
        }
        if looks_rotated(log) {
            self.em.emit(&Warning {
                path: log.display().to_string(),
                block: self.b.at.clone(),
                message: format!("{} looks like a rotated log but the pattern matches it, so it is rotated again (as logrotate does); narrow the pattern, e.g. *.log", log.display()),
            })?;
        }
        let age_s = meta
            .modified()
            .ok()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
            .map(|d| d.as_secs() as i64);
        Ok(Ok((meta, age_s)))
    }

    fn skip(&mut self, log: &Path, reason: &str, error: bool) -> Result<()> {
        if error {
            self.t.errors += 1;
            log::error!("{}: {reason}", log.display());
        }
        self.t.skipped += 1;
        self.not_rotated(log, RotateAction::Skipped, reason)
    }

    /// Every due log failed for the same reason (a script, `su`).
    fn fail_all(&mut self, due: &[(PathBuf, Metadata)], reason: &str) -> Result<()> {
        for (log, _) in due {
            self.t.failed += 1;
            self.not_rotated(log, RotateAction::Failed, reason)?;
        }
        Ok(())
    }

    /// The `rotate` record of a log that was not rotated, and why.
    fn not_rotated(&mut self, log: &Path, action: RotateAction, reason: &str) -> Result<()> {
        let rec = Rotate::new(log.display().to_string(), Some(&self.b.at), action);
        self.em.emit(&rec.reason(reason))
    }

    /// Run one of the block's scripts (none configured: success), as root,
    /// with a `script` record; whether it succeeded.
    fn script(&mut self, who: &As, which: ScriptKind, arg: &str) -> Result<bool> {
        let o = &self.b.opts;
        let body = match which {
            ScriptKind::Firstaction => &o.firstaction,
            ScriptKind::Prerotate => &o.prerotate,
            ScriptKind::Postrotate => &o.postrotate,
            ScriptKind::Lastaction => &o.lastaction,
            ScriptKind::Preremove => &o.preremove,
        };
        let Some(body) = body else { return Ok(true) };
        if self.dry {
            return Ok(true);
        }
        let (ok, exit) = match who.as_root(|| exec::run_script(body, arg)) {
            Ok(code) => (code == 0, Some(code)),
            Err(e) => {
                log::error!("{e}");
                (false, None)
            }
        };
        self.em.emit(&Script {
            ok,
            which,
            block: self.b.at.clone(),
            arg: arg.to_string(),
            exit,
        })?;
        if !ok {
            self.t.errors += 1;
            log::error!(
                "{} script of {} failed (exit {exit:?})",
                which.name(),
                self.b.at
            );
        }
        Ok(ok)
    }

    /// `createolddir`: the old directory beside the block's first log.
    fn create_olddir(&mut self, first_log: &Path) {
        let o = &self.b.opts;
        let (Some(dir), Some(c)) = (o.olddir.as_deref(), &o.createolddir) else {
            return;
        };
        let logdir = first_log.parent().unwrap_or(Path::new(""));
        let d = logdir.join(dir);
        if d.is_dir() || self.dry {
            return;
        }
        // Made relative to the log's directory, never through a symlink
        // planted there, and chowned through the fd of what was made.
        let uid = c.owner.as_deref().and_then(opskit::sys::uid_of);
        let gid = c.group.as_deref().and_then(opskit::sys::gid_of);
        let made = crate::at::make_dir(&d, logdir, c.mode.unwrap_or(0o755)).and_then(|fd| {
            std::os::unix::fs::fchown(&fd, uid, gid)
                .map_err(|e| crate::at::io_err("setting owner of", &d, e))
        });
        if let Err(e) = made {
            self.t.errors += 1;
            log::error!("createolddir: {e}");
        }
    }

    /// Per log: plan, journal, the steps that run now (renames, copies,
    /// its own scripts).
    fn rotate_each(&mut self, who: &As, due: Vec<(PathBuf, Metadata)>) -> Result<Vec<Rotation>> {
        let mut out = vec![];
        for (log, checked) in due {
            let size = checked.len();
            let plan = plan::plan(&log, &checked, &self.b.opts, self.now, &|f| {
                f.metadata().ok().map(|m| m.mtime())
            });
            let mut r = Rotation {
                done: Done {
                    warnings: plan.warnings.clone(),
                    ..Done::default()
                },
                failed: plan.blocked.clone(),
                log,
                size,
                plan,
            };
            if r.failed.is_none() && !self.dry {
                self.journal.plan(&r.plan, self.now);
                r.failed = self.run_main(who, &r.log, &r.plan, &mut r.done)?;
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The steps of a log's plan that run before the shared postrotate;
    /// the failure that stopped them, if any.
    fn run_main(
        &mut self,
        who: &As,
        log: &Path,
        plan: &Plan,
        done: &mut Done,
    ) -> Result<Option<String>> {
        let arg = log.display().to_string();
        let mut emit_failed = None;
        for (i, s) in plan.main.iter().enumerate() {
            let mut run_script = |which: ScriptKind, path: Option<&Path>| {
                let arg = path
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| arg.clone());
                match self.script(who, which, &arg) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(format!("{} script failed", which.name())),
                    Err(e) => {
                        emit_failed = Some(e);
                        Err("the record stream failed".into())
                    }
                }
            };
            let res = exec::run(s, plan, done, &mut run_script, false);
            if let Some(e) = emit_failed {
                return Err(e);
            }
            if let Err(e) = res {
                return Ok(Some(e));
            }
            self.journal.step(log, i);
        }
        Ok(None)
    }

    /// Compression and disposal of every rotation that got this far, on
    /// every core.
    fn finish_all(&mut self, who: &As, rotations: &mut [Rotation]) -> Result<()> {
        let work: Vec<usize> = (0..rotations.len())
            .filter(|i| rotations[*i].failed.is_none())
            .collect();
        // Scripts (preremove) run here, in order, before the parallel part.
        for &i in &work {
            for st in &rotations[i].plan.after {
                if let Step::Script { which, arg } = st {
                    let arg = arg.as_ref().unwrap_or(&rotations[i].log);
                    if arg.symlink_metadata().is_ok() {
                        self.script(who, *which, &arg.display().to_string())?;
                    }
                }
            }
        }
        let journal = self.journal;
        let outs = opskit::pool::map(&work, opskit::pool::cores(), |&i| {
            let r = &rotations[i];
            let mut done = r.done.clone();
            for (k, st) in r.plan.after.iter().enumerate() {
                if let Err(e) = exec::run(st, &r.plan, &mut done, &mut |_, _| Ok(()), false) {
                    return (done, Some(e));
                }
                journal.step(&r.plan.log, r.plan.main.len() + k);
            }
            (done, None)
        });
        for (i, (done, failed)) in work.into_iter().zip(outs) {
            rotations[i].done = done;
            rotations[i].failed = failed;
        }
        Ok(())
    }

    /// The `rotate` record of a rotation, and its state entry.
    fn report(&mut self, state: &mut State, r: Rotation) -> Result<()> {
        let key = r.log.display().to_string();
        let after = produced_bytes(&r.plan, &r.done);
        let mut rec = Rotate::new(key.clone(), Some(&self.b.at), RotateAction::Rotated);
        rec.bytes_before = Some(r.size);
        add_done(&mut rec, &r.done);
        match &r.failed {
            Some(e) => {
                self.t.failed += 1;
                log::error!("{}: {e}", r.log.display());
                rec.action = RotateAction::Failed;
                rec.reason = Some(e.clone());
                // logrotate records the attempt as a rotation, so the log
                // waits for its next interval; the same here, said aloud.
                if r.plan.blocked.is_none() {
                    state.entries.insert(key, self.now);
                    rec.warnings.get_or_insert_with(|| vec![format!("recorded as rotated at {} (as logrotate does): it is not retried before its next interval; run with -f once fixed", format_time(&self.now))]);
                }
            }
            None if self.dry => {
                rec.action = RotateAction::WouldRotate;
                rec.steps = Some(
                    r.plan
                        .main
                        .iter()
                        .chain(&r.plan.after)
                        .map(describe)
                        .collect(),
                );
            }
            None => {
                self.t.rotated += 1;
                self.t.bytes_before += r.size;
                self.t.bytes_after += after;
                state.entries.insert(key, self.now);
                rec.bytes_after = Some(after);
                self.journal.done(&r.log);
            }
        }
        self.em.emit(&rec)
    }
}

/// Why a log is skipped.
struct Skip {
    reason: String,
    /// Counted as an error (the exit status says so).
    error: bool,
    /// Recorded in the state all the same (all but a failed stat).
    record: bool,
}

impl Skip {
    fn new(reason: &str, error: bool) -> Self {
        Skip {
            reason: reason.to_string(),
            error,
            record: true,
        }
    }
    fn unrecorded(mut self) -> Self {
        self.record = false;
        self
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
