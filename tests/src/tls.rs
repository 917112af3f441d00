//! A throwaway cluster that speaks TLS, as managed databases do.
//!
//! `ssl = on` with a server certificate for `localhost` and `127.0.0.1`
//! signed by a test CA (rcgen), listening on 127.0.0.1 and 127.0.0.2 (a
//! name the certificate does not carry). Its `pg_hba.conf`:
//!
//! | database / user | connection | method |
//! |---|---|---|
//! | `plain_only` | `hostnossl` | scram-sha-256 |
//! | user `certuser` | `hostssl` | `cert` (client certificate, CN = user) |
//! | user `trustuser` | `hostssl` | trust (no password: no channel binding) |
//! | every other | `hostssl` | scram-sha-256 |
//!
//! So every test database on it is reachable over TLS only. Client files
//! (the CA, another CA, certuser's certificate and key) are in
//! [`TlsCluster::client_dir`].

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::pg::{Cluster, Setup, start_once};
use crate::pki::Pki;

/// A TLS cluster and the files a client uses with it.
pub struct TlsCluster {
    pub cluster: &'static Cluster,
    dir: PathBuf,
}

struct Made {
    server_cert: String,
    server_key: String,
    ca: String,
    other_ca: String,
    client_cert: String,
    client_key: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Good,
    Expired,
    /// The server's certificate is a self-signed CA certificate, and the
    /// clients' root is that certificate itself.
    SelfSigned,
}

fn make(kind: Kind) -> Made {
    let pki = Pki::new("opskit test CA");
    let (from, until) = if kind == Kind::Expired {
        (-30, -1)
    } else {
        (-1, 365)
    };
    let mut server = pki.leaf_for(&["localhost", "127.0.0.1"], "localhost", from, until);
    let mut ca = pki.ca_pem();
    if kind == Kind::SelfSigned {
        server = crate::pki::self_signed_ca_for(&["localhost", "127.0.0.1"]);
        ca = format!("{}{ca}", server.pem);
    }
    let client = pki.leaf_for(&[], "certuser", -1, 365);
    Made {
        server_cert: server.pem,
        server_key: server.key_pem,
        ca,
        other_ca: Pki::new("another CA").ca_pem(),
        client_cert: client.pem,
        client_key: client.key_pem,
    }
}

const HBA: &str = "\
local all all trust
hostnossl plain_only all 127.0.0.0/8 scram-sha-256
hostssl all certuser 127.0.0.0/8 cert
hostssl all trustuser 127.0.0.0/8 trust
hostssl all all 127.0.0.0/8 scram-sha-256
";

fn setup_of(m: &Made) -> Setup {
    Setup {
        listen: "127.0.0.1,127.0.0.2",
        conf: "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
               ssl_ca_file = 'ca.crt'\n"
            .into(),
        hba: Some(HBA.into()),
        files: vec![
            ("server.crt", m.server_cert.clone()),
            ("server.key", m.server_key.clone()),
            ("ca.crt", m.ca.clone()),
        ],
        sql: "CREATE DATABASE plain_only; CREATE ROLE certuser LOGIN SUPERUSER; \
              CREATE ROLE trustuser LOGIN SUPERUSER;"
            .into(),
        ..Setup::default()
    }
}

/// Where one kind of TLS cluster lives once started.
struct Slot {
    cluster: OnceLock<Cluster>,
    tls: OnceLock<TlsCluster>,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            cluster: OnceLock::new(),
            tls: OnceLock::new(),
        }
    }

    /// The slot's cluster, made of `kind`'s certificates on first use.
    fn get(&'static self, kind: Kind) -> &'static TlsCluster {
        self.tls.get_or_init(|| {
            let m = make(kind);
            TlsCluster::new(start_once(&self.cluster, || setup_of(&m)), &m)
        })
    }
}

static GOOD: Slot = Slot::new();
static EXPIRED: Slot = Slot::new();
static SELF_SIGNED: Slot = Slot::new();

/// The TLS cluster of this test binary, started on first use.
pub fn tls_cluster() -> &'static TlsCluster {
    GOOD.get(Kind::Good)
}

/// A TLS cluster whose server certificate expired yesterday.
pub fn expired_tls_cluster() -> &'static TlsCluster {
    EXPIRED.get(Kind::Expired)
}

/// A TLS cluster whose certificate is self-signed (CA:TRUE); its
/// `ca.crt` client file holds that certificate (and the test CA, which
/// signs the client certificate).
pub fn self_signed_tls_cluster() -> &'static TlsCluster {
    SELF_SIGNED.get(Kind::SelfSigned)
}

impl TlsCluster {
    fn new(cluster: &'static Cluster, m: &Made) -> TlsCluster {
        use std::os::unix::fs::MetadataExt;
        let dir = cluster.root().join("client");
        std::fs::create_dir_all(&dir).unwrap();
        // Owned as the cluster's root is, so its watchdog can remove it.
        let owner = std::fs::metadata(cluster.root()).unwrap();
        std::os::unix::fs::chown(&dir, Some(owner.uid()), Some(owner.gid())).unwrap();
        for (name, text, mode) in [
            ("ca.crt", &m.ca, 0o644),
            ("other-ca.crt", &m.other_ca, 0o644),
            ("client.crt", &m.client_cert, 0o644),
            ("client.key", &m.client_key, 0o600),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        TlsCluster { cluster, dir }
    }

    /// Where the client's files are: `ca.crt`, `other-ca.crt`,
    /// `client.crt`, `client.key`.
    pub fn client_dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The superuser's URL for `db` at `host` with these query parameters.
    pub fn url_at(&self, host: &str, db: &str, query: &str) -> String {
        let url = self.cluster.url(db).replacen("127.0.0.1", host, 1);
        if query.is_empty() {
            url
        } else {
            format!("{url}?{query}")
        }
    }

    /// `db` with `sslmode=verify-full` against the test CA.
    pub fn verify_full_url(&self, db: &str) -> String {
        self.url_at(
            "localhost",
            db,
            &format!("sslmode=verify-full&sslrootcert={}", self.file("ca.crt")),
        )
    }
}
