//! Which certificate authorities a check trusts: the system's bundle (as
//! curl does on Debian, so an internal CA added with update-ca-certificates
//! works), plus any `--ca FILE`; Mozilla's list only when the system has
//! no bundle.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const SYSTEM_BUNDLES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The system's CA certificates, read once; `None` when there is no bundle.
fn system() -> Option<&'static [CertificateDer<'static>]> {
    static ROOTS: OnceLock<Option<Vec<CertificateDer<'static>>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let env = std::env::var("SSL_CERT_FILE").ok();
            let path = env
                .as_deref()
                .into_iter()
                .chain(SYSTEM_BUNDLES)
                .find(|p| Path::new(p).is_file())?;
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .ok()?
                .filter_map(|c| c.ok())
                .collect();
            log::debug!("trusting {} CA certificates from {path}", certs.len());
            (!certs.is_empty()).then_some(certs)
        })
        .as_deref()
}

/// Every certificate in a PEM file.
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

/// ureq's TLS settings for an https check. The system roots are converted
/// once and shared: a copy per check was most of the memory of 100 checks.
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

/// A rustls root store for a `tls://` check.
pub fn root_store(ca: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    match system() {
        Some(sys) => {
            store.add_parsable_certificates(sys.iter().cloned());
        }
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    if let Some(ca) = ca {
        store.add_parsable_certificates(read_pem(ca)?);
    }
    Ok(store)
}
