//! Restoring a custom-format dump into a server older than pg_restore.
//!
//! pg_restore 17 and later start every restore with
//! `SET transaction_timeout = 0;`, a setting servers before 17 do not know:
//! a dump written by pg_dump 18 (the newest client tools, as on a machine
//! with PGDG's packages) of a 16 server cannot be restored into a 16
//! server with `pg_restore --dbname`, and pg_restore 16 cannot read
//! pg_dump 18's archive. For such a target pg_restore writes the script
//! (`--file=-`), that one line is left out, and psql runs the rest under
//! `\restrict` with a key of this run, in one transaction.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use opskit::pgconn::ConnSpec;
use opskit::pgtools::{self, ChildGuard, StderrTail};
use opskit::restrict::Restricted;
use opskit::{Error, Result};

/// The line pg_restore 17+ writes that servers before 17 refuse.
const TRANSACTION_TIMEOUT: &[u8] = b"SET transaction_timeout = 0;\n";

/// The target server's major version.
pub(crate) fn server_major(spec: &ConnSpec) -> Result<u32> {
    let mut c = spec.connect()?;
    let row = c
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .map_err(|e| Error::failure(opskit::pgconn::describe_pg_error(&e)))?;
    Ok(pgtools::major_of_num(row.get::<_, i32>(0) as u32))
}

/// Whether pg_restore `tool_major` restores into a server of
/// `server_major` only through a script.
pub(crate) fn needs_script(tool_major: u32, server_major: u32) -> bool {
    tool_major >= 17 && server_major < 17
}

/// SQL lines, without pg_restore's `SET transaction_timeout = 0;` in the
/// script's opening block of settings (comments, `SET`, `SELECT
/// pg_catalog.set_config`, `\restrict`): never a line of data further on.
pub(crate) struct WithoutTimeout<R> {
    inner: R,
    line: Vec<u8>,
    pos: usize,
    header: bool,
}

impl<R: BufRead> WithoutTimeout<R> {
    pub(crate) fn new(inner: R) -> Self {
        WithoutTimeout {
            inner,
            line: Vec::new(),
            pos: 0,
            header: true,
        }
    }
}

impl<R: BufRead> Read for WithoutTimeout<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.line.len() {
            self.line.clear();
            self.pos = 0;
            if self.inner.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(0);
            }
            if self.header && self.line == TRANSACTION_TIMEOUT {
                self.line.clear();
            } else if self.header {
                let l = &self.line;
                self.header = l == b"\n"
                    || l.starts_with(b"--")
                    || l.starts_with(b"SET ")
                    || l.starts_with(b"SELECT pg_catalog.set_config(")
                    || l.starts_with(b"\\restrict ");
            }
        }
        let n = buf.len().min(self.line.len() - self.pos);
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `pg_restore --file=-` reading the archive on its stdin, its script
/// filtered into `psql` (already set up for the target database): the
/// two children, and a thread that copies between them. `feed` writes the
/// archive into the returned stdin; then [`Pipeline::finish`].
pub(crate) struct Pipeline {
    restore: ChildGuard,
    psql: ChildGuard,
    restore_err: StderrTail,
    psql_err: StderrTail,
    copier: std::thread::JoinHandle<std::io::Result<u64>>,
}

impl Pipeline {
    pub(crate) fn start(
        pg_restore: &Path,
        mut psql: Command,
    ) -> std::result::Result<(Pipeline, std::process::ChildStdin), String> {
        let mut restore = Command::new(pg_restore);
        restore
            .args(["--no-owner", "--file=-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut restore = ChildGuard(Some(
            restore
                .spawn()
                .map_err(|e| format!("cannot run pg_restore: {e}"))?,
        ));
        psql.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut psql = ChildGuard(Some(
            psql.spawn().map_err(|e| format!("cannot run psql: {e}"))?,
        ));
        let restore_err = StderrTail::start(restore.child(), "pg_restore");
        let psql_err = StderrTail::start(psql.child(), "psql");
        let script = restore.child().stdout.take().expect("piped");
        let mut into = psql.child().stdin.take().expect("piped");
        let copier = std::thread::spawn(move || {
            let lines = WithoutTimeout::new(BufReader::with_capacity(256 * 1024, script));
            let mut sql = Restricted::new(BufReader::with_capacity(256 * 1024, lines));
            std::io::copy(&mut sql, &mut into)
        });
        let stdin = restore.child().stdin.take().expect("piped");
        Ok((
            Pipeline {
                restore,
                psql,
                restore_err,
                psql_err,
                copier,
            },
            stdin,
        ))
    }

    /// Wait for both; the first failure, named by its tool.
    pub(crate) fn finish(self) -> std::result::Result<(), String> {
        let restored = self.restore.wait();
        let copied = self.copier.join();
        let ran = self.psql.wait();
        let (restore_lines, psql_lines) = (self.restore_err.lines(), self.psql_err.lines());
        let failed = crate::restore::tool_failed;
        match restored {
            Ok(s) if s.success() => {}
            Ok(_) => return Err(failed("pg_restore", &restore_lines)),
            Err(e) => return Err(format!("waiting for pg_restore: {e}")),
        }
        match ran {
            Ok(s) if s.success() => {}
            Ok(_) => return Err(failed("psql", &psql_lines)),
            Err(e) => return Err(format!("waiting for psql: {e}")),
        }
        match copied {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("passing pg_restore's script to psql: {e}")),
            Err(_) => Err("passing pg_restore's script to psql: the thread panicked".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_line_is_left_out() {
        let head = "--\n\\restrict k\nSET statement_timeout = 0;\nSET transaction_timeout = 0;\nSET lock_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n";
        // After the settings, the same text as data stays.
        let rest = "CREATE TABLE t (a text);\nCOPY t (a) FROM stdin;\nSET transaction_timeout = 0;\n\\.\nSET transaction_timeout = 0;x\n";
        let mut out = String::new();
        WithoutTimeout::new(format!("{head}{rest}").as_bytes())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(
            out,
            format!(
                "{}{rest}",
                head.replace("SET transaction_timeout = 0;\n", "")
            )
        );
        assert!(needs_script(18, 16) && needs_script(17, 14));
        assert!(!needs_script(18, 17) && !needs_script(16, 14));
    }
}
