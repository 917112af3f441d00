//! Connecting as libpq does for each `sslmode`:
//!
//! - `disable`: plaintext only;
//! - `allow`: plaintext first; when the server refuses it (an error
//!   response, e.g. a `hostssl`-only `pg_hba.conf` line), again over TLS;
//! - `prefer`: TLS when the server offers it, else plaintext; when the TLS
//!   handshake or the server refuses the TLS connection, again in plaintext;
//! - `require`, `verify-ca`, `verify-full`: TLS or nothing.
//!
//! A Unix-domain socket never uses TLS, whatever the mode (libpq ignores
//! `sslmode` there, and the server refuses TLS on sockets).

use super::tls::{self, Plan, TlsInfo};
use super::{ConnSpec, Host, SslMode, describe_pg_error};
use crate::Error;

/// Why a connection could not be made.
pub(super) enum Failed {
    /// The settings are wrong (a missing root certificate, a key file
    /// readable by others): exit 64.
    Usage(Error),
    /// The server could not be reached or refused us.
    Refused {
        /// In one line.
        why: String,
        /// The server answered with an error (libpq's `allow` retries).
        by_server: bool,
        /// A TLS handshake had begun (libpq's `prefer` retries).
        tls_started: bool,
    },
}

type Connected = (postgres::Client, Option<TlsInfo>);

fn refused(e: &postgres::Error, tls_started: bool, why: Option<String>) -> Failed {
    Failed::Refused {
        why: why.unwrap_or_else(|| describe_pg_error(e)),
        by_server: e.as_db_error().is_some(),
        tls_started,
    }
}

fn plain(spec: &ConnSpec) -> Result<Connected, Failed> {
    let mut cfg = spec.pg_config();
    cfg.ssl_mode(postgres::config::SslMode::Disable);
    cfg.connect(postgres::NoTls)
        .map(|c| (c, None))
        .map_err(|e| refused(&e, false, None))
}

/// One attempt over TLS (`prefer` goes on in plaintext on the same
/// connection when the server says it has no TLS).
fn over_tls(
    spec: &ConnSpec,
    plan: &Plan,
    mode: postgres::config::SslMode,
) -> Result<Connected, Failed> {
    let (connector, seen) = plan.connector().map_err(Failed::Usage)?;
    let mut cfg = spec.pg_config();
    cfg.ssl_mode(mode);
    match cfg.connect(connector) {
        Ok(c) => Ok((c, super::handshake::seen_info(&seen))),
        Err(e) => {
            let seen = super::handshake::lock(&seen);
            let why = tls::explain(spec, plan, &seen, &describe_pg_error(&e));
            Err(refused(&e, seen.started, why))
        }
    }
}

/// Connect with libpq's rules for the spec's `sslmode`.
pub(super) fn as_libpq(spec: &ConnSpec) -> Result<Connected, Failed> {
    use postgres::config::SslMode as Pg;
    let mode = match spec.host {
        Host::Socket(_) => SslMode::Disable,
        Host::Tcp(_) => spec.sslmode,
    };
    if mode == SslMode::Disable {
        return plain(spec);
    }
    let plan = Plan::new(spec.sslmode, &spec.tls).map_err(Failed::Usage)?;
    match mode {
        SslMode::Allow => match plain(spec) {
            Err(Failed::Refused {
                by_server: true, ..
            }) => over_tls(spec, &plan, Pg::Require),
            r => r,
        },
        SslMode::Prefer => match over_tls(spec, &plan, Pg::Prefer) {
            Err(Failed::Refused {
                tls_started: true,
                why,
                ..
            }) => {
                log::debug!(
                    "TLS connection to {} failed ({why}); trying without TLS (sslmode=prefer)",
                    spec.target()
                );
                plain(spec)
            }
            r => r,
        },
        _ => over_tls(spec, &plan, Pg::Require),
    }
}
