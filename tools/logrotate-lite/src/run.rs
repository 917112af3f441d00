//! A rotation run: the state file locked and read, an interrupted run
//! finished from the journal, each block's logs decided, rotated (scripts
//! around them, compression on every core), the state written back.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{NaiveDateTime, Timelike};
use opskit::record::Fields;
use opskit::{Emitter, Error, Exit, IoContext, fields};
use serde_json::json;

use crate::config::{Block, Config};
use crate::decide::{Verdict, decide};
use crate::exec::{self, Done};
use crate::journal::{self, Journal};
use crate::plan::{self, Plan, Step};
use crate::state::{State, format_time};
use opskit::sys::euid;

#[derive(Default)]
struct Tally {
    logs: usize,
    rotated: usize,
    skipped: usize,
    failed: usize,
    errors: usize,
    bytes_before: u64,
    bytes_after: u64,
}

pub fn run(
    cfg: &Config,
    state_path: &Path,
    force: bool,
    dry: bool,
    em: &mut Emitter,
) -> Result<Exit, Error> {
    let start = Instant::now();
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
        em.emit(
            "error",
            &fields! {"ok" => false, "at" => at, "message" => msg},
        );
    }
    let now = chrono::Local::now()
        .naive_local()
        .with_nanosecond(0)
        .expect("valid");
    let journal = journal::path_for(state_path);
    if !dry {
        replay(&journal, &mut state, &mut t, em);
    }
    let jf = if dry {
        Journal::disabled()
    } else {
        Journal::open(&journal).at("opening journal", &journal)?
    };
    for block in &cfg.blocks {
        rotate_block(block, &mut state, now, force, dry, &jf, &mut t, em);
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
    em.emit(
        "summary",
        &fields! {
            "ok" => t.errors == 0 && t.failed == 0,
            "logs" => t.logs,
            "rotated" => t.rotated,
            "skipped" => t.skipped,
            "failed" => t.failed,
            "errors" => t.errors,
            "bytes_before" => t.bytes_before,
            "bytes_after" => t.bytes_after,
            "dry_run" => dry,
            "duration_s" => opskit::record::secs(start.elapsed()),
        },
    );
    Ok(if t.errors > 0 || t.failed > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    })
}

/// Finish the rotations a killed run left half-done.
fn replay(journal: &Path, state: &mut State, t: &mut Tally, em: &mut Emitter) {
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
            if let Err(e) = exec::run(s, &mut done, &mut |_| Ok(()), true) {
                err = Some(e);
                break;
            }
        }
        let mut rec =
            fields! {"path" => log, "action" => "finished", "reason" => "interrupted run"};
        if let Some(e) = &err {
            t.failed += 1;
            rec = fields! {"path" => log, "action" => "failed", "reason" => format!("finishing an interrupted run: {e}")};
        } else {
            state.entries.insert(log.clone(), u.at);
        }
        add_done(&mut rec, &done);
        em.emit("rotate", &rec);
    }
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

fn add_done(rec: &mut Fields, d: &Done) {
    rec.insert("created".into(), json!(d.created));
    rec.insert("compressed".into(), json!(d.compressed));
    rec.insert("deleted".into(), json!(d.deleted));
    if !d.warnings.is_empty() {
        rec.insert("warnings".into(), json!(d.warnings));
    }
}

