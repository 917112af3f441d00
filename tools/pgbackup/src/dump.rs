//! The database part of a set: the real `pg_dump` streamed through the
//! set's compressor and hash, optionally in a snapshot shared with exact
//! row counts; and the server's globals via `pg_dumpall --globals-only`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use opskit::backupset::{FileEntry, FileKind};
use opskit::pgcatalog::table_row_counts;
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::{Error, Result};
use postgres::Client;

use crate::sink::{Encoding, Sink};
use opskit::pgtools::{ChildGuard, PgTool, StderrTail};

pub use opskit::backupset::DumpFormat as Format;

/// What to dump and how.
pub struct DumpOptions<'a> {
    pub spec: &'a ConnSpec,
    pub pg_dump: &'a PgTool,
    pub format: Format,
    pub no_owner: bool,
    pub no_privileges: bool,
    pub extra_args: &'a [String],
    pub encoding: &'a Encoding,
}

/// The set file name for a dump.
pub fn dump_file_name(format: Format, enc: &Encoding) -> String {
    let base = match format {
        Format::Custom => "db.dump",
        Format::Plain => "db.sql",
    };
    format!("{base}{}", enc.ext())
}

/// The one-line stock-tools restore of a dump file into `$TARGET_DB`
/// (a database name or URL; the database must exist). An encrypted file
/// is decrypted first with `age -d -i "$AGE_IDENTITY"`.
pub fn restore_command(format: Format, file: &str) -> String {
    let codec = opskit::backupset::Codec::of_name(file);
    let mut stages: Vec<String> = Vec::new();
    if file.ends_with(opskit::crypt::EXT) {
        stages.push(format!("age -d -i \"$AGE_IDENTITY\" {file}"));
        if let Some(c) = codec {
            stages.push(c.cat_command().to_string());
        }
    } else if let Some(c) = codec {
        stages.push(format!("{} {file}", c.cat_command()));
    }
    let tool = match format {
        Format::Custom => "pg_restore --no-owner --exit-on-error --dbname=\"$TARGET_DB\"",
        Format::Plain => {
            "psql -X --set ON_ERROR_STOP=1 --single-transaction --dbname=\"$TARGET_DB\""
        }
    };
    if stages.is_empty() {
        return match format {
            Format::Custom => format!("{tool} {file}"),
            Format::Plain => format!("{tool} --file={file}"),
        };
    }
    stages.push(tool.to_string());
    stages.join(" | ")
}

/// Run `pg_dump` into `dir`, optionally in `snapshot`.
pub fn dump(opts: &DumpOptions, dir: &Path, snapshot: Option<&str>) -> Result<FileEntry> {
    let name = dump_file_name(opts.format, opts.encoding);
    let mut cmd = Command::new(&opts.pg_dump.path);
    opts.spec.configure_child(&mut cmd);
    match opts.format {
        Format::Custom => cmd.args(["--format=custom", "--compress=0"]),
        Format::Plain => cmd.arg("--format=plain"),
    };
    if opts.no_owner {
        cmd.arg("--no-owner");
    }
    if opts.no_privileges {
        cmd.arg("--no-privileges");
    }
    if let Some(s) = snapshot {
        cmd.arg(format!("--snapshot={s}"));
    }
    cmd.args(opts.extra_args);
    log::debug!(
        "running {} for {}",
        opts.pg_dump.path.display(),
        opts.spec.redacted()
    );
    let sink = Sink::create(dir, &name, FileKind::Database, opts.encoding)?.with_progress();
    let (entry, lines) = stream_child(cmd, "pg_dump", sink)?;
    warn_messages("pg_dump", &lines);
    Ok(entry)
}

/// What a dump tool that succeeded still said on stderr.
fn warn_messages(tool: &str, lines: &[String]) {
    let msg = opskit::pgtools::summarise(lines);
    if !msg.is_empty() {
        log::warn!("{tool}: {msg}");
    }
}

/// Dump roles and tablespaces. Without the right to read password hashes,
/// the roles are dumped without them (`--no-role-passwords`).
pub fn globals(
    spec: &ConnSpec,
    pg_dumpall: &PgTool,
    client: &mut Client,
    dir: &Path,
    enc: &Encoding,
) -> Result<FileEntry> {
    let can_read: bool = client
        .query_one(
            "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')",
            &[],
        )
        .map_err(|e| {
            Error::failure(format!(
                "checking role privileges: {}",
                describe_pg_error(&e)
            ))
        })?
        .get(0);
    let mut cmd = Command::new(&pg_dumpall.path);
    spec.configure_child(&mut cmd);
    cmd.arg("--globals-only")
        .arg(format!("--database={}", spec.dbname));
    if !can_read {
        log::warn!(
            "{} cannot read role passwords; globals are dumped without them",
            spec.user
        );
        cmd.arg("--no-role-passwords");
    }
    let name = format!("globals.sql{}", enc.ext());
    let mut sink = Sink::create(dir, &name, FileKind::Globals, enc)?;
    if enc.seal.is_some() {
        // Role names alone are guessable: 256 random bits in a comment keep
        // the readable manifest's plaintext sha256 from confirming a guess.
        let nonce = format!(
            "-- opskit nonce {}
",
            opskit::sys::random_hex(32)
        );
        let path = sink.path().to_path_buf();
        std::io::Write::write_all(&mut sink, nonce.as_bytes())
            .map_err(|e| Error::io("writing", &path, &e))?;
    }
    let (entry, lines) = stream_child(cmd, "pg_dumpall", sink)?;
    warn_messages("pg_dumpall", &lines);
    Ok(entry)
}

