//! Certificates every TLS client of opskit reads: the system's CA bundle
//! (`SSL_CERT_FILE`, else Debian's or Red Hat's file, as curl and OpenSSL
//! find it), parsed once per process, and PEM certificate files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const SYSTEM_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The system's CA bundle file, if it has one.
pub fn system_bundle() -> Option<PathBuf> {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// The system's CA certificates, read once; `None` when there is no
/// bundle or it holds no certificate.
pub fn system() -> Option<&'static [CertificateDer<'static>]> {
    static ROOTS: OnceLock<Option<Vec<CertificateDer<'static>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let path = system_bundle()?;
            let certs: Vec<_> = CertificateDer::pem_file_iter(&path)
                .ok()?
                .filter_map(|c| c.ok())
                .collect();
            log::debug!(
                "trusting {} CA certificates from {}",
                certs.len(),
                path.display()
            );
            (!certs.is_empty()).then_some(certs)
        })
        .as_deref()
}

/// Every certificate in a PEM file; an error names the file and what is
/// wrong with it.
pub fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

/// ureq's TLS settings: the system roots (converted once and shared: a copy
/// per healthcheck check was most of the memory of 100 checks), plus `ca`.
pub fn ureq_tls(ca: Option<&Path>, insecure: bool) -> Result<ureq::tls::TlsConfig, String> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    static SYSTEM_ROOTS: OnceLock<Option<Arc<Vec<Certificate<'static>>>>> = OnceLock::new();
    let convert = |c: &CertificateDer<'_>| Certificate::from_der(c.as_ref()).to_owned();
    let sys =
        SYSTEM_ROOTS.get_or_init(|| system().map(|s| Arc::new(s.iter().map(convert).collect())));
    let roots = match (ca, sys) {
        (None, None) => RootCerts::WebPki,
        (None, Some(sys)) => RootCerts::Specific(Arc::clone(sys)),
        (Some(ca), sys) => {
            let mut all: Vec<Certificate<'static>> = sys.as_deref().cloned().unwrap_or_default();
            all.extend(read_pem(ca)?.iter().map(convert));
            RootCerts::Specific(Arc::new(all))
        }
    };
    Ok(TlsConfig::builder()
        .root_certs(roots)
        .disable_verification(insecure)
        .build())
}