/// The logs a block's patterns name: globs expanded and sorted; a pattern
/// matching nothing stays as it is (and is then missing).
fn expand(patterns: &[String]) -> Vec<PathBuf> {
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
fn looks_rotated(p: &Path) -> bool {
    let n = p.file_name().unwrap_or_default().to_string_lossy();
    let n = n.strip_suffix(".gz").unwrap_or(&n);
    let tail = n.rsplit(['.', '-']).next().unwrap_or("");
    !tail.is_empty() && tail.chars().all(|c| c.is_ascii_digit()) && n.len() > tail.len()
}

/// logrotate refuses, as root without `su`, a log whose directory others
/// can write to (they could swap the log for a link to anything).
fn insecure_parent(log: &Path) -> Option<String> {
    let dir = log.parent()?;
    let m = dir.metadata().ok()?;
    let world = m.mode() & 0o002 != 0;
    let group = m.mode() & 0o020 != 0 && m.gid() != 0;
    (world || group).then(|| format!("skipping {} because its directory {} is writable by others than root; set 'su' to the user and group owning it", log.display(), dir.display()))
}

#[allow(clippy::too_many_arguments)]
fn rotate_block(
    b: &Block,
    state: &mut State,
    now: NaiveDateTime,
    force: bool,
    dry: bool,
    journal: &Journal,
    t: &mut Tally,
    em: &mut Emitter,
) {
    let o = &b.opts;
    let pattern_arg = b.patterns.join(" ");
    let first_seen = now
        .with_minute(0)
        .and_then(|n| n.with_second(0))
        .expect("valid");
    let mut due: Vec<(PathBuf, u64)> = vec![];
    for log in expand(&b.patterns) {
        t.logs += 1;
        let key = log.display().to_string();
        let skip = |t: &mut Tally, em: &mut Emitter, reason: &str, error: bool| {
            if error {
                t.errors += 1;
                log::error!("{}: {reason}", log.display());
            }
            t.skipped += 1;
            em.emit("rotate", &fields! {"path" => key, "block" => b.at, "action" => "skipped", "reason" => reason});
        };
        let meta = match log.symlink_metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // As logrotate: a pattern that matched nothing is
                // recorded under its own name.
                state.entries.entry(key.clone()).or_insert(first_seen);
                skip(
                    t,
                    em,
                    if o.missingok {
                        "missing"
                    } else {
                        "missing (no missingok)"
                    },
                    !o.missingok,
                );
                continue;
            }
            Err(e) => {
                skip(t, em, &format!("cannot stat: {e}"), true);
                continue;
            }
        };
        // logrotate records every log it considers, refused or not.
        state.entries.entry(key.clone()).or_insert(first_seen);
        if meta.file_type().is_symlink() {
            skip(
                t,
                em,
                "symlink: rotating symbolic links is refused, as logrotate does",
                false,
            );
            continue;
        }
        if !meta.is_file() {
            skip(t, em, "not a regular file", true);
            continue;
        }
        if meta.nlink() > 1 {
            skip(
                t,
                em,
                &format!("{} hard links: refused, as logrotate does", meta.nlink()),
                false,
            );
            continue;
        }
        if let Some(why) = (euid() == 0 && o.su.is_none())
            .then(|| insecure_parent(&log))
            .flatten()
        {
            skip(t, em, &why, true);
            continue;
        }
        if looks_rotated(&log) {
            em.emit("warning", &fields! {"path" => key, "block" => b.at, "message" => format!("{} looks like a rotated log but the pattern matches it, so it is rotated again (as logrotate does); narrow the pattern, e.g. *.log", log.display())});
        }
        let last = *state.entries.entry(key.clone()).or_insert(first_seen);
        match decide(o, meta.len(), last, now, force) {
            Verdict::Rotate(_) => due.push((log, meta.len())),
            Verdict::Skip(reason) => skip(t, em, reason, false),
        }
    }
    if due.is_empty() {
        return;
    }
    let who = match crate::su::As::switch(o.su.as_ref().filter(|_| !dry), euid() == 0) {
        Ok(w) => w,
        Err(e) => {
            for (log, _) in &due {
                t.failed += 1;
                em.emit("rotate", &fields! {"path" => log.display().to_string(), "block" => b.at, "action" => "failed", "reason" => e.clone()});
            }
            return;
        }
    };
    let script =
        |which: &str, body: &Option<String>, arg: &str, t: &mut Tally, em: &mut Emitter| -> bool {
            let Some(body) = body else { return true };
            if dry {
                return true;
            }
            let (ok, exit) = match who.as_root(|| exec::run_script(body, arg)) {
                Ok(code) => (code == 0, Some(code)),
                Err(e) => {
                    log::error!("{e}");
                    (false, None)
                }
            };
            em.emit(
            "script",
            &fields! {"ok" => ok, "which" => which, "block" => b.at, "arg" => arg, "exit" => exit},
        );
            if !ok {
                t.errors += 1;
                log::error!("{which} script of {} failed (exit {exit:?})", b.at);
            }
            ok
        };
    if !script("firstaction", &o.firstaction, &pattern_arg, t, em) {
        for (log, _) in &due {
            t.failed += 1;
            em.emit("rotate", &fields! {"path" => log.display().to_string(), "block" => b.at, "action" => "failed", "reason" => "firstaction failed"});
        }
        return;
    }
    if o.sharedscripts && !script("prerotate", &o.prerotate, &pattern_arg, t, em) {
        for (log, _) in &due {
            t.failed += 1;
            em.emit("rotate", &fields! {"path" => log.display().to_string(), "block" => b.at, "action" => "failed", "reason" => "prerotate failed"});
        }
        return;
    }
    if let (Some(dir), Some(c)) = (o.olddir.as_deref(), &o.createolddir) {
        let d = due[0].0.parent().map(|p| p.join(dir)).unwrap_or_default();
        if !d.is_dir() && !dry {
            use std::os::unix::fs::DirBuilderExt;
            let made = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(c.mode.unwrap_or(0o755))
                .create(&d);
            let uid = c.owner.as_deref().and_then(opskit::sys::uid_of);
            let gid = c.group.as_deref().and_then(opskit::sys::gid_of);
            if let Err(e) = made.and_then(|()| std::os::unix::fs::chown(&d, uid, gid)) {
                t.errors += 1;
                log::error!("createolddir {}: {e}", d.display());
            }
        }
    }
    // Per log: plan, journal, the steps that run now.
    let mut results: Vec<(PathBuf, u64, Plan, Done, Option<String>)> = vec![];
    for (log, size) in due {
        let p = plan::plan(&log, o, now, &|f| f.metadata().ok().map(|m| m.mtime()));
        let mut done = Done {
            warnings: p.warnings.clone(),
            ..Done::default()
        };
        if let Some(why) = &p.blocked {
            results.push((log, size, p.clone(), done, Some(why.clone())));
            continue;
        }
        if dry {
            results.push((log, size, p, done, None));
            continue;
        }
        journal.plan(&p, now);
        let arg = log.display().to_string();
        let mut failed = None;
        for (i, s) in p.main.iter().enumerate() {
            let mut run_script = |which: &str| {
                let body = if which == "prerotate" {
                    &o.prerotate
                } else {
                    &o.postrotate
                };
                if script(which, body, &arg, t, em) {
                    Ok(())
                } else {
                    Err(format!("{which} script failed"))
                }
            };
            if let Err(e) = exec::run(s, &mut done, &mut run_script, false) {
                failed = Some(e);
                break;
            }
            journal.step(&log, i);
        }
        results.push((log, size, p, done, failed));
    }
    if o.sharedscripts {
        script("postrotate", &o.postrotate, &pattern_arg, t, em);
    }
    // Compression and disposal, on every core.
    if !dry {
        let work: Vec<usize> = (0..results.len())
            .filter(|i| results[*i].4.is_none())
            .collect();
        let outs = opskit::pool::map(&work, opskit::pool::cores(), |&i| {
            let (_, _, plan, done, _) = &results[i];
            let mut done = done.clone();
            for (k, st) in plan.after.iter().enumerate() {
                if let Err(e) = exec::run(st, &mut done, &mut |_| Ok(()), false) {
                    return (done, Some(e));
                }
                journal.step(&plan.log, plan.main.len() + k);
            }
            (done, None)
        });
        for (i, (done, failed)) in work.into_iter().zip(outs) {
            results[i].3 = done;
            results[i].4 = failed;
        }
    }
    script("lastaction", &o.lastaction, &pattern_arg, t, em);
    for (log, size, p, done, failed) in results {
        let key = log.display().to_string();
        let after = produced_bytes(&p, &done);
        let mut rec = fields! {"path" => key, "block" => b.at, "bytes_before" => size};
        match &failed {
            Some(e) => {
                t.failed += 1;
                log::error!("{}: {e}", log.display());
                rec.insert("action".into(), json!("failed"));
                rec.insert("reason".into(), json!(e));
                // logrotate records the attempt as a rotation, so the log
                // waits for its next interval; the same here, said aloud.
                if p.blocked.is_none() {
                    state.entries.insert(key.clone(), now);
                    rec.insert("warnings".into(), json!([format!("recorded as rotated at {} (as logrotate does): it is not retried before its next interval; run with -f once fixed", format_time(&now))]));
                }
            }
            None if dry => {
                rec.insert("action".into(), json!("would rotate"));
                rec.insert(
                    "steps".into(),
                    json!(
                        p.main
                            .iter()
                            .chain(&p.after)
                            .map(describe)
                            .collect::<Vec<_>>()
                    ),
                );
            }
            None => {
                t.rotated += 1;
                t.bytes_before += size;
                t.bytes_after += after;
                state.entries.insert(key.clone(), now);
                rec.insert("action".into(), json!("rotated"));
                rec.insert("bytes_after".into(), json!(after));
                journal.done(&log);
            }
        }
        add_done(&mut rec, &done);
        em.emit("rotate", &rec);
    }
}

/// Bytes of the rotated copy this rotation left (compressed or not).
fn produced_bytes(p: &Plan, d: &Done) -> u64 {
    if d.bytes_after > 0 {
        return d.bytes_after;
    }
    p.main
        .iter()
        .find_map(|s| match s {
            Step::Rename { from, to } if *from == p.log => Some(to.clone()),
            Step::Copy { to, .. } => Some(to.clone()),
            _ => None,
        })
        .and_then(|f| f.metadata().ok())
        .map(|m| m.len())
        .unwrap_or(0)
}

fn describe(s: &Step) -> String {
    match s {
        Step::Compress { src, dst, .. } => {
            format!("compress {} -> {}", src.display(), dst.display())
        }
        Step::Remove { path, why } => format!("remove {} ({why})", path.display()),
        Step::Rename { from, to } => format!("rename {} -> {}", from.display(), to.display()),
        Step::Copy { from, to, truncate } => format!(
            "{} {} -> {}",
            if *truncate { "copytruncate" } else { "copy" },
            from.display(),
            to.display()
        ),
        Step::Create { path, .. } => format!("create {}", path.display()),
        Step::Script { which } => format!("run {which}"),
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
