//! The restore test: restore the set's dump with the stock tools into a
//! scratch database of a unique name, compare row counts with the manifest,
//! read every table, and drop the scratch database again, also when the
//! restore fails or the run is interrupted.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use opskit::backupset::{DumpFormat, Manifest};
use opskit::crypt::Identities;
use opskit::pgcatalog::{quote_ident, table_row_counts};
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::pgtools::{self, ChildGuard, StderrTail};
use opskit::{Error, Result};

use crate::checks::{Check, Name};

/// Where restore tests go.
pub struct Target {
    /// The server, connected through its maintenance database (the URL's).
    pub spec: ConnSpec,
    pub bindir: Option<std::path::PathBuf>,
    pub interrupted: Arc<AtomicBool>,
}

/// A scratch database that is dropped when this is dropped.
struct Scratch<'a> {
    spec: &'a ConnSpec,
    name: String,
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
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
        let name = format!(
            "opskit_verify_{}_{}",
            std::process::id(),
            chrono::Utc::now().format("%Y%m%d%H%M%S%3f")
        );
        let mut admin = self.spec.connect()?;
        admin
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(&name)
            ))
            .map_err(|e| {
                Error::failure(format!(
                    "creating scratch database {name}: {}",
                    describe_pg_error(&e)
                ))
            })?;
        drop(admin);
        let scratch = Scratch {
            spec: &self.spec,
            name: name.clone(),
        };
        log::info!(
            "restoring {} into scratch database {name} on {}",
            db.file,
            self.spec.target()
        );
        let start = Instant::now();
        let mut cmd = Command::new(&tool.path);
        self.spec.with_dbname(&name).configure_child(&mut cmd);
        if db.format == DumpFormat::Plain {
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
        let restored = self.feed(cmd, tool_name, &set.join(&db.file), ids);
        let secs = opskit::record::secs(start.elapsed());
        if self.interrupted.load(Ordering::SeqCst) {
            drop(scratch);
            return Err(Error::failure(
                "interrupted during the restore test; scratch database dropped",
            ));
        }
        let mut checks = Vec::new();
        match restored {
            Ok(()) => checks.push(Check::pass(
                Name::Restore,
                Some(&db.file),
                format!("restored in {secs:.3}s with {tool_name}"),
            )),
            Err(msg) => {
                checks.push(Check::fail(Name::Restore, Some(&db.file), msg));
                return Ok((checks, Some(secs)));
            }
        }
        let expected = match (&m.encryption, ids) {
            (Some(_), Some(ids)) => crate::sealed::row_counts(set, m, ids),
            _ => Ok(db.row_counts.clone()),
        };
        match expected {
            Ok(rc) => checks.extend(self.compare(&name, rc.as_ref())),
            Err(e) => checks.push(Check::fail(Name::RowCounts, None, e)),
        }
        drop(scratch);
        Ok((checks, Some(secs)))
    }

    /// Stream the (decompressed) dump into the restore tool's stdin.
    fn feed(
        &self,
        mut cmd: Command,
        tool: &'static str,
        file: &Path,
        ids: Option<&Identities>,
    ) -> std::result::Result<(), String> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| format!("cannot run {tool}: {e}"))?;
        let mut guard = ChildGuard(Some(child));
        let tail = StderrTail::start(guard.child(), tool);
        let fh = File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let name = file.to_string_lossy();
        let codec = opskit::backupset::Codec::of_name(&name);
        let raw: Box<dyn Read> = match ids.filter(|_| name.ends_with(opskit::crypt::EXT)) {
            // Decrypted on a thread of its own, beside the decompression.
            Some(ids) => Box::new(opskit::crypt::Decrypting::spawn(fh, ids.clone())),
            None => Box::new(fh),
        };
        let mut src = opskit::codec::reader(codec, raw)
            .map_err(|e| format!("{}: cannot start decompressing: {e}", file.display()))?;
        let mut stdin = guard.child().stdin.take().expect("piped");
        let mut buf = vec![0u8; 256 * 1024];
        let mut broken = None;
        loop {
            if self.interrupted.load(Ordering::SeqCst) {
                return Err("interrupted".into());
            }
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    broken = Some(format!("reading {}: {e}", file.display()));
                    break;
                }
            };
            if stdin.write_all(&buf[..n]).is_err() {
                break; // the tool stopped; its status says why
            }
        }
        drop(stdin);
        let status = guard
            .wait()
            .map_err(|e| format!("waiting for {tool}: {e}"))?;
        let msg = tail.summary();
        if let Some(b) = broken {
            return Err(b);
        }
        if !status.success() {
            return Err(format!(
                "{tool} failed: {}",
                if msg.is_empty() {
                    "no message".into()
                } else {
                    msg
                }
            ));
        }
        Ok(())
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
