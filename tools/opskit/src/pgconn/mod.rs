//! PostgreSQL connection settings, resolved the way libpq resolves them.
//!
//! Accepted: `postgres://` and `postgresql://` URLs, SQLAlchemy's
//! `postgresql+<driver>://` forms (the driver is dropped), `DATABASE_URL`,
//! and libpq's `PG*` variables, which fill whatever the URL leaves out, as
//! they do for libpq. The `postgres` crate reads none of these itself.
//!
//! The password never leaves this module except in the environment of a
//! child (`PGPASSWORD`) and in the connection itself: [`ConnSpec::redacted`]
//! and `Debug` show `***`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::Error;

mod passfile;
mod url;

use url::{Partial, parse_url};

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
    pub connect_timeout: Duration,
    pub application_name: Option<String>,
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
        let sslmode = match p.sslmode.or_else(|| env("PGSSLMODE")) {
            Some(s) => SslMode::parse(&s)?,
            None => SslMode::Prefer,
        };
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
            connect_timeout,
            application_name: p.application_name.or_else(|| env("PGAPPNAME")),
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
            "DATABASE_URL",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.child_env());
    }

    /// The `postgres` crate's config for these settings.
    pub fn pg_config(&self) -> Result<postgres::Config, Error> {
        let mut c = postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => c.host(h),
            Host::Socket(d) => c.host_path(d),
        };
        c.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .connect_timeout(self.connect_timeout)
            .application_name(self.application_name.as_deref().unwrap_or("opskit"));
        if let Some(pw) = &self.password {
            c.password(pw);
        }
        match self.sslmode {
            SslMode::Disable | SslMode::Allow | SslMode::Prefer => {
                c.ssl_mode(postgres::config::SslMode::Disable);
            }
            m => {
                return Err(Error::usage(format!(
                    "sslmode={} needs TLS, which opskit's own connections do not support yet; \
                     use sslmode=prefer or disable on a trusted network or a Unix socket",
                    m.as_str()
                )));
            }
        }
        Ok(c)
    }

    /// Connect, within the connect timeout, which covers the whole
    /// exchange: the `postgres` crate's own timeout covers only the TCP
    /// connect, so a server that accepts and never answers would hang.
    pub fn connect(&self) -> Result<postgres::Client, Error> {
        let cfg = self.pg_config()?;
        let fail = |why: String| {
            Error::failure(format!(
                "cannot connect to {} (database {}, user {}): {why}",
                self.target(),
                self.dbname,
                self.user,
            ))
        };
        match crate::pool::within(self.connect_timeout, "pg-connect", move || {
            cfg.connect(postgres::NoTls)
        }) {
            Ok(Some(Ok(client))) => Ok(client),
            Ok(Some(Err(e))) => Err(fail(describe_pg_error(&e))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn res(url: &str) -> ConnSpec {
        ConnSpec::resolve_with(Some(url), &env_of(&[("HOME", "/nonexistent")])).unwrap()
    }

    #[test]
    fn full_url() {
        let s = res(
            "postgresql://app:s3cr%40t%2Fx@db.example:6543/shop?sslmode=disable&connect_timeout=5&application_name=nightly",
        );
        assert_eq!(s.host, Host::Tcp("db.example".into()));
        assert_eq!(s.port, 6543);
        assert_eq!(s.user, "app");
        assert_eq!(s.password.as_deref(), Some("s3cr@t/x"));
        assert_eq!(s.dbname, "shop");
        assert_eq!(s.sslmode, SslMode::Disable);
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.application_name.as_deref(), Some("nightly"));
    }

    #[test]
    fn sqlalchemy_forms_drop_the_driver() {
        for scheme in ["postgresql+asyncpg", "postgresql+psycopg2", "postgres"] {
            let s = res(&format!("{scheme}://u:p@h/d"));
            assert_eq!((s.user.as_str(), s.dbname.as_str()), ("u", "d"));
        }
        let s = res("postgresql+asyncpg://u@h/d?ssl=require");
        assert_eq!(s.sslmode, SslMode::Require);
    }

    #[test]
    fn ipv6_and_socket_hosts() {
        let s = res("postgres://u@[::1]:5433/d");
        assert_eq!(s.host, Host::Tcp("::1".into()));
        assert_eq!(s.port, 5433);
        assert_eq!(s.target(), "[::1]:5433");
        let s = res("postgres://u@%2Frun%2Fpg/d");
        assert_eq!(s.host, Host::Socket("/run/pg".into()));
        let s = res("postgres:///d?host=/tmp/sock&port=7000&user=me");
        assert_eq!(s.host, Host::Socket("/tmp/sock".into()));
        assert_eq!(s.target(), "/tmp/sock/.s.PGSQL.7000");
        assert_eq!(s.user, "me");
    }

    #[test]
    fn pg_variables_fill_what_the_url_leaves_out() {
        let env = env_of(&[
            ("PGHOST", "envhost"),
            ("PGPORT", "7777"),
            ("PGUSER", "envuser"),
            ("PGPASSWORD", "envpw"),
            ("PGDATABASE", "envdb"),
        ]);
        let s = ConnSpec::resolve_with(Some("postgres://urluser@/urldb"), &env).unwrap();
        assert_eq!(s.host, Host::Tcp("envhost".into()));
        assert_eq!(s.port, 7777);
        assert_eq!(s.user, "urluser");
        assert_eq!(s.password.as_deref(), Some("envpw"));
        assert_eq!(s.dbname, "urldb");
        let s = ConnSpec::resolve_with(None, &env).unwrap();
        assert_eq!(s.user, "envuser");
        assert_eq!(s.dbname, "envdb");
    }

    #[test]
    fn database_url_is_used_when_no_db_given() {
        let env = env_of(&[
            ("DATABASE_URL", "postgres://a:b@h:1/x"),
            ("PGDATABASE", "y"),
        ]);
        let s = ConnSpec::resolve_with(None, &env).unwrap();
        assert_eq!(s.dbname, "x");
        let s = ConnSpec::resolve_with(Some("postgres://h/z"), &env).unwrap();
        assert_eq!(s.dbname, "z");
    }

    #[test]
    fn defaults() {
        let s = ConnSpec::resolve_with(None, &env_of(&[("PGUSER", "me")])).unwrap();
        assert_eq!(s.host, Host::Socket(DEFAULT_SOCKET_DIR.into()));
        assert_eq!(s.port, 5432);
        assert_eq!(s.dbname, "me");
        assert_eq!(s.sslmode, SslMode::Prefer);
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn redaction_hides_password_everywhere() {
        let s = res("postgres://app:hunter2@db:5432/shop");
        assert_eq!(s.redacted(), "postgresql://app:***@db:5432/shop");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        let s = res("postgres://app@db/shop");
        assert_eq!(s.redacted(), "postgresql://app@db:5432/shop");
    }

    #[test]
    fn child_env_carries_password_not_argv() {
        let s = res("postgres://app:hunter2@db:5432/shop");
        let env = s.child_env();
        assert!(env.contains(&("PGPASSWORD", "hunter2".into())));
        assert!(env.contains(&("PGHOST", "db".into())));
        assert!(env.contains(&("PGDATABASE", "shop".into())));
    }

    #[test]
    fn bad_urls_are_usage_errors_without_the_password() {
        let cases = [
            ("mysql://u:hunter2@h/d", "not PostgreSQL"),
            ("db.example:5432", "must start with"),
            ("postgres://u:hunter2@h:notaport/d", "invalid port"),
            ("postgres://u:hunter2@h:0/d", "invalid port"),
            ("postgres://u:hunter2@h1,h2/d", "several hosts"),
            ("postgres://u:hunter2@h/d?sslmode=maybe", "invalid sslmode"),
            (
                "postgres://u:hunter2@h/d?bogus=1",
                "unknown parameter 'bogus'",
            ),
            (
                "postgres://u:hunter2@h/d?connect_timeout=soon",
                "connect_timeout",
            ),
            ("postgres://u:hunter2@[::1/d", "unclosed"),
        ];
        for (url, want) in cases {
            let e = ConnSpec::resolve_with(Some(url), &env_of(&[])).unwrap_err();
            assert_eq!(e.exit, crate::Exit::Usage, "{url}");
            assert!(e.msg.contains(want), "{url}: {}", e.msg);
            assert!(!e.msg.contains("hunter2"), "{url}: {}", e.msg);
        }
    }

    #[test]
    fn passfile_is_used_when_no_password() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let pf = d.path().join("pgpass");
        std::fs::write(&pf, "# comment\nother:*:*:*:no\ndb:5432:shop:app:pa\\:ss\n").unwrap();
        std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pfs = pf.display().to_string();
        let env = env_of(&[("PGPASSFILE", pfs.as_str())]);
        let s = ConnSpec::resolve_with(Some("postgres://app@db/shop"), &env).unwrap();
        assert_eq!(s.password.as_deref(), Some("pa:ss"));
        // world-readable passfiles are ignored, as libpq does
        std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let s = ConnSpec::resolve_with(Some("postgres://app@db/shop"), &env).unwrap();
        assert_eq!(s.password, None);
    }

    #[test]
    fn tls_modes_are_refused_for_own_connections_with_a_reason() {
        let s = res("postgres://u@h/d?sslmode=verify-full");
        let e = s.pg_config().unwrap_err();
        assert!(e.msg.contains("sslmode=verify-full"), "{}", e.msg);
        assert!(res("postgres://u@h/d?sslmode=prefer").pg_config().is_ok());
    }
}
