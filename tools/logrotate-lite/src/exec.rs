//! Carrying out plan steps, each one safe to repeat: a run killed
//! half-way is finished by the next run from the journal, never redone.

use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use opskit::records::ScriptKind;

use crate::at::{CreateError, Entry, FileId, Output, io_err};
use crate::plan::{Plan, Step};

/// What a step did, for the `rotate` record.
#[derive(Debug, Default, Clone)]
pub struct Done {
    pub created: Vec<String>,
    pub compressed: Vec<String>,
    pub deleted: Vec<String>,
    pub warnings: Vec<String>,
    /// Bytes of compressed output written.
    pub bytes_after: u64,
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// Runs a log's own script (which, and the path it is about, if not the
/// log's own).
pub type ScriptRunner<'a> = dyn FnMut(ScriptKind, Option<&Path>) -> Result<(), String> + 'a;

/// Run one step of `plan`, every file of it reached from the log's
/// directory without following a symlink (see `at`). `replay`: finishing
/// an interrupted run (scripts are not run again).
pub fn run(
    step: &Step,
    plan: &Plan,
    done: &mut Done,
    script: &mut ScriptRunner,
    replay: bool,
) -> Result<(), String> {
    let logdir = plan.log.parent().unwrap_or(Path::new(""));
    let at = |p: &Path| Entry::resolve(p, logdir);
    match step {
        Step::Remove { path, shred, .. } => remove(&at(path)?, shred.as_deref(), done),
        Step::Rename { from, to } => {
            let (from, to) = (at(from)?, at(to)?);
            if to.exists() || !from.exists() {
                return Ok(()); // done before, or nothing to move
            }
            from.rename_to(&to)
        }
        Step::Compress {
            src,
            dst,
            level,
            command,
        } => compress_step(&at(src)?, &at(dst)?, *level, command.as_deref(), done),
        Step::Copy { from, to, truncate } => {
            // The log itself must be the file that was checked.
            let pin = plan.log_id.filter(|_| *from == plan.log);
            copy_step(&at(from)?, &at(to)?, *truncate, pin, done)
        }
        Step::Create {
            path,
            mode,
            owner,
            group,
        } => {
            create(
                &at(path)?,
                *mode,
                owner.as_deref(),
                group.as_deref(),
                replay,
            )?;
            done.created.push(path.display().to_string());
            Ok(())
        }
        Step::Script { which, arg } => {
            // preremove only for a file that is there to be removed.
            if replay || arg.as_deref().is_some_and(|a| !exists(a)) {
                return Ok(());
            }
            script(*which, arg.as_deref())
        }
        Step::Mail {
            file,
            subject,
            address,
            command,
            uncompress,
        } => {
            if replay || !exists(file) {
                return Ok(());
            }
            mail(&at(file)?, subject, address, command, uncompress.as_deref())
        }
    }
}

/// Remove a rotation (shredded first with `shred`); gone already is done.
fn remove(at: &Entry, shred_cmd: Option<&[String]>, done: &mut Done) -> Result<(), String> {
    if let Some(cmd) = shred_cmd.filter(|_| at.exists())
        && let Err(e) = shred(cmd, at)
    {
        // As logrotate: "Failed to shred ..., trying unlink".
        done.warnings
            .push(format!("{e}; removed without shredding"));
    }
    if at.remove()? {
        done.deleted.push(at.path().display().to_string());
    }
    Ok(())
}

/// Compress, unless a previous run did (the compressed file is only ever
/// renamed into place complete).
fn compress_step(
    src: &Entry,
    dst: &Entry,
    level: u32,
    command: Option<&[String]>,
    done: &mut Done,
) -> Result<(), String> {
    if dst.exists() {
        src.remove()?;
        return Ok(());
    }
    if !src.exists() {
        return Ok(());
    }
    // Never read through a symlink or wait on a FIFO planted as a rotation.
    let (input, meta) = src.open(false)?;
    let out = Output::create(dst, meta.mode() & 0o7777)?;
    match command {
        None => gzip(input, &out, level, src.path())?,
        Some(cmd) => compress_with(cmd, input, &out, src.path())?,
    }
    done.bytes_after += finish_compressed(out, &meta, src)?;
    done.compressed.push(dst.path().display().to_string());
    Ok(())
}

/// copy / copytruncate, or, when a run was interrupted after the copy,
/// the truncate of what is certainly a duplicate. `pin`: what the log
/// was when it was checked.
fn copy_step(
    from: &Entry,
    to: &Entry,
    truncate: bool,
    pin: Option<FileId>,
    done: &mut Done,
) -> Result<(), String> {
    if !to.exists() {
        copy(from, to, truncate, pin)?;
        done.created.push(to.path().display().to_string());
        return Ok(());
    }
    if !truncate || !from.exists() {
        return Ok(());
    }
    let (log, meta) = open_source(from, true, pin)?;
    let copied = to.stat()?.filter(Metadata::is_file).map(|m| m.len());
    if copied == Some(meta.len()) {
        log.set_len(0)
            .map_err(|e| io_err("truncating", from.path(), e))?;
    } else if meta.len() > 0 {
        done.warnings.push(format!(
            "{} was copied before an interruption and has grown since; left as it is",
            from.path().display()
        ));
    }
    Ok(())
}

/// Open what is to be copied (and truncated, with `truncate`): a regular
/// file, never through a symlink; the log itself only if it is the file
/// that was checked (`pin`), else not truncated when it has other names.
fn open_source(
    from: &Entry,
    truncate: bool,
    pin: Option<FileId>,
) -> Result<(File, Metadata), String> {
    let (file, meta) = from.open(truncate)?;
    let shown = from.path().display();
    match pin {
        Some(id) if id != FileId::of(&meta) => Err(format!(
            "{shown} was replaced since it was checked: refused, neither copied nor truncated"
        )),
        None if truncate && meta.nlink() > 1 => Err(format!(
            "{shown} has {} hard links: refused, not truncated",
            meta.nlink()
        )),
        _ => Ok((file, meta)),
    }
}

/// `shred -u [-n N] -` with the file open on stdout (shred's "-"), as
/// logrotate runs it; then the file is unlinked (shred cannot remove "-").
/// Never through a symlink (nor on a FIFO or device).
fn shred(cmd: &[String], at: &Entry) -> Result<(), String> {
    let path = at.path();
    let (file, _) = at.open(true)?;
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(file)
        .status()
        .map_err(|e| format!("failed to shred {}: {e}", path.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("failed to shred {} ({status})", path.display()))
    }
}

/// Mail `file` as logrotate does: `command -s subject address`, the file
/// (or what `uncompress` makes of it) on stdin.
fn mail(
    at: &Entry,
    subject: &str,
    address: &str,
    command: &str,
    uncompress: Option<&str>,
) -> Result<(), String> {
    let file = at.path();
    let (input, _) = at.open(false)?;
    let mut unpack = match uncompress {
        Some(u) => Some(
            Command::new(u)
                .stdin(input.try_clone().map_err(|e| io_err("opening", file, e))?)
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("running uncompresscmd {u}: {e}"))?,
        ),
        None => None,
    };
    let stdin: Stdio = match unpack.as_mut().and_then(|c| c.stdout.take()) {
        Some(out) => out.into(),
        None => input.into(),
    };
    let status = Command::new(command)
        .args(["-s", subject, address])
        .stdin(stdin)
        .status()
        .map_err(|e| format!("running the mail command {command}: {e}"))?;
    if let Some(mut c) = unpack {
        let _ = c.wait();
    }
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "mailing {} to {address} failed ({status})",
            file.display()
        ))
    }
}

