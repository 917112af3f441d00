//! PostgreSQL connection settings, resolved the way libpq resolves them.
//!
//! Accepted: `postgres://` and `postgresql://` URLs, SQLAlchemy's
//! `postgresql+<driver>://` forms (the driver is dropped), `DATABASE_URL`,
//! and libpq's `PG*` variables, which fill whatever the URL leaves out, as
//! they do for libpq. The `postgres` crate reads none of these itself.
//!
//! TLS (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `channel_binding`)
//! has libpq's meaning for opskit's own connections and reaches the
//! `pg_dump`/`psql` children unchanged; see [`tls`].
//!
//! The password never leaves this module except in the environment of a
//! child (`PGPASSWORD`) and in the connection itself: [`ConnSpec::redacted`]
//! and `Debug` show `***`. [`redact`] does the same for a URL or conninfo
//! string as the user gave it (any scheme: tools show S3 endpoints, health
//! check targets and webhooks through it), finding the password as libpq
//! does, so a `?` or `#` in it is hidden with it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;

mod connect;
mod handshake;
mod passfile;
pub mod tls;
mod url;

pub use tls::{ChannelBinding, TlsInfo, TlsSettings};

use url::{Partial, parse_url};
pub use url::{redact, redact_urls_in};

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A Unix-domain socket directory.
    Socket(PathBuf),
}

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(Error::usage(format!(
                    "invalid sslmode '{s}' (use disable, allow, prefer, require, verify-ca or verify-full)"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Fully resolved connection settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnSpec {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub tls: TlsSettings,
    pub connect_timeout: Duration,
    pub application_name: Option<String>,
    /// Settings sent at connection start (libpq's `options`, PGOPTIONS:
    /// `-c name=value …`); they win over per-role and per-database ones.
    pub options: Option<String>,
}

/// The connect timeout when neither the URL nor `PGCONNECT_TIMEOUT` set one
/// (libpq waits forever; an operations tool must not).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Debian's libpq looks for the server's socket by default.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// The effective user's login name (libpq's default user).
fn os_user() -> String {
    crate::sys::user_name(crate::sys::euid())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into())
}

impl ConnSpec {
    /// Resolve from an explicit `--db` value, else `DATABASE_URL`, else the
    /// `PG*` variables alone.
    pub fn resolve(db: Option<&str>) -> Result<Self, Error> {
        Self::resolve_with(db, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// [`ConnSpec::resolve`] with the environment given (tests).
    pub fn resolve_with(
        db: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let url = db.map(str::to_string).or_else(|| env("DATABASE_URL"));
        let p = match url.as_deref() {
            Some(u) => parse_url(u.trim())?,
            None => Partial::default(),
        };
        let host = p.host.or_else(|| env("PGHOST"));
        let host = match host {
            Some(h) if h.starts_with('/') => Host::Socket(PathBuf::from(h)),
            Some(h) => Host::Tcp(h),
            None => Host::Socket(PathBuf::from(DEFAULT_SOCKET_DIR)),
        };
        let port =
            match p.port.or_else(|| env("PGPORT")) {
                Some(s) => s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Error::usage(format!("invalid port '{s}' in database settings"))
                })?,
                None => 5432,
            };
        let user = p.user.or_else(|| env("PGUSER")).unwrap_or_else(os_user);
        let dbname = p
            .dbname
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        let tls = TlsSettings {
            sslrootcert: p.sslrootcert.or_else(|| env("PGSSLROOTCERT")),
            sslcert: p.sslcert.or_else(|| env("PGSSLCERT")).map(PathBuf::from),
            sslkey: p.sslkey.or_else(|| env("PGSSLKEY")).map(PathBuf::from),
            channel_binding: match p.channel_binding.or_else(|| env("PGCHANNELBINDING")) {
                Some(s) => ChannelBinding::parse(&s)?,
                None => ChannelBinding::Prefer,
            },
            home: env("HOME")
                .map(PathBuf::from)
                .or_else(|| crate::sys::home_dir(crate::sys::euid())),
        };
        let given = match p.sslmode.or_else(|| env("PGSSLMODE")) {
            Some(s) => Some(SslMode::parse(&s)?),
            None => None,
        };
        let sslmode = tls::mode_for(given, tls.sslrootcert.as_deref())?;
        let connect_timeout = match p.connect_timeout.or_else(|| env("PGCONNECT_TIMEOUT")) {
            Some(s) => {
                let secs: u64 = s.trim().parse().map_err(|_| {
                    Error::usage(format!("invalid connect_timeout '{s}' (whole seconds)"))
                })?;
                if secs == 0 {
                    DEFAULT_CONNECT_TIMEOUT
                } else {
                    Duration::from_secs(secs.max(2))
                }
            }
            None => DEFAULT_CONNECT_TIMEOUT,
        };
        let mut spec = ConnSpec {
            host,
            port,
            user,
            password: p.password.or_else(|| env("PGPASSWORD")),
            dbname,
            sslmode,
            tls,
            connect_timeout,
            application_name: p.application_name.or_else(|| env("PGAPPNAME")),
            options: p.options.or_else(|| env("PGOPTIONS")),
        };
        if spec.password.is_none() {
            let passfile = env("PGPASSFILE")
                .map(PathBuf::from)
                .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")));
            if let Some(pf) = passfile {
                spec.password = passfile::lookup(&pf, &spec);
            }
        }
        Ok(spec)
    }

    /// The same server and credentials, another database.
    pub fn with_dbname(&self, dbname: &str) -> Self {
        let mut s = self.clone();
        s.dbname = dbname.to_string();
        s
    }

    /// `host:port`, or the socket file, for messages.
    pub fn target(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Socket(d) => format!("{}/.s.PGSQL.{}", d.display(), self.port),
        }
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let auth = match &self.password {
            Some(_) => format!("{}:***@", enc(&self.user)),
            None => format!("{}@", enc(&self.user)),
        };
        match &self.host {
            Host::Tcp(h) => {
                let h = if h.contains(':') {
                    format!("[{h}]")
                } else {
                    h.clone()
                };
                format!("postgresql://{auth}{h}:{}/{}", self.port, enc(&self.dbname))
            }
            Host::Socket(d) => format!(
                "postgresql://{auth}/{}?host={}&port={}",
                enc(&self.dbname),
                d.display(),
                self.port
            ),
        }
    }

    /// The environment a `pg_dump`/`psql` child needs to reach this
    /// database; the password travels here, never in argv.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Socket(d) => d.display().to_string(),
        };
        let mut v = vec![
            ("PGHOST", host),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.sslmode.as_str().to_string()),
            (
                "PGCONNECT_TIMEOUT",
                self.connect_timeout.as_secs().max(2).to_string(),
            ),
        ];
        if let Some(pw) = &self.password {
            v.push(("PGPASSWORD", pw.clone()));
        }
        if let Some(a) = &self.application_name {
            v.push(("PGAPPNAME", a.clone()));
        }
        if let Some(o) = &self.options {
            v.push(("PGOPTIONS", o.clone()));
        }
        // `system` means the bundle file itself: libpq before 16 would
        // look for a file named "system".
        if self.tls.sslrootcert.is_some()
            && let Some(f) = self.tls.root_file()
        {
            v.push(("PGSSLROOTCERT", f.display().to_string()));
        }
        if let Some(c) = &self.tls.sslcert {
            v.push(("PGSSLCERT", c.display().to_string()));
        }
        if let Some(k) = &self.tls.sslkey {
            v.push(("PGSSLKEY", k.display().to_string()));
        }
        v.push((
            "PGCHANNELBINDING",
            self.tls.channel_binding.as_str().to_string(),
        ));
        v
    }

    /// Set up a child command to connect here: the settings above, and
    /// nothing inherited that could point it elsewhere.
    pub fn configure_child(&self, cmd: &mut Command) {
        for k in [
            "PGHOSTADDR",
            "PGSERVICE",
            "PGSERVICEFILE",
            "PGPASSWORD",
            "PGOPTIONS",
            "PGSSLROOTCERT",
            "PGSSLCERT",
            "PGSSLKEY",
            "DATABASE_URL",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.child_env());
    }

    /// The `postgres` crate's config for these settings, without TLS
    /// (each connection attempt sets its own).
    pub fn pg_config(&self) -> postgres::Config {
        let mut c = postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => c.host(h),
            Host::Socket(d) => c.host_path(d),
        };
        c.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .connect_timeout(self.connect_timeout)
            .channel_binding(self.tls.channel_binding.to_pg())
            .application_name(self.application_name.as_deref().unwrap_or("opskit"));
        if let Some(pw) = &self.password {
            c.password(pw);
        }
        if let Some(o) = &self.options {
            c.options(o);
        }
        c
    }

    /// Connect, within the connect timeout, which covers the whole
    /// exchange: the `postgres` crate's own timeout covers only the TCP
    /// connect, so a server that accepts and never answers would hang.
    pub fn connect(&self) -> Result<postgres::Client, Error> {
        self.connect_with_tls_info().map(|(c, _)| c)
    }

    /// [`ConnSpec::connect`], and the TLS the connection uses, if any.
    pub fn connect_with_tls_info(&self) -> Result<(postgres::Client, Option<TlsInfo>), Error> {
        let spec = self.clone();
        let fail = |why: String| {
            Error::failure(format!(
                "cannot connect to {} (database {}, user {}): {why}",
                self.target(),
                self.dbname,
                self.user,
            ))
        };
        match crate::pool::within(self.connect_timeout, "pg-connect", move || {
            connect::as_libpq(&spec)
        }) {
            Ok(Some(Ok(c))) => Ok(c),
            Ok(Some(Err(connect::Failed::Usage(e)))) => Err(e),
            Ok(Some(Err(connect::Failed::Refused { why, .. }))) => Err(fail(why)),
            // The connecting thread is left behind; it ends with the process.
            Ok(None) => Err(fail(format!(
                "no answer within {}s (connect_timeout)",
                self.connect_timeout.as_secs()
            ))),
            Err(e) => Err(fail(format!("cannot start a thread: {e}"))),
        }
    }
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnSpec({})", self.redacted())
    }
}

impl fmt::Display for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A `postgres::Error` in one line: the server's message and SQLSTATE, or
/// the client-side reason.
pub fn describe_pg_error(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(d) = db.detail() {
            s.push_str(&format!("; {d}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(&format!(": {t}"));
        }
        src = inner.source();
    }
    s.replace('\n', " ")
}

/// `map_err(pg_failure("reading X"))`: a `postgres::Error` while doing
/// `what`, as a failure (exit 2) in one line.
pub fn pg_failure(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| Error::failure(format!("{what}: {}", describe_pg_error(&e)))
}

#[cfg(test)]
mod tests;
