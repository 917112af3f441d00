//! The restore test: restore the set's dump with the stock tools into a
//! scratch database of a unique name, compare row counts with the manifest,
//! read every table, and drop the scratch database again, also when the
//! restore fails or the run is interrupted.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use opskit::backupset::{DumpFormat, FileEntry, Manifest};
use opskit::crypt::Identities;
use opskit::pgcatalog::{quote_ident, table_row_counts};
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::pgtools::{self, ChildGuard, StderrTail};
use opskit::progress::Progress;
use opskit::restrict::{Restricted, psql_knows_restrict};
use opskit::{Error, Result};

/// What a set file is to the tool that restores it.
pub(crate) enum Input {
    /// A custom-format archive, for pg_restore.
    Archive,
    /// SQL, for psql under `\restrict`.
    Sql,
    /// Globals SQL, under `\restrict`, without the statements about these
    /// existing roles (how many were left out is counted).
    Globals(
        std::collections::BTreeSet<String>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ),
}

/// What verification saw of each set file (by name).
pub type Seen = std::collections::BTreeMap<String, opskit::safefs::FileId>;

/// A set file to read for a restore: its manifest entry, and what the
/// verification of this run saw of it (the file must still be that one).
pub(crate) struct Source<'a> {
    pub set: &'a Path,
    pub entry: &'a FileEntry,
    pub seen: Option<&'a opskit::safefs::FileId>,
}

impl Source<'_> {
    pub fn path(&self) -> std::path::PathBuf {
        self.set.join(&self.entry.name)
    }

    /// The file, reopened and checked unchanged, as a reader that hashes
    /// (and decrypts) what it gives.
    pub fn open(
        &self,
        ids: Option<&Identities>,
    ) -> std::result::Result<opskit::physical::SetReader, String> {
        let path = self.path();
        let file = match self.seen {
            Some(id) => opskit::safefs::reopen_unchanged(&path, id),
            None => Err(Error::check(format!(
                "{}: not verified in this run: refused",
                path.display()
            ))),
        }
        .map_err(|e| e.msg)?;
        opskit::physical::SetReader::from_file(file, &path, self.entry, ids).map_err(|e| e.msg)
    }
}

/// A restore tool's failure: its name and its stderr, summarised.
pub(crate) fn tool_failed(tool: &str, lines: &[String]) -> String {
    let msg = pgtools::summarise(lines);
    format!(
        "{tool} failed: {}",
        if msg.is_empty() { "no message" } else { &msg }
    )
}

/// SQL from a set goes only to a psql that knows `\restrict`.
pub(crate) fn need_restrict(psql: &pgtools::PgTool) -> Result<()> {
    if psql_knows_restrict(&psql.version) {
        return Ok(());
    }
    Err(Error::failure(format!(
        "{} is psql {}, which does not know \\restrict: a set's SQL is never fed to it (its meta-commands would run); install psql 15.14, 16.10, 17.6 or newer (or --pg-bindir)",
        psql.path.display(),
        psql.version
    )))
}

use crate::checks::{Check, Name};
use crate::seekable::{CopyFailed, Parallel};

/// Where restore tests go.
pub struct Target {
    /// The server, connected through its maintenance database (the URL's).
    pub spec: ConnSpec,
    pub bindir: Option<std::path::PathBuf>,
    pub interrupted: Arc<AtomicBool>,
    /// `--keep-as`: restore into this new database and keep it when every
    /// check passed (restore-system.sh), instead of a scratch database.
    pub keep_as: Option<String>,
    /// `--globals`: restore the set's roles first.
    pub globals: bool,
    /// `--files-into`: unpack the set's files archives here once the
    /// database restored and checked (before it is kept).
    pub files_into: Option<std::path::PathBuf>,
    /// `--jobs` above 1: custom-format dumps restored in parallel from a
    /// copy; `None` streams them.
    pub parallel: Option<Parallel>,
}