/// gzip `input` (the file `src`) in-process into `out`'s temp file.
fn gzip(mut input: File, out: &Output, level: u32, src: &Path) -> Result<(), String> {
    let mut w = io::BufWriter::with_capacity(256 << 10, out.file());
    opskit::gz::gzip_member(&mut input, &mut w, level)
        .map_err(|e| io_err("compressing", src, e))?;
    w.flush().map_err(|e| io_err("writing", out.temp_path(), e))
}

/// compresscmd: run `cmd[0] cmd[1..]` (found on PATH, as logrotate runs
/// it) with `input` (the file `src`) on stdin and `out`'s temp file on
/// stdout.
fn compress_with(cmd: &[String], input: File, out: &Output, src: &Path) -> Result<(), String> {
    let stdout = out
        .file()
        .try_clone()
        .map_err(|e| io_err("opening", out.temp_path(), e))?;
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(input)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("running compresscmd {}: {e}", cmd[0]))?;
    if !status.success() {
        return Err(format!(
            "compressing {} with {} failed ({status})",
            src.display(),
            cmd.join(" ")
        ));
    }
    Ok(())
}

/// The compressed file takes the log's mode, owner and times, goes into
/// place, and the uncompressed one goes; its size.
fn finish_compressed(out: Output, meta: &Metadata, src: &Entry) -> Result<u64, String> {
    let dst = out.path().to_path_buf();
    let f = out.file();
    let _ = std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid()));
    f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| io_err("setting mode of", &dst, e))?;
    let times = std::fs::FileTimes::new()
        .set_accessed(meta.accessed().unwrap_or(std::time::SystemTime::now()))
        .set_modified(meta.modified().unwrap_or(std::time::SystemTime::now()));
    let _ = f.set_times(times);
    let n = f.metadata().map(|m| m.len()).unwrap_or(0);
    out.commit()?;
    src.remove()?;
    Ok(n)
}

