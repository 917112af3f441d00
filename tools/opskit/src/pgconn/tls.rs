//! TLS for opskit's own PostgreSQL connections, with libpq's meaning of
//! `sslmode`, `sslrootcert`, `sslcert`, `sslkey` and `channel_binding`
//! (rustls through `tokio-postgres-rustls`; no OpenSSL).
//!
//! What libpq does, and so what this does:
//! - the server certificate's chain is verified when the mode is
//!   `verify-ca`/`verify-full`, *or* when a root certificate file exists
//!   (`sslrootcert`, else `~/.postgresql/root.crt`): with one present,
//!   `require` (and `prefer`) verify the chain as `verify-ca` does;
//! - only `verify-full` checks the host name;
//! - `verify-*` without a root certificate file is an error;
//! - `sslrootcert=system` trusts the system's CA bundle, makes
//!   `verify-full` the default and refuses weaker modes (libpq 16);
//! - a client certificate (`sslcert`, else `~/.postgresql/postgresql.crt`)
//!   is sent when its file exists; its key must not be readable by group
//!   or others (0640 is allowed for a key owned by root).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::CertificateError;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

pub use super::handshake::TlsInfo;
use super::handshake::{Connector, Seen, Verifier};
use super::{ConnSpec, SslMode};
use crate::Error;

/// libpq's `channel_binding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    Prefer,
    Require,
}

impl ChannelBinding {
    pub(super) fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            _ => {
                return Err(Error::usage(format!(
                    "invalid channel_binding '{s}' (use disable, prefer or require)"
                )));
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelBinding::Disable => "disable",
            ChannelBinding::Prefer => "prefer",
            ChannelBinding::Require => "require",
        }
    }

    pub(super) fn to_pg(self) -> postgres::config::ChannelBinding {
        match self {
            ChannelBinding::Disable => postgres::config::ChannelBinding::Disable,
            ChannelBinding::Prefer => postgres::config::ChannelBinding::Prefer,
            ChannelBinding::Require => postgres::config::ChannelBinding::Require,
        }
    }
}

/// The TLS settings of a connection, as given (files are read at connect).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// A PEM file of trusted CAs, or `system`.
    pub sslrootcert: Option<String>,
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    pub channel_binding: ChannelBinding,
    /// The home directory whose `.postgresql/` holds libpq's default files.
    pub home: Option<PathBuf>,
}

/// The value of `sslrootcert` that means the system's trust store.
pub const SYSTEM: &str = "system";

impl TlsSettings {
    fn default_file(&self, name: &str) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join(".postgresql").join(name))
    }

    /// The root certificate file libpq would read (`system` resolved to the
    /// system bundle), whether or not it exists.
    pub fn root_file(&self) -> Option<PathBuf> {
        match self.sslrootcert.as_deref() {
            Some(SYSTEM) => crate::certs::system_bundle(),
            Some(f) => Some(PathBuf::from(f)),
            None => self.default_file("root.crt"),
        }
    }

    fn cert_file(&self) -> Option<PathBuf> {
        self.sslcert
            .clone()
            .or_else(|| self.default_file("postgresql.crt"))
    }

    fn key_file(&self) -> Option<PathBuf> {
        self.sslkey
            .clone()
            .or_else(|| self.default_file("postgresql.key"))
    }
}

/// `sslrootcert=system` makes verify-full the default and refuses weaker
/// modes, as libpq 16 does.
pub(super) fn mode_for(given: Option<SslMode>, rootcert: Option<&str>) -> Result<SslMode, Error> {
    match (given, rootcert == Some(SYSTEM)) {
        (None, true) => Ok(SslMode::VerifyFull),
        (None, false) => Ok(SslMode::Prefer),
        (Some(m), true) if m != SslMode::VerifyFull => Err(Error::usage(format!(
            "sslmode={} is too weak for sslrootcert=system (use sslmode=verify-full)",
            m.as_str()
        ))),
        (Some(m), _) => Ok(m),
    }
}

/// What a TLS attempt needs, read from the files and built once before
/// connecting (`prefer` and `allow` may make two attempts).
pub(super) struct Plan {
    provider: Arc<CryptoProvider>,
    /// The chain check (`None`: no verification, sslmode prefer/require
    /// without a root file), and whether the host name is checked too.
    chain: Option<(Arc<WebPkiServerVerifier>, bool)>,
    /// The root file's certificates as given (none for `system`).
    pinned: Arc<Vec<CertificateDer<'static>>>,
    /// Where the roots came from, for messages.
    pub(super) roots_from: String,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    crate::certs::read_pem(path).map_err(|e| Error::usage(format!("{what}: {e}")))
}

/// The system's CA certificates as rustls roots, built once per process.
fn system_roots() -> Result<Arc<rustls::RootCertStore>, Error> {
    static ROOTS: OnceLock<Option<Arc<rustls::RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = rustls::RootCertStore::empty();
            store.add_parsable_certificates(crate::certs::system()?.iter().cloned());
            Some(Arc::new(store))
        })
        .clone()
        .ok_or_else(|| {
            Error::usage("sslrootcert=system: this system has no CA bundle (set SSL_CERT_FILE)")
        })
}

