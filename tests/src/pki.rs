//! Test certificates made with rcgen: a CA, and leaves it signs for given
//! names and dates (servers) or common names (clients).

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A test CA.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key.
pub struct Leaf {
    /// DER: the leaf, then the CA.
    pub chain: Vec<Vec<u8>>,
    /// DER (PKCS#8).
    pub key: Vec<u8>,
    pub pem: String,
    pub key_pem: String,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new("opskit test CA")
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca = p.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    pub fn write_ca(&self, path: &std::path::Path) {
        std::fs::write(path, self.ca.pem()).unwrap();
    }

    /// A leaf for localhost valid from `from` to `until` (days from today).
    pub fn leaf(&self, from: i64, until: i64) -> Leaf {
        self.leaf_for(&["localhost"], "localhost", from, until)
    }

    /// A leaf with these subject alternative names (IP addresses become IP
    /// SANs) and common name, valid from `from` to `until` days from today.
    pub fn leaf_for(&self, names: &[&str], cn: &str, from: i64, until: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let day = |offset: i64| {
            use chrono::Datelike;
            let d = chrono::Utc::now().date_naive() + chrono::Duration::days(offset);
            rcgen::date_time_ymd(d.year(), d.month() as u8, d.day() as u8)
        };
        p.not_before = day(from);
        p.not_after = day(until);
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Leaf::of(&cert, &key, Some(&self.ca))
    }
}

impl Leaf {
    /// A certificate, its key, and the CA that signed it (none for a
    /// self-signed one).
    fn of(cert: &rcgen::Certificate, key: &KeyPair, ca: Option<&rcgen::Certificate>) -> Leaf {
        Leaf {
            chain: std::iter::once(cert)
                .chain(ca)
                .map(|c| c.der().to_vec())
                .collect(),
            key: key.serialize_der(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A self-signed CA certificate used as a server's own certificate, as
/// `openssl req -x509` makes it (PostgreSQL's manual: `server.crt` is then
/// the clients' `root.crt`).
pub fn self_signed_ca_for(names: &[&str]) -> Leaf {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = p.self_signed(&key).unwrap();
    Leaf::of(&cert, &key, None)
}

/// A self-signed certificate for localhost.
pub fn self_signed() -> Leaf {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    Leaf::of(&cert, &key, None)
}
