//! The database side: dbmate's `schema_migrations` table (kept exactly as
//! dbmate keeps it), opskit's companion table and log, the migration lock,
//! and running sections.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use opskit::migrations::Applied;
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::{Error, Result};
use postgres::Client;

use crate::parse::{Migration, Section};
use crate::pg;
use crate::split;

/// The advisory lock (two int4 keys: classid, objid).
pub const LOCK_KEYS: (i32, i32) = (0x6f70_736b, 0x6d69_6772); // "opsk", "migr"

// client_min_messages: "relation already exists, skipping" on every run is noise.
const SETUP: &str = "\
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS schema_migrations (version varchar PRIMARY KEY);
CREATE TABLE IF NOT EXISTS opskit_migrations (
    version varchar PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    duration_ms bigint,
    applied_by text NOT NULL DEFAULT current_user,
    dirty boolean NOT NULL DEFAULT false,
    failed_statement int,
    error text,
    baseline boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS opskit_migrations_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    version varchar,
    action text NOT NULL,
    ok boolean NOT NULL,
    detail text,
    by_user text NOT NULL DEFAULT current_user,
    host text);
RESET client_min_messages;";

/// SQL literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub fn hostname() -> String {
    opskit::sys::hostname().unwrap_or_else(|| "unknown".into())
}

/// Timeouts for a migration session.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub lock_retries: u32,
}

impl Timeouts {
    fn set(&self, local: bool) -> String {
        let scope = if local { "SET LOCAL" } else { "SET" };
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis()).unwrap_or(0);
        format!(
            "{scope} lock_timeout = {};\n{scope} statement_timeout = {};\n",
            ms(self.lock_timeout),
            ms(self.statement_timeout)
        )
    }
}

/// A connection to the database being migrated.
pub struct Db {
    pub client: Client,
    pub spec: ConnSpec,
    host: String,
}

impl Db {
    pub fn connect(spec: &ConnSpec) -> Result<Db> {
        let host = hostname();
        let mut s = spec.clone();
        s.application_name = Some(format!("opskit-migrate@{host}"));
        Ok(Db {
            client: s.connect()?,
            spec: s,
            host,
        })
    }

    /// Create the tables if missing.
    pub fn setup(&mut self) -> Result<()> {
        self.client
            .batch_execute(SETUP)
            .map_err(pg("creating migration tables"))
    }

    /// Every version the database knows, touching nothing.
    pub fn applied(&mut self) -> Result<BTreeMap<String, Applied>> {
        opskit::migrations::applied(&mut self.client)
    }