/// A key file's permissions, checked as libpq checks them.
fn check_key_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::usage(format!(
            "client certificate present, but its key {} cannot be read: {e}",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(Error::usage(format!(
            "client key {} is not a regular file",
            path.display()
        )));
    }
    let mode = meta.mode() & 0o777;
    let too_open = if meta.uid() == 0 {
        mode & 0o037 != 0
    } else {
        mode & 0o077 != 0
    };
    if too_open {
        return Err(Error::usage(format!(
            "client key {} has group or world access (mode {mode:04o}): it must be 0600 or less \
             (0640 or less when owned by root)",
            path.display()
        )));
    }
    Ok(())
}

impl Plan {
    /// Read the root and client files a TLS connection with these
    /// settings uses; configuration problems are usage errors.
    pub(super) fn new(mode: SslMode, tls: &TlsSettings) -> Result<Plan, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki = |roots| {
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::usage(format!("TLS setup: {e}")))
        };
        let verify_mode = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        let root = tls.root_file();
        let (chain, pinned, roots_from) = if tls.sslrootcert.as_deref() == Some(SYSTEM) {
            (
                Some((webpki(system_roots()?)?, true)),
                Arc::default(),
                "the system's CA bundle (sslrootcert=system)".to_string(),
            )
        } else if let Some(f) = root.as_ref().filter(|f| f.exists()) {
            let mut store = rustls::RootCertStore::empty();
            let certs = read_certs(f, "sslrootcert")?;
            let (added, _) = store.add_parsable_certificates(certs.clone());
            if added == 0 {
                return Err(Error::usage(format!(
                    "sslrootcert {}: no usable CA certificate",
                    f.display()
                )));
            }
            (
                Some((webpki(Arc::new(store))?, mode == SslMode::VerifyFull)),
                Arc::new(certs),
                format!("sslrootcert {}", f.display()),
            )
        } else if verify_mode {
            let shown = root.map_or("~/.postgresql/root.crt".into(), |f| f.display().to_string());
            return Err(Error::usage(format!(
                "sslmode={} needs a root certificate, and {shown} does not exist \
                 (set sslrootcert=FILE, or sslrootcert=system for the system's CAs)",
                mode.as_str()
            )));
        } else {
            (None, Arc::default(), String::new())
        };
        let client = match tls.cert_file().filter(|c| c.exists()) {
            Some(cert) => {
                let certs = read_certs(&cert, "sslcert")?;
                let key = tls.key_file().ok_or_else(|| {
                    Error::usage(format!(
                        "client certificate {} present, but no key file",
                        cert.display()
                    ))
                })?;
                check_key_file(&key)?;
                let der = PrivateKeyDer::from_pem_file(&key).map_err(|e| {
                    Error::usage(format!(
                        "client key {}: not an unencrypted PEM private key: {e}",
                        key.display()
                    ))
                })?;
                Some((certs, der))
            }
            None => {
                if let Some(c) = &tls.sslcert {
                    log::warn!(
                        "sslcert {} does not exist: connecting without a client certificate",
                        c.display()
                    );
                }
                None
            }
        };
        Ok(Plan {
            provider,
            chain,
            pinned,
            roots_from,
            client,
        })
    }

    /// A connector for one attempt, and what it will see of the handshake.
    pub(super) fn connector(&self) -> Result<(Connector, Arc<Mutex<Seen>>), Error> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let verifier = Arc::new(Verifier {
            chain: self.chain.clone(),
            pinned: self.pinned.clone(),
            provider: self.provider.clone(),
            seen: seen.clone(),
        });
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::usage(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &self.client {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| Error::usage(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let connector = Connector {
            inner: MakeRustlsConnect::new(config),
            seen: seen.clone(),
        };
        Ok((connector, seen))
    }
}

fn date_of(t: UnixTime) -> String {
    chrono::DateTime::from_timestamp(t.as_secs() as i64, 0).map_or_else(
        || "?".into(),
        |d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}

/// Why a TLS attempt failed, in one line, when the reason is TLS's.
pub(super) fn explain(spec: &ConnSpec, plan: &Plan, seen: &Seen, err: &str) -> Option<String> {
    let host = match &spec.host {
        super::Host::Tcp(h) => h.as_str(),
        super::Host::Socket(_) => "",
    };
    if let Some(rustls::Error::InvalidCertificate(e)) = &seen.rejected {
        return Some(match e {
            // rustls reports name mismatches with their context only.
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server certificate is not valid for host name '{host}' (it is for: {}; sslmode=verify-full)",
                presented.join(", ")
            ),
            CertificateError::UnknownIssuer => format!(
                "the server certificate is signed by an unknown CA (not trusted by {})",
                plan.roots_from
            ),
            CertificateError::ExpiredContext { not_after, .. } => {
                format!("the server certificate expired on {}", date_of(*not_after))
            }
            CertificateError::Expired => "the server certificate has expired".into(),
            CertificateError::NotValidYetContext { not_before, .. } => format!(
                "the server certificate is not valid before {}",
                date_of(*not_before)
            ),
            other => format!(
                "the server certificate was refused: {}",
                rustls::Error::InvalidCertificate(other.clone())
            ),
        });
    }
    if let Some(e) = &seen.rejected {
        return Some(format!("the server certificate was refused: {e}"));
    }
    if err.contains("server does not support TLS") {
        return Some(format!(
            "the server does not support TLS, and sslmode={} requires it",
            spec.sslmode.as_str()
        ));
    }
    if err.contains("did not use channel binding") {
        return Some(format!(
            "channel_binding=require, but the server authenticated without channel binding \
             (it needs SCRAM password authentication over TLS; sslmode={})",
            spec.sslmode.as_str()
        ));
    }
    None
}