/// The database restored into; dropped when this is dropped unless kept.
struct Scratch<'a> {
    spec: &'a ConnSpec,
    name: String,
    keep: bool,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        if self.keep {
            log::info!("kept the restored database {}", self.name);
            return;
        }
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&self.name)
        );
        match self.spec.connect().and_then(|mut c| {
            c.batch_execute(&sql)
                .map_err(|e| Error::failure(describe_pg_error(&e)))
        }) {
            Ok(()) => log::debug!("dropped scratch database {}", self.name),
            Err(e) => log::error!(
                "could not drop scratch database {} on {}: {}; drop it by hand",
                self.name,
                self.spec.target(),
                e.msg
            ),
        }
    }
}

impl Target {
    /// Fail early (exit 2) when the server cannot be reached.
    pub fn check_reachable(&self) -> Result<()> {
        self.spec.connect().map(|_| ())
    }

    /// Restore `set` (decrypting with `ids` when it is encrypted) and check
    /// it. Returns the checks and the restore time.
    pub fn test(
        &self,
        set: &Path,
        m: &Manifest,
        ids: Option<&Identities>,
        seen: &Seen,
    ) -> Result<(Vec<Check>, Option<f64>)> {
        let Some(db) = &m.database else {
            return Ok((
                vec![Check::pass(Name::Restore, None, "no database in this set")],
                None,
            ));
        };
        let major = pgtools::major_of_num(db.server_version_num);
        let tool_name = if db.format == DumpFormat::Plain {
            "psql"
        } else {
            "pg_restore"
        };
        let tool = pgtools::find(tool_name, major, &db.server_version, self.bindir.as_deref())?;
        if db.format == DumpFormat::Plain {
            need_restrict(&tool)?;
        }
        // pg_restore 17+ into a server before 17: through a script and psql.
        let psql = if db.format == DumpFormat::Custom
            && crate::older::needs_script(tool.major, crate::older::server_major(&self.spec)?)
        {
            let psql = pgtools::find("psql", major, &db.server_version, self.bindir.as_deref())?;
            need_restrict(&psql)?;
            Some(psql)
        } else {
            None
        };
        let entry = m.files.iter().find(|f| f.name == db.file).ok_or_else(|| {
            Error::check(format!(
                "{}: the dump {} is not listed",
                set.display(),
                db.file
            ))
        })?;
        // In parallel only from a copy pg_restore can seek in: refused
        // before anything is written when its disk has no room for it.
        let parallel = match (&psql, db.format, &self.parallel) {
            (None, DumpFormat::Custom, Some(p)) => match crate::seekable::check_room(entry, p) {
                Ok(()) => Some(p),
                Err(e) if !p.asked => {
                    log::warn!("{}; streaming it with one job instead", e.msg);
                    None
                }
                Err(e) => {
                    return Err(Error::new(
                        e.exit,
                        format!("{}; nothing was restored", e.msg),
                    ));
                }
            },
            _ => None,
        };
        let mut checks = Vec::new();
        if self.globals {
            checks.push(crate::keep::globals(self, set, m, ids, major, seen)?);
        }
        let mut scratch = self.create_scratch()?;
        let name = scratch.name.clone();
        log::info!(
            "restoring {} into scratch database {name} on {}",
            db.file,
            self.spec.target()
        );
        let start = Instant::now();
        let input = match db.format {
            DumpFormat::Plain => Input::Sql,
            DumpFormat::Custom => Input::Archive,
        };
        let source = Source {
            set,
            entry,
            seen: seen.get(&db.file),
        };
        let restored = match (&psql, parallel) {
            (Some(psql), _) => {
                let cmd = self.restore_command(&psql.path, DumpFormat::Plain, &name);
                self.feed_script(&tool.path, cmd, &source, ids).map(|_| 1)
            }
            (None, Some(p)) => self.restore_parallel(&tool.path, &name, &source, ids, p),
            (None, None) => {
                let cmd = self.restore_command(&tool.path, db.format, &name);
                self.feed(cmd, tool_name, &source, ids, input).map(|_| 1)
            }
        };
        let secs = opskit::record::secs(start.elapsed());
        if self.interrupted.load(Ordering::SeqCst) {
            drop(scratch);
            return Err(Error::failure(format!(
                "interrupted during the restore; database {name} dropped"
            )));
        }
        match restored {
            Ok(jobs) => checks.push(Check::pass(
                Name::Restore,
                Some(&db.file),
                format!(
                    "restored in {secs:.3}s with {tool_name}{}",
                    if jobs > 1 {
                        format!(" --jobs {jobs}")
                    } else {
                        String::new()
                    }
                ),
            )),
            Err(msg) => {
                checks.push(Check::fail(Name::Restore, Some(&db.file), msg));
                return Ok((checks, Some(secs)));
            }
        }
        self.check_restored(set, m, ids, &name, seen, &mut checks);
        scratch.keep = self.keep_as.is_some() && checks.iter().all(|c| c.ok);
        drop(scratch);
        Ok((checks, Some(secs)))
    }

