//! `tcp://HOST:PORT` (connect time), `tls://HOST:PORT` and `cert:FILE`
//! (days until the earliest certificate of the chain expires).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{Observation, host_port, secs, trust};
use crate::spec::Check;

/// Connect to the first address that answers, within the check's timeout.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::WouldBlock =>
            {
                last = format!(
                    "connect to {a} timed out after {}",
                    opskit::units::format_duration(timeout)
                )
            }
            Err(e) => {
                last = format!(
                    "connect to {a}: {}",
                    e.to_string().split(" (os error").next().unwrap_or("")
                )
            }
        }
    }
    Err(last)
}

pub fn tcp(c: &Check) -> Result<Observation, String> {
    let (host, port) = host_port(c, None)?;
    let start = Instant::now();
    connect(&host, port, c.timeout)?;
    let t = start.elapsed();
    let mut obs = Observation::default();
    obs.set("connect_s", secs(t));
    obs.summary = format!("connected to {host}:{port} in {} ms", t.as_millis());
    Ok(obs)
}

/// Verifies as usual, remembers the verdict, and lets the handshake finish
/// either way: an expired or untrusted chain is still read for its dates.
#[derive(Debug)]
struct Recorder {
    inner: Arc<WebPkiServerVerifier>,
    verdict: Mutex<Option<Result<(), String>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(r.map(|_| ()).map_err(|e| e.to_string()));
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub fn tls(c: &Check) -> Result<Observation, String> {
    let (host, port) = host_port(c, Some(443))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(trust::root_store(c.http.ca.as_deref())?);
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let recorder = Arc::new(Recorder {
        inner,
        verdict: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let name =
        ServerName::try_from(host.clone()).map_err(|e| format!("bad host name {host}: {e}"))?;
    let start = Instant::now();
    let mut sock = connect(&host, port, c.timeout)?;
    let left = c
        .timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(1));
    sock.set_read_timeout(Some(left))
        .and_then(|()| sock.set_write_timeout(Some(left)))
        .map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("TLS setup: {e}"))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| {
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                format!("TLS handshake with {host}:{port} timed out")
            } else {
                format!("TLS handshake with {host}:{port} failed: {e}")
            }
        })?;
    }
    let connect_s = secs(start.elapsed());
    let chain: Vec<CertificateDer<'static>> = conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.clone().into_owned())
        .collect();
    let mut obs = describe_chain(&chain)?;
    let verdict = recorder
        .verdict
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let trust_error = verdict.and_then(|v| v.err());
    obs.set("trusted", trust_error.is_none());
    obs.set("trust_error", trust_error.clone());
    obs.set("connect_s", connect_s);
    if let Some(e) = trust_error {
        obs.summary.push_str(&format!("; not trusted: {e}"));
    }
    Ok(obs)
}

pub fn cert_file(c: &Check) -> Result<Observation, String> {
    let path = c.target.split_once(':').map(|(_, p)| p).unwrap_or("");
    describe_chain(&opskit::certs::read_pem(Path::new(path))?)
}

/// The certificate of a chain that expires first: its days left (one
/// decimal), `not_after` (RFC 3339), subject and issuer.
pub(super) fn earliest_expiry(
    chain: &[CertificateDer<'_>],
) -> Result<(f64, String, String, String), String> {
    let now = chrono::Utc::now().timestamp();
    let mut earliest: Option<(i64, String, String)> = None;
    for der in chain {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("cannot parse a certificate of the chain: {e}"))?;
        let not_after = cert.validity().not_after.timestamp();
        if earliest.as_ref().is_none_or(|(t, _, _)| not_after < *t) {
            earliest = Some((
                not_after,
                cert.subject().to_string(),
                cert.issuer().to_string(),
            ));
        }
    }
    let (not_after, subject, issuer) = earliest.ok_or("the server sent no certificate")?;
    let days = ((not_after - now) as f64 / 86_400.0 * 10.0).floor() / 10.0;
    let when = chrono::DateTime::from_timestamp(not_after, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok((days, when, subject, issuer))
}

/// Dates and names of the certificate that expires first.
fn describe_chain(chain: &[CertificateDer<'_>]) -> Result<Observation, String> {
    let (days, when, subject, issuer) = earliest_expiry(chain)?;
    let mut obs = Observation::default();
    obs.set("days_left", days);
    obs.set("not_after", when.clone());
    obs.set("subject", subject.clone());
    obs.set("issuer", issuer);
    obs.set("certs", chain.len());
    obs.summary = if days < 0.0 {
        format!("{subject} expired {} days ago ({when})", -days)
    } else {
        format!("{subject} expires in {days} days ({when})")
    };
    Ok(obs)
}
