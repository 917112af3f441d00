//! Which certificate authorities a check trusts: the system's bundle (as
//! curl does on Debian, so an internal CA added with update-ca-certificates
//! works), plus any `--ca FILE`; Mozilla's list only when the system has
//! no bundle.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::CertificateDer;

use opskit::certs::{read_pem, system};

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