    /// Take the migration lock, polling `pg_try_advisory_lock` (a blocking
    /// `pg_advisory_lock` would deadlock with a `CREATE INDEX CONCURRENTLY`
    /// in the holder, which waits for every open transaction).
    pub fn lock(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        let mut said = false;
        loop {
            let got: bool = self
                .client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&LOCK_KEYS.0, &LOCK_KEYS.1],
                )
                .map_err(pg("taking the migration lock"))?
                .get(0);
            if got {
                return Ok(());
            }
            let who = self.holder().unwrap_or_else(|| "another session".into());
            if Instant::now() >= deadline {
                return Err(Error::failure(format!(
                    "another migrate holds the migration lock on {} ({who}); gave up after {} (see --lock-wait)",
                    self.spec.dbname,
                    opskit::units::format_duration(wait)
                )));
            }
            if !said {
                log::info!("waiting for the migration lock held by {who}");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn holder(&mut self) -> Option<String> {
        let row = self
            .client
            .query_opt(
                "SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local'), \
                 coalesce(a.usename::text, ''), to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                 FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1::int::oid AND l.objid = $2::int::oid \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&LOCK_KEYS.0, &LOCK_KEYS.1],
            )
            .ok()??;
        let pid: i32 = row.get(0);
        Some(format!(
            "pid {pid}, {} from {} as {}, connected since {}",
            row.get::<_, String>(1),
            row.get::<_, String>(2),
            row.get::<_, String>(3),
            row.get::<_, String>(4)
        ))
    }

    pub fn log(&mut self, version: Option<&str>, action: &str, ok: bool, detail: &str) {
        let sql = "INSERT INTO opskit_migrations_log (version, action, ok, detail, host) VALUES ($1, $2, $3, $4, $5)";
        if let Err(e) = self
            .client
            .execute(sql, &[&version, &action, &ok, &detail, &self.host])
        {
            log::warn!(
                "could not write the migration log: {}",
                describe_pg_error(&e)
            );
        }
    }

    /// Run one migration up (or down), with its bookkeeping, retrying when
    /// `lock_timeout` gives up. Returns the number of statements.
    pub fn run(
        &mut self,
        m: &Migration,
        up: bool,
        t: &Timeouts,
    ) -> std::result::Result<usize, Failure> {
        let section = if up {
            &m.up
        } else {
            m.down.as_ref().expect("checked before")
        };
        let mut attempt = 0;
        loop {
            let res = if section.transaction {
                self.run_in_transaction(m, section, up, t)
            } else {
                self.run_statements(m, section, up, t)
            };
            match res {
                Err(f) if f.lock_timeout && attempt < t.lock_retries => {
                    attempt += 1;
                    let pause = Duration::from_secs(u64::from(attempt).min(10));
                    log::warn!(
                        "{}: lock_timeout reached; retry {attempt}/{} in {}s",
                        m.version,
                        t.lock_retries,
                        pause.as_secs()
                    );
                    std::thread::sleep(pause);
                }
                other => return other,
            }
        }
    }

    /// The bookkeeping of a successful run, the log row included, so a
    /// migration costs one round trip. Up records the version and clears
    /// any dirty state; down removes both rows.
    fn bookkeeping(&self, m: &Migration, up: bool) -> String {
        let v = lit(&m.version);
        let log = format!(
            "INSERT INTO opskit_migrations_log (version, action, ok, detail, host) VALUES ({v}, {}, true, '', {});\n",
            lit(if up { "up" } else { "down" }),
            lit(&self.host)
        );
        log + &if up {
            format!(
                "INSERT INTO schema_migrations (version) VALUES ({v});\n\
                 INSERT INTO opskit_migrations (version, name, checksum, duration_ms) \
                 VALUES ({v}, {}, {}, (extract(epoch FROM clock_timestamp() - now()) * 1000)::bigint) \
                 ON CONFLICT (version) DO UPDATE SET dirty = false, failed_statement = NULL, error = NULL, name = excluded.name, checksum = excluded.checksum, \
                 applied_at = now(), applied_by = current_user, duration_ms = excluded.duration_ms;\n",
                lit(&m.name),
                lit(&m.checksum)
            )
        } else {
            format!(
                "DELETE FROM schema_migrations WHERE version = {v};\nDELETE FROM opskit_migrations WHERE version = {v};\n"
            )
        }
    }

    /// The section and its bookkeeping in one transaction. The section
    /// goes alone (as dbmate sends it), so a server error's position and
    /// quoted text are the section's, never migrate's own SQL; the
    /// transaction is open before it is sent, so the ROLLBACK after a
    /// failure (a syntax error fails the whole message) always has one.
    fn run_in_transaction(
        &mut self,
        m: &Migration,
        s: &Section,
        up: bool,
        t: &Timeouts,
    ) -> std::result::Result<usize, Failure> {
        let begin = format!("BEGIN;\n{}", t.set(true));
        let fail = |db: &mut Self, e: &postgres::Error, offset| {
            let _ = db.client.batch_execute("ROLLBACK");
            Failure::new(m, s, e, offset, None)
        };
        self.client
            .batch_execute(&begin)
            .map_err(|e| fail(self, &e, None))?;
        self.client
            .batch_execute(&s.sql)
            .map_err(|e| fail(self, &e, position(&e)))?;
        self.client
            .batch_execute(&self.bookkeeping(m, up))
            .map_err(|e| fail(self, &e, None))?;
        // A COMMIT that fails (a deferred constraint) has ended the
        // transaction: nothing to roll back.
        self.client
            .batch_execute("COMMIT")
            .map_err(|e| Failure::new(m, s, &e, None, None))?;
        Ok(split::statements(&s.sql).len())
    }

    /// `transaction:false`: each statement on its own; the migration is
    /// marked dirty until every statement has run.
    fn run_statements(
        &mut self,
        m: &Migration,
        s: &Section,
        up: bool,
        t: &Timeouts,
    ) -> std::result::Result<usize, Failure> {
        let stmts = split::statements(&s.sql);
        let mark = format!(
            "INSERT INTO opskit_migrations (version, name, checksum, dirty) VALUES ({}, {}, {}, true) \
             ON CONFLICT (version) DO UPDATE SET dirty = true, failed_statement = NULL, error = NULL;\n{}",
            lit(&m.version),
            lit(&m.name),
            lit(&m.checksum),
            t.set(false)
        );
        self.client
            .batch_execute(&mark)
            .map_err(|e| Failure::new(m, s, &e, None, None))?;
        for (i, st) in stmts.iter().enumerate() {
            if let Err(e) = self.client.batch_execute(st.text) {
                let offset = position(&e);
                let f = Failure::new(m, s, &e, None, Some((i, st, offset)));
                let _ = self.client.execute(
                    "UPDATE opskit_migrations SET failed_statement = $2, error = $3 WHERE version = $1",
                    &[&m.version, &((i + 1) as i32), &f.message],
                );
                let _ = self
                    .client
                    .batch_execute("RESET lock_timeout; RESET statement_timeout;");
                return Err(f);
            }
        }
        let done = format!(
            "BEGIN;\n{}COMMIT;\nRESET lock_timeout; RESET statement_timeout;",
            self.bookkeeping(m, up)
        );
        self.client
            .batch_execute(&done)
            .map_err(|e| Failure::new(m, s, &e, None, None))?;
        Ok(stmts.len())
    }
}

/// The 1-based character position PostgreSQL reported, as a 0-based offset.
fn position(e: &postgres::Error) -> Option<usize> {
    match e.as_db_error()?.position()? {
        postgres::error::ErrorPosition::Original(p) => Some((*p as usize).saturating_sub(1)),
        postgres::error::ErrorPosition::Internal { .. } => None,
    }
}

/// A migration that failed, described for the operator.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub lock_timeout: bool,
}

