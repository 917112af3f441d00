//! Which certificate authorities a check trusts: the system's bundle (as
//! curl does on Debian, so an internal CA added with update-ca-certificates
//! works), plus any `--ca FILE`; Mozilla's list only when the system has
//! no bundle.

use std::path::Path;

use opskit::certs::{read_pem, system};

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