/// Stream a child's stdout into `sink`; the child must exit 0. Also gives
/// the last lines it wrote on stderr.
pub(crate) fn stream_child(
    cmd: Command,
    tool: &'static str,
    sink: Sink,
) -> Result<(FileEntry, Vec<String>)> {
    stream_child_watched(cmd, tool, sink, &mut |_| Ok(()))
}

/// [`stream_child`], each piece of the stream also shown to `watch`.
pub(crate) fn stream_child_watched(
    mut cmd: Command,
    tool: &'static str,
    mut sink: Sink,
    watch: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(FileEntry, Vec<String>)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| {
        Error::failure(format!(
            "cannot run {}: {e}",
            cmd.get_program().to_string_lossy()
        ))
    })?;
    let mut guard = ChildGuard(Some(child));
    let tail = StderrTail::start(guard.child(), tool);
    let mut out = guard.child().stdout.take().expect("stdout is piped");
    opskit::durable::widen_pipe(&out);
    let mut buf = vec![0u8; 1024 * 1024];
    let out_path = sink.path().to_path_buf();
    loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::failure(format!("reading {tool} output: {e}"))),
        };
        // On a write error the guard kills the child and the caller's
        // staging directory is removed.
        sink.write_all(&buf[..n])
            .map_err(|e| Error::io("writing", &out_path, &e))?;
        watch(&buf[..n]).map_err(|e| Error::failure(format!("reading {tool} output: {e}")))?;
    }
    drop(out);
    let status = guard
        .wait()
        .map_err(|e| Error::failure(format!("waiting for {tool}: {e}")))?;
    let lines = tail.lines();
    let msg = opskit::pgtools::summarise(&lines);
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exit {c}"),
            None => "killed by a signal".into(),
        };
        return Err(Error::failure(format!(
            "{tool} failed ({how}): {}",
            if msg.is_empty() {
                "no message".to_string()
            } else {
                opskit::pgtools::with_conflict_hint(&msg)
            }
        )));
    }
    Ok((sink.finish()?, lines))
}

/// A transaction holding an exported snapshot, counting rows in it on a
/// thread while pg_dump runs.
pub struct SnapshotCounts {
    pub snapshot: String,
    handle: JoinHandle<(Client, Result<BTreeMap<String, u64>>)>,
}

impl SnapshotCounts {
    /// Export a snapshot from `client` and start counting in it.
    pub fn start(mut client: Client) -> Result<Self> {
        let pg = |e: postgres::Error| {
            Error::failure(format!("exporting a snapshot: {}", describe_pg_error(&e)))
        };
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .map_err(pg)?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .map_err(pg)?
            .get(0);
        log::debug!("exported snapshot {snapshot}");
        let handle = std::thread::spawn(move || {
            let counts =
                table_row_counts(&mut client).map_err(|e| standby_failure("counting rows", &e));
            (client, counts)
        });
        Ok(SnapshotCounts { snapshot, handle })
    }

    /// Wait for the counts and end the snapshot's transaction. Call only
    /// after pg_dump has finished with the snapshot.
    pub fn finish(self) -> Result<(Client, BTreeMap<String, u64>)> {
        let (mut client, counts) = self
            .handle
            .join()
            .map_err(|_| Error::failure("row counting thread panicked"))?;
        let counts = counts?;
        client
            .batch_execute("COMMIT")
            .map_err(|e| standby_failure("ending snapshot", &e))?;
        Ok((client, counts))
    }
}

/// A query's failure, with the cause and the remedy when a hot standby
/// cancelled it (a recovery conflict).
fn standby_failure(what: &str, e: &postgres::Error) -> Error {
    Error::failure(format!(
        "{what}: {}",
        opskit::pgtools::with_conflict_hint(&describe_pg_error(e))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_restore_commands() {
        let c = |s| Encoding {
            compression: opskit::codec::Compression::parse(s).unwrap(),
            seal: None,
        };
        assert_eq!(dump_file_name(Format::Custom, &c("gzip")), "db.dump.gz");
        assert_eq!(dump_file_name(Format::Custom, &c("zstd")), "db.dump.zst");
        assert_eq!(dump_file_name(Format::Plain, &c("none")), "db.sql");
        let a = restore_command(Format::Custom, "db.dump.zst.age");
        assert_eq!(
            a,
            "age -d -i \"$AGE_IDENTITY\" db.dump.zst.age | zstd -dc | pg_restore --no-owner --exit-on-error --dbname=\"$TARGET_DB\""
        );
        let a = restore_command(Format::Plain, "db.sql.age");
        assert!(
            a.starts_with("age -d -i \"$AGE_IDENTITY\" db.sql.age | psql -X"),
            "{a}"
        );
        let n = restore_command(Format::Plain, "db.sql");
        assert!(n.ends_with("--file=db.sql"), "{n}");
        let c = restore_command(Format::Custom, "db.dump.gz");
        assert!(c.starts_with("gunzip -c db.dump.gz | pg_restore"), "{c}");
        let z = restore_command(Format::Custom, "db.dump.zst");
        assert!(z.starts_with("zstd -dc db.dump.zst | pg_restore"), "{z}");
        assert!(c.contains("\"$TARGET_DB\""));
        let p = restore_command(Format::Plain, "db.sql.gz");
        assert!(p.contains("ON_ERROR_STOP=1"), "{p}");
    }
}
