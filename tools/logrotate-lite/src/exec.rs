//! Carrying out plan steps, each one safe to repeat: a run killed
//! half-way is finished by the next run from the journal, never redone.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use opskit::durable;
use opskit::records::ScriptKind;

use crate::plan::Step;

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

fn io_err(what: &str, p: &Path, e: io::Error) -> String {
    opskit::exit::describe_io(what, p, &e)
}

/// Runs a log's own script (which, and the path it is about, if not the
/// log's own).
pub type ScriptRunner<'a> = dyn FnMut(ScriptKind, Option<&Path>) -> Result<(), String> + 'a;

/// Run one step. `replay`: finishing an interrupted run (scripts are not
/// run again).
pub fn run(
    step: &Step,
    done: &mut Done,
    script: &mut ScriptRunner,
    replay: bool,
) -> Result<(), String> {
    match step {
        Step::Remove { path, shred, .. } => remove(path, shred.as_deref(), done),
        Step::Rename { from, to } => {
            if exists(to) || !exists(from) {
                return Ok(()); // done before, or nothing to move
            }
            std::fs::rename(from, to).map_err(|e| io_err("renaming", from, e))
        }
        Step::Compress {
            src,
            dst,
            level,
            command,
        } => compress_step(src, dst, *level, command.as_deref(), done),
        Step::Copy { from, to, truncate } => copy_step(from, to, *truncate, done),
        Step::Create {
            path,
            mode,
            owner,
            group,
        } => {
            create(path, *mode, owner.as_deref(), group.as_deref())?;
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
            mail(file, subject, address, command, uncompress.as_deref())
        }
    }
}

/// Remove a rotation (shredded first with `shred`); gone already is done.
fn remove(path: &Path, shred_cmd: Option<&[String]>, done: &mut Done) -> Result<(), String> {
    if let Some(cmd) = shred_cmd.filter(|_| exists(path))
        && let Err(e) = shred(cmd, path)
    {
        // As logrotate: "Failed to shred ..., trying unlink".
        done.warnings
            .push(format!("{e}; removed without shredding"));
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            done.deleted.push(path.display().to_string());
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path, e)),
    }
}

/// Compress, unless a previous run did (the compressed file is only ever
/// renamed into place complete).
fn compress_step(
    src: &Path,
    dst: &Path,
    level: u32,
    command: Option<&[String]>,
    done: &mut Done,
) -> Result<(), String> {
    if exists(dst) {
        if exists(src) {
            std::fs::remove_file(src).map_err(|e| io_err("removing", src, e))?;
        }
        return Ok(());
    }
    if !exists(src) {
        return Ok(());
    }
    let n = match command {
        None => compress(src, dst, level)?,
        Some(cmd) => compress_with(cmd, src, dst)?,
    };
    done.bytes_after += n;
    done.compressed.push(dst.display().to_string());
    Ok(())
}

/// copy / copytruncate, or, when a run was interrupted after the copy,
/// the truncate of what is certainly a duplicate.
fn copy_step(from: &Path, to: &Path, truncate: bool, done: &mut Done) -> Result<(), String> {
    if !exists(to) {
        copy(from, to, truncate)?;
        done.created.push(to.display().to_string());
        return Ok(());
    }
    if truncate {
        let (a, b) = (
            std::fs::metadata(from).map(|m| m.len()),
            std::fs::metadata(to).map(|m| m.len()),
        );
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => {
                OpenOptions::new()
                    .write(true)
                    .open(from)
                    .and_then(|f| f.set_len(0))
                    .map_err(|e| io_err("truncating", from, e))?;
            }
            (Ok(0), _) | (Err(_), _) => {}
            _ => done.warnings.push(format!(
                "{} was copied before an interruption and has grown since; left as it is",
                from.display()
            )),
        }
    }
    Ok(())
}