impl Failure {
    /// `offset`: character offset into the section's SQL; `stmt`: for
    /// transaction:false, the statement index, piece and offset in it.
    fn new(
        m: &Migration,
        s: &Section,
        e: &postgres::Error,
        offset: Option<usize>,
        stmt: Option<(usize, &split::Piece, Option<usize>)>,
    ) -> Self {
        let lock_timeout = e.as_db_error().is_some_and(|d| d.code().code() == "55P03");
        let (line, which) = match stmt {
            Some((i, piece, off)) => {
                let within = off.map(|o| piece.text.chars().take(o).filter(|c| *c == '\n').count());
                let line = s.first_line
                    + within
                        .map(|w| piece.line + w)
                        .unwrap_or_else(|| piece.first_code_line());
                (Some(line), format!(" (statement {} of the section)", i + 1))
            }
            None => match offset {
                Some(o) if o <= s.sql.chars().count() => {
                    let line = s.first_line + s.sql.chars().take(o).filter(|c| *c == '\n').count();
                    let byte = s
                        .sql
                        .char_indices()
                        .nth(o)
                        .map(|(b, _)| b)
                        .unwrap_or(s.sql.len());
                    let idx = split::statements(&s.sql)
                        .iter()
                        .position(|p| {
                            let start = p.text.as_ptr() as usize - s.sql.as_ptr() as usize;
                            byte >= start && byte < start + p.text.len()
                        })
                        .map(|i| format!(" (statement {} of the section)", i + 1))
                        .unwrap_or_default();
                    (Some(line), idx)
                }
                _ => (None, String::new()),
            },
        };
        let place = match line {
            Some(l) => format!("{}:{l}", m.file.display()),
            None => m.file.display().to_string(),
        };
        Failure {
            message: format!("{place}: {}{which}", one_line(e)),
            lock_timeout,
        }
    }
}

/// The longest quote of the SQL kept from a server's message.
const QUOTE_MAX: usize = 60;

/// The server's message on one line, its quote of the SQL (`at or near
/// "..."`) cut short: an unterminated `$$` quotes the rest of the section.
fn one_line(e: &postgres::Error) -> String {
    flatten(&describe_pg_error(e))
}

fn flatten(text: &str) -> String {
    let flat = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    const NEAR: &str = " at or near \"";
    let (Some(a), Some(b)) = (flat.find(NEAR), flat.rfind("\" (SQLSTATE")) else {
        return flat;
    };
    let start = a + NEAR.len();
    match flat.get(start..b) {
        Some(quote) if quote.chars().count() > QUOTE_MAX => {
            let cut: String = quote.chars().take(QUOTE_MAX).collect();
            format!("{}{cut}…{}", &flat[..start], &flat[b..])
        }
        _ => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_message_is_one_line_with_its_quote_cut_short() {
        let long = format!(
            "unterminated dollar-quoted string at or near \"$$\nbegin\n  {};\nend;\" (SQLSTATE 42601)",
            "x".repeat(200)
        );
        let got = flatten(&long);
        assert!(!got.contains('\n'), "{got}");
        assert!(
            got.starts_with("unterminated dollar-quoted string at or near \"$$ begin xx"),
            "{got}"
        );
        assert!(got.ends_with("x…\" (SQLSTATE 42601)"), "{got}");
        let short = "syntax error at or near \"selec\" (SQLSTATE 42601)";
        assert_eq!(flatten(short), short);
        assert_eq!(flatten("a\n  b"), "a b");
    }
}