    /// A new empty database to restore into (`--keep-as NAME`, or a name of
    /// this process and time), dropped again unless kept.
    fn create_scratch(&self) -> Result<Scratch<'_>> {
        let name = self.keep_as.clone().unwrap_or_else(|| {
            format!(
                "opskit_verify_{}_{}",
                std::process::id(),
                chrono::Utc::now().format("%Y%m%d%H%M%S%3f")
            )
        });
        let sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&name));
        self.spec.connect()?.batch_execute(&sql).map_err(|e| {
            Error::failure(format!(
                "creating scratch database {name}: {}",
                describe_pg_error(&e)
            ))
        })?;
        Ok(Scratch {
            spec: &self.spec,
            name,
            keep: false,
        })
    }

    /// psql (a plain dump: one transaction, stop at the first error) or
    /// pg_restore (a custom dump) into database `name`.
    fn restore_command(&self, tool: &Path, format: DumpFormat, name: &str) -> Command {
        let mut cmd = Command::new(tool);
        self.spec.with_dbname(name).configure_child(&mut cmd);
        // Killed (kill -9, the OOM killer), this run takes the restore
        // with it: pg_restore stops its workers on SIGTERM.
        opskit::sys::end_with_parent(&mut cmd, opskit::sys::SIGTERM);
        if format == DumpFormat::Plain {
            cmd.args([
                "-X",
                "--quiet",
                "--set",
                "ON_ERROR_STOP=1",
                "--single-transaction",
                "--output=/dev/null",
            ]);
        } else {
            cmd.args(["--no-owner", "--exit-on-error"]);
        }
        cmd.arg(format!("--dbname={name}"));
        cmd
    }

    /// After a restore that succeeded: the row counts against the
    /// manifest's (sealed ones read with the identity), then the files
    /// archives unpacked with `--files-into` when all is well so far.
    fn check_restored(
        &self,
        set: &Path,
        m: &Manifest,
        ids: Option<&Identities>,
        name: &str,
        seen: &Seen,
        checks: &mut Vec<Check>,
    ) {
        let expected = match (&m.encryption, ids, &m.database) {
            (Some(_), Some(ids), _) => crate::sealed::row_counts(set, m, ids),
            (_, _, Some(db)) => Ok(db.row_counts.clone()),
            (_, _, None) => Ok(None),
        };
        match expected {
            Ok(rc) => checks.extend(self.compare(name, rc.as_ref())),
            Err(e) => checks.push(Check::fail(Name::RowCounts, None, e)),
        }
        if let Some(dir) = &self.files_into
            && checks.iter().all(|c| c.ok)
        {
            checks.extend(crate::keep::files(set, m, ids, dir, seen));
        }
    }

    /// Run `cmd` (psql or pg_restore) with the set file's content on its
    /// stdin: see [`Target::feed`]. For the globals.
    pub(crate) fn feed_sql(
        &self,
        cmd: Command,
        tool: &'static str,
        source: &Source,
        ids: Option<&Identities>,
        input: Input,
    ) -> std::result::Result<Vec<String>, String> {
        self.feed(cmd, tool, source, ids, input)
    }

    /// Stream the (decrypted, decompressed) set file into the restore
    /// tool's stdin; SQL text (`sql`) under psql's `\\restrict` with a key
    /// of this run, so no meta-command in it runs. The file must be the one
    /// verification read, unchanged ([`Source`]), and its sha256 is checked
    /// again as it streams.
    fn feed(
        &self,
        mut cmd: Command,
        tool: &'static str,
        source: &Source,
        ids: Option<&Identities>,
        input: Input,
    ) -> std::result::Result<Vec<String>, String> {
        let path = source.path();
        let mut reader = source.open(ids)?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| format!("cannot run {tool}: {e}"))?;
        let mut guard = ChildGuard(Some(child));
        let tail = StderrTail::start(guard.child(), tool);
        let mut stdin = guard.child().stdin.take().expect("piped");
        let broken = {
            let src = opskit::codec::content_reader(source.entry, &mut reader)
                .map_err(|e| format!("{}: cannot start decompressing: {e}", path.display()))?;
            let buffered = |r| std::io::BufReader::with_capacity(256 * 1024, r);
            let mut src: Box<dyn Read> = match input {
                Input::Archive => src,
                Input::Sql => Box::new(Restricted::new(buffered(src))),
                Input::Globals(existing, skipped) => {
                    let mut roles = crate::roles::SkipExisting::new(buffered(src), existing);
                    roles.skipped = skipped;
                    Box::new(Restricted::new(buffered(Box::new(roles))))
                }
            };
            self.pump(&mut src, &mut stdin, &path)?
        };
        drop(stdin);
        let status = guard
            .wait()
            .map_err(|e| format!("waiting for {tool}: {e}"))?;
        let lines = tail.lines();
        if broken.is_none() {
            reader
                .finish(source.entry)
                .map_err(|e| format!("{}: changed while it was restored: {e}", path.display()))?;
        }
        if let Some(b) = broken {
            return Err(b);
        }
        if !status.success() {
            return Err(tool_failed(tool, &lines));
        }
        Ok(lines)
    }

    /// The archive into `pg_restore --file=-`, its script into `psql`
    /// ([`crate::older`]); as [`Target::feed`] otherwise.
    fn feed_script(
        &self,
        pg_restore: &Path,
        psql: Command,
        source: &Source,
        ids: Option<&Identities>,
    ) -> std::result::Result<(), String> {
        let path = source.path();
        let mut reader = source.open(ids)?;
        let (pipeline, mut stdin) = crate::older::Pipeline::start(pg_restore, psql)?;
        let broken = {
            let mut src = opskit::codec::content_reader(source.entry, &mut reader)
                .map_err(|e| format!("{}: cannot start decompressing: {e}", path.display()))?;
            self.pump(&mut src, &mut stdin, &path)?
        };
        drop(stdin);
        if let Some(b) = broken {
            return Err(b);
        }
        // A tool that stopped early says why; only a whole read is checked.
        pipeline.finish()?;
        reader
            .finish(source.entry)
            .map_err(|e| format!("{}: changed while it was restored: {e}", path.display()))
    }

    /// `pg_restore --jobs` from a copy of the dump ([`crate::seekable`]),
    /// removed again whatever happens; an interruption stops it.
    fn restore_parallel(
        &self,
        tool: &Path,
        name: &str,
        source: &Source,
        ids: Option<&Identities>,
        p: &Parallel,
    ) -> std::result::Result<usize, String> {
        let copy = match crate::seekable::copy(source, ids, &p.dir, &self.interrupted) {
            Ok(copy) => copy,
            // Not asked for, and nothing restored yet: stream instead.
            Err(CopyFailed::Scratch(msg)) if !p.asked => {
                log::warn!("{msg}; streaming the dump with one job instead");
                let cmd = self.restore_command(tool, DumpFormat::Custom, name);
                return self
                    .feed(cmd, "pg_restore", source, ids, Input::Archive)
                    .map(|_| 1);
            }
            Err(e) => return Err(e.into()),
        };
        // The copy this run wrote, as pg_restore's standard input: it and
        // its workers open /dev/stdin, that very file, whatever is renamed
        // in the scratch directory meanwhile.
        let stdin = copy
            .file
            .try_clone()
            .map_err(|e| format!("the restore copy: {e}"))?;
        let mut cmd = self.restore_command(tool, DumpFormat::Custom, name);
        cmd.arg(format!("--jobs={}", p.jobs))
            .arg("/dev/stdin")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run pg_restore: {e}"))?;
        let mut guard = ChildGuard(Some(child));
        let tail = StderrTail::start(guard.child(), "pg_restore");
        let progress = Progress::running(format!("pg_restore --jobs {} into {name}", p.jobs));
        loop {
            progress.tick();
            if self.interrupted.load(Ordering::SeqCst) {
                // pg_restore stops its workers and cancels their queries
                // on SIGTERM; the guard kills what is left.
                let _ = opskit::sys::terminate(guard.child().id());
                for _ in 0..50 {
                    if matches!(guard.child().try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                return Err("interrupted".into());
            }
            match guard.child().try_wait() {
                Ok(Some(_)) => break,
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(100)),
                Err(e) => return Err(format!("waiting for pg_restore: {e}")),
            }
        }
        let status = guard
            .wait()
            .map_err(|e| format!("waiting for pg_restore: {e}"))?;
        drop(copy);
        if status.success() {
            progress.finish();
            return Ok(p.jobs);
        }
        Err(tool_failed(
            &format!("pg_restore --jobs {}", p.jobs),
            &tail.lines(),
        ))
    }

    /// Copy `src` into the tool's stdin until the end, an interruption or
    /// the tool going away; a read error is returned as the message.
    fn pump(
        &self,
        src: &mut dyn Read,
        stdin: &mut std::process::ChildStdin,
        path: &Path,
    ) -> std::result::Result<Option<String>, String> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            let n = match src.read(&mut buf) {
                Ok(0) => return Ok(None),
                Ok(n) => n,
                Err(e) => return Ok(Some(format!("reading {}: {e}", path.display()))),
            };
            if stdin.write_all(&buf[..n]).is_err() {
                return Ok(None); // the tool stopped; its status says why
            }
        }
    }

    /// Count every table of the restored database (reading each one) and
    /// compare with the manifest's counts.
    fn compare(
        &self,
        name: &str,
        expected: Option<&std::collections::BTreeMap<String, u64>>,
    ) -> Vec<Check> {
        let counted = self.spec.with_dbname(name).connect().and_then(|mut c| {
            table_row_counts(&mut c).map_err(|e| Error::failure(describe_pg_error(&e)))
        });
        let found = match counted {
            Ok(f) => f,
            Err(e) => return vec![Check::fail(Name::TablesReadable, None, e.msg)],
        };
        let mut out = vec![Check::pass(
            Name::TablesReadable,
            None,
            format!(
                "{} tables read, {} rows",
                found.len(),
                found.values().sum::<u64>()
            ),
        )];
        let Some(expected) = expected else {
            out.push(Check::pass(
                Name::RowCounts,
                None,
                "no counts in the manifest (pgbackup --row-counts records them)",
            ));
            return out;
        };
        let mut mismatches = Vec::new();
        for (table, want) in expected {
            match found.get(table) {
                Some(got) if got == want => {}
                Some(got) => mismatches.push(format!("{table}: expected {want}, found {got}")),
                None => mismatches.push(format!("{table}: expected {want}, found no table")),
            }
        }
        for table in found.keys().filter(|t| !expected.contains_key(*t)) {
            mismatches.push(format!("{table}: not in the manifest"));
        }
        out.push(if mismatches.is_empty() {
            Check::pass(
                Name::RowCounts,
                None,
                format!("{} tables match the manifest", expected.len()),
            )
        } else {
            Check::fail(Name::RowCounts, None, mismatches.join("; "))
        });
        out
    }
}