/// `shred -u [-n N] -` with `path` open on stdout (shred's "-"), as
/// logrotate runs it; then the file is unlinked (shred cannot remove "-").
fn shred(cmd: &[String], path: &Path) -> Result<(), String> {
    let file = File::options()
        .write(true)
        .read(true)
        .open(path)
        .map_err(|e| io_err("opening", path, e))?;
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
    file: &Path,
    subject: &str,
    address: &str,
    command: &str,
    uncompress: Option<&str>,
) -> Result<(), String> {
    let input = File::open(file).map_err(|e| io_err("opening", file, e))?;
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

/// gzip `src` to `dst` through a temp file (fsynced, renamed), keeping
/// `src`'s mode, owner and times as gzip does; then remove `src`.
pub fn compress(src: &Path, dst: &Path, level: u32) -> Result<u64, String> {
    let mut input = File::open(src).map_err(|e| io_err("opening", src, e))?;
    let meta = input.metadata().map_err(|e| io_err("reading", src, e))?;
    let mut out = durable::AtomicFile::create(dst, meta.mode() & 0o7777).map_err(|e| e.msg)?;
    {
        let mut w = io::BufWriter::with_capacity(256 << 10, &mut out);
        opskit::gz::gzip_member(&mut input, &mut w, level)
            .map_err(|e| io_err("compressing", src, e))?;
        w.flush().map_err(|e| io_err("writing", dst, e))?;
    }
    finish_compressed(out, &meta, src, dst)
}

/// compresscmd: run `cmd[0] cmd[1..]` (found on PATH, as logrotate runs
/// it) with `src` on stdin and the temp file of `dst` on stdout.
fn compress_with(cmd: &[String], src: &Path, dst: &Path) -> Result<u64, String> {
    let input = File::open(src).map_err(|e| io_err("opening", src, e))?;
    let meta = input.metadata().map_err(|e| io_err("reading", src, e))?;
    let out = durable::AtomicFile::create(dst, meta.mode() & 0o7777).map_err(|e| e.msg)?;
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
    finish_compressed(out, &meta, src, dst)
}

/// The compressed file takes the log's mode, owner and times, goes into
/// place, and the uncompressed one goes; its size.
fn finish_compressed(
    out: durable::AtomicFile,
    meta: &std::fs::Metadata,
    src: &Path,
    dst: &Path,
) -> Result<u64, String> {
    let f = out.file();
    let _ = std::os::unix::fs::fchown(f, Some(meta.uid()), Some(meta.gid()));
    f.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| io_err("setting mode of", dst, e))?;
    let times = std::fs::FileTimes::new()
        .set_accessed(meta.accessed().unwrap_or(std::time::SystemTime::now()))
        .set_modified(meta.modified().unwrap_or(std::time::SystemTime::now()));
    let _ = f.set_times(times);
    let n = f.metadata().map(|m| m.len()).unwrap_or(0);
    out.commit().map_err(|e| e.msg)?;
    std::fs::remove_file(src).map_err(|e| io_err("removing", src, e))?;
    Ok(n)
}

/// copytruncate: copy, copy again what was appended meanwhile (until it
/// stops growing, a few rounds at most), fsync, then truncate -- the
/// window in which a line can be lost is the truncate alone.
fn copy(from: &Path, to: &Path, truncate: bool) -> Result<(), String> {
    let mut src = OpenOptions::new()
        .read(true)
        .write(truncate)
        .open(from)
        .map_err(|e| io_err("opening", from, e))?;
    let meta = src.metadata().map_err(|e| io_err("reading", from, e))?;
    let out = durable::AtomicFile::create(to, meta.mode() & 0o7777).map_err(|e| e.msg)?;
    let _ = std::os::unix::fs::fchown(out.file(), Some(meta.uid()), Some(meta.gid()));
    // Copy to the end, again while the writer keeps appending (a few
    // rounds at most).
    for round in 0..8 {
        let n = io::copy(&mut src, &mut out.file()).map_err(|e| io_err("copying", from, e))?;
        if round > 0 && n == 0 {
            break;
        }
    }
    // The copy is on disk, under its name, before the log loses its lines.
    out.commit().map_err(|e| e.msg)?;
    if truncate {
        // What was appended during the fsync, then the truncate at once:
        // the window for a lost line is these two calls.
        let mut dst = OpenOptions::new()
            .append(true)
            .open(to)
            .map_err(|e| io_err("opening", to, e))?;
        io::copy(&mut src, &mut dst).map_err(|e| io_err("copying", from, e))?;
        src.set_len(0).map_err(|e| io_err("truncating", from, e))?;
        dst.sync_all().map_err(|e| io_err("syncing", to, e))?;
    }
    Ok(())
}

/// `create`: open with O_CREAT (never truncating what a writer may have
/// created meanwhile), then set mode and owner.
fn create(
    path: &Path,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(), String> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(mode.unwrap_or(0o644))
        .open(path)
        .map_err(|e| io_err("creating", path, e))?;
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
