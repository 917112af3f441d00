//! The TLS handshake of one connection attempt: a certificate verifier
//! with libpq's rules (`verify-ca` accepts a name mismatch only), and a
//! connector that notes what the handshake showed: whether it began, the
//! protocol version, the server's chain, why a certificate was refused.

use std::sync::{Arc, Mutex};

use postgres::Socket;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// What one attempt saw of its TLS handshake.
#[derive(Default)]
pub(super) struct Seen {
    /// The server answered the TLS request with yes: a handshake began.
    pub(super) started: bool,
    pub(super) version: Option<&'static str>,
    pub(super) chain: Vec<CertificateDer<'static>>,
    /// Why the server's certificate was refused.
    pub(super) rejected: Option<rustls::Error>,
}

pub(super) fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

/// The TLS of an established connection.
#[derive(Clone, Debug)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The server's certificate, then the chain it sent.
    pub chain: Vec<CertificateDer<'static>>,
}

impl Seen {
    pub(super) fn info(&self) -> Option<TlsInfo> {
        self.started.then(|| TlsInfo {
            version: self.version.unwrap_or("TLS"),
            chain: self.chain.clone(),
        })
    }
}

pub(super) fn seen_info(seen: &Mutex<Seen>) -> Option<TlsInfo> {
    lock(seen).info()
}

/// Checks the server's certificate as the plan says, and notes what it
/// saw: the chain, the protocol version, why a certificate was refused.
#[derive(Debug)]
pub(super) struct Verifier {
    pub(super) chain: Option<(Arc<WebPkiServerVerifier>, bool)>,
    /// The root file's own certificates: a server that presents one of them
    /// (a self-signed `server.crt` given as `root.crt`, as PostgreSQL's
    /// manual sets it up) is trusted, as OpenSSL trusts it for libpq.
    pub(super) pinned: Arc<Vec<CertificateDer<'static>>>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) seen: Arc<Mutex<Seen>>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Seen(started: {})", self.started)
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut s = lock(&self.seen);
            s.chain = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| c.clone().into_owned())
                .collect();
        }
        let Some((inner, full)) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        let verdict =
            match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
                Ok(v) => return Ok(v),
                // verify-ca: webpki checks the chain before the name, so a name
                // mismatch means the chain is good.
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) if !full => return Ok(ServerCertVerified::assertion()),
                Err(_)
                    if self
                        .pinned
                        .iter()
                        .any(|p| p.as_ref() == end_entity.as_ref()) =>
                {
                    pinned_ok(end_entity, server_name, now, *full)
                }
                Err(e) => Err(e),
            };
        if let Err(e) = &verdict {
            lock(&self.seen).rejected = Some(e.clone());
        }
        verdict.map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        lock(&self.seen).version = Some("TLSv1.2");
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        lock(&self.seen).version = Some("TLSv1.3");
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A pinned certificate still has to be in its validity period, and for
/// verify-full name the host.
fn pinned_ok(
    cert: &CertificateDer<'_>,
    name: &ServerName<'_>,
    now: UnixTime,
    full: bool,
) -> Result<(), rustls::Error> {
    let bad = |e: CertificateError| rustls::Error::InvalidCertificate(e);
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| bad(CertificateError::BadEncoding))?;
    let t = now.as_secs() as i64;
    let validity = parsed.validity();
    if t > validity.not_after.timestamp() {
        return Err(bad(CertificateError::ExpiredContext {
            time: now,
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                validity.not_after.timestamp().max(0) as u64,
            )),
        }));
    }
    if t < validity.not_before.timestamp() {
        return Err(bad(CertificateError::NotValidYet));
    }
    if full {
        let ee = rustls::server::ParsedCertificate::try_from(cert)?;
        rustls::client::verify_server_name(&ee, name)?;
    }
    Ok(())
}

/// `tokio-postgres-rustls`'s connector, noting when the server agreed to
/// TLS (libpq's `prefer` retries in plaintext only after that).
pub(super) struct Connector {
    pub(super) inner: MakeRustlsConnect,
    pub(super) seen: Arc<Mutex<Seen>>,
}

pub(super) struct Started<T> {
    inner: T,
    seen: Arc<Mutex<Seen>>,
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
    type TlsConnect = Started<<MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect>;
    type Error = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Self::TlsConnect, Self::Error> {
        Ok(Started {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, domain)?,
            seen: self.seen.clone(),
        })
    }
}

impl<S, T: TlsConnect<S>> TlsConnect<S> for Started<T> {
    type Stream = T::Stream;
    type Error = T::Error;
    type Future = T::Future;

    fn connect(self, stream: S) -> Self::Future {
        lock(&self.seen).started = true;
        self.inner.connect(stream)
    }
}