/// copytruncate: copy, copy again what was appended meanwhile (until it
/// stops growing, a few rounds at most), fsync, then truncate -- the
/// window in which a line can be lost is the truncate alone.
/// The log (or renamecopy's LOG.tmp), opened once, with O_NOFOLLOW and
/// checked (`open_source`): what is copied and truncated is that file,
/// through that fd.
fn copy(from: &Entry, to: &Entry, truncate: bool, pin: Option<FileId>) -> Result<(), String> {
    let (mut src, meta) = open_source(from, truncate, pin)?;
    let out = Output::create(to, meta.mode() & 0o7777)?;
    let _ = std::os::unix::fs::fchown(out.file(), Some(meta.uid()), Some(meta.gid()));
    // Copy to the end, again while the writer keeps appending (a few
    // rounds at most).
    for round in 0..8 {
        let n =
            io::copy(&mut src, &mut out.file()).map_err(|e| io_err("copying", from.path(), e))?;
        if round > 0 && n == 0 {
            break;
        }
    }
    // The copy is on disk, under its name, before the log loses its lines.
    let mut dst = out.commit()?;
    if truncate {
        // What was appended during the fsync, then the truncate at once:
        // the window for a lost line is these two calls.
        io::copy(&mut src, &mut dst).map_err(|e| io_err("copying", from.path(), e))?;
        src.set_len(0)
            .map_err(|e| io_err("truncating", from.path(), e))?;
        dst.sync_all()
            .map_err(|e| io_err("syncing", to.path(), e))?;
    }
    Ok(())
}

/// `create`: a new file (`O_CREAT|O_EXCL|O_NOFOLLOW`), its mode and
/// owner set through the fd that was created. A name taken since the log
/// was moved away (a symlink planted there, say) is refused for this log;
/// when finishing an interrupted run, a regular file with one name there
/// is this run's own (or the writer's) and is adopted.
fn create(
    at: &Entry,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
    replay: bool,
) -> Result<(), String> {
    let path = at.path();
    let f = match at.create_new(mode.unwrap_or(0o644)) {
        Ok(f) => f,
        Err(CreateError::Exists) if replay => adopt(at)?,
        Err(CreateError::Exists) => {
            return Err(format!(
                "create: {} already exists (it appeared after the log was moved away): refused, its mode and owner left alone",
                path.display()
            ));
        }
        Err(CreateError::Other(e)) => return Err(e),
    };
    if let Some(m) = mode {
        f.set_permissions(std::fs::Permissions::from_mode(m))
            .map_err(|e| io_err("setting mode of", path, e))?;
    }
    let uid = match owner {
        Some(o) => {
            Some(opskit::sys::uid_of(o).ok_or_else(|| format!("create: unknown user '{o}'"))?)
        }
        None => None,
    };
    let gid = match group {
        Some(g) => {
            Some(opskit::sys::gid_of(g).ok_or_else(|| format!("create: unknown group '{g}'"))?)
        }
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&f, uid, gid).map_err(|e| io_err("setting owner of", path, e))?;
    }
    Ok(())
}

/// The file an interrupted `create` left: a regular file with a single
/// name, opened without following a symlink.
fn adopt(at: &Entry) -> Result<File, String> {
    let (f, meta) = at.open(false)?;
    if meta.nlink() > 1 {
        return Err(format!(
            "create: {} has {} hard links: refused",
            at.path().display(),
            meta.nlink()
        ));
    }
    Ok(f)
}

/// Run a script as logrotate does: `/bin/sh -c SCRIPT logrotate_script ARG`,
/// its output to our stderr (stdout carries records).
pub fn run_script(body: &str, arg: &str) -> Result<i32, String> {
    let status = Command::new("/bin/sh")
        .args(["-c", body, "logrotate_script", arg])
        .stdin(Stdio::null())
        .stdout(io::stderr())
        .status()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    Ok(status.code().unwrap_or(128 + 9))
}
