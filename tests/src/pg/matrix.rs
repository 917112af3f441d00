//! Which PostgreSQL binaries the tests run: the default bindir, and the
//! version matrix (the bindirs scripts/ensure-deps.sh installs for each
//! major, and a cluster of any of them).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use super::{Cluster, Setup, start_once};

/// Held while a test takes a base set: pg_basebackup's fetch mode (what
/// `pgbackup --physical` uses, its tar going to stdout) fails with
/// "requested WAL segment … has already been removed" when another
/// backup's checkpoint recycles the WAL it still has to fetch, as on a
/// server with a small wal_keep_size. Tests of one binary take base sets
/// one at a time.
pub fn base_backup_lock() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The majors of the version matrix; adding one (19) is adding it here and
/// to scripts/ensure-deps.sh.
pub const MATRIX: [u32; 5] = [14, 15, 16, 17, 18];

/// The bindir of PostgreSQL `major` that scripts/ensure-deps.sh linked as
/// `.deps/pg/MAJOR/bin` (a server at least), if installed.
pub fn matrix_bindir(major: u32) -> Option<PathBuf> {
    let b = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.deps/pg"))
        .join(major.to_string())
        .join("bin");
    b.join("postgres").exists().then_some(b)
}

/// The client tools for a server of `major`: its own bindir when it has
/// pg_dump, else the newest installed major's (18's pg_dump and
/// pg_basebackup read older servers), as a user with newer client tools
/// than their server has.
pub fn client_bindir(major: u32) -> PathBuf {
    let with_tools = |m: u32| matrix_bindir(m).filter(|b| b.join("pg_dump").exists());
    with_tools(major)
        .or_else(|| MATRIX.iter().rev().find_map(|m| with_tools(*m)))
        .unwrap_or_else(bindir)
}

/// The cluster of PostgreSQL `major` in this test binary, started from
/// its matrix bindir on first use; with `ssl = on` (a certificate for
/// `localhost` signed by a test CA, [`matrix_ca`]) where the build has TLS.
/// Its pg_hba.conf is initdb's: TLS or not, as the client asks.
pub fn cluster_of(major: u32) -> &'static Cluster {
    static SLOTS: [OnceLock<Cluster>; 6] = [const { OnceLock::new() }; 6];
    start_once(&SLOTS[matrix_index(major)], || {
        let mut setup = Setup {
            bindir: Some(installed(major)),
            conf: KEEP_WAL.into(),
            ..Setup::default()
        };
        if has_tls(major) {
            let pki = crate::pki::Pki::new("opskit matrix CA");
            let leaf = pki.leaf_for(&["localhost", "127.0.0.1"], "localhost", -1, 365);
            setup
                .conf
                .push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            setup.files = vec![
                ("server.crt", leaf.pem),
                ("server.key", leaf.key_pem),
                ("client-ca.crt", pki.ca_pem()),
            ];
        }
        setup
    })
}

/// Whether PostgreSQL `major`'s server was built with TLS (PyPI's 18 was
/// not: it says "SSL is not supported by this build").
pub fn has_tls(major: u32) -> bool {
    const WITHOUT: &[u8] = b"SSL is not supported by this build";
    let server = fs::read(installed(major).join("postgres")).unwrap_or_default();
    !server.windows(WITHOUT.len()).any(|w| w == WITHOUT)
}

/// The CA that signed [`cluster_of`]`(major)`'s certificate, for
/// `sslrootcert` (None: that build has no TLS).
pub fn matrix_ca(major: u32) -> Option<PathBuf> {
    has_tls(major).then(|| cluster_of(major).data().join("client-ca.crt"))
}

/// A second cluster of PostgreSQL `major` with `archive_mode = on` and an
/// empty `archive_command` (WAL is kept until a test sets one).
pub fn archiving_cluster_of(major: u32) -> &'static Cluster {
    static SLOTS: [OnceLock<Cluster>; 6] = [const { OnceLock::new() }; 6];
    start_once(&SLOTS[matrix_index(major)], || Setup {
        bindir: Some(installed(major)),
        conf: format!("{}{KEEP_WAL}", crate::wal::ARCHIVING_CONF),
        ..Setup::default()
    })
}

/// A PostgreSQL 18 cluster (every tool) that archives (an empty
/// archive_command until a test sets one) and summarizes its WAL
/// (`summarize_wal = on`): incremental base sets.
pub fn summarizing_cluster() -> &'static Cluster {
    static SLOT: OnceLock<Cluster> = OnceLock::new();
    start_once(&SLOT, || Setup {
        bindir: Some(installed(18)),
        conf: format!(
            "{}{KEEP_WAL}summarize_wal = on\n",
            crate::wal::ARCHIVING_CONF
        ),
        ..Setup::default()
    })
}

/// WAL kept for base backups in fetch mode: the matrix's tests share a
/// cluster, and on 14 every CREATE DATABASE is a checkpoint that can
/// recycle the WAL a running `pgbackup --physical` still has to fetch (what
/// an operator sets on a busy server: wal_keep_size).
const KEEP_WAL: &str = "wal_keep_size = '256MB'\n";

fn matrix_index(major: u32) -> usize {
    MATRIX
        .iter()
        .position(|m| *m == major)
        .unwrap_or_else(|| panic!("PostgreSQL {major} is not in the matrix"))
}

fn installed(major: u32) -> PathBuf {
    matrix_bindir(major).unwrap_or_else(|| {
        panic!("PostgreSQL {major} is not installed: scripts/ensure-deps.sh installs it")
    })
}

/// The directory holding `initdb`, `pg_ctl`, `pg_dump`, ...:
/// `$OPSKIT_PG_BINDIR`; `$OPSKIT_TEST_PG=MAJOR`, the whole suite on that
/// major of the matrix (one with every tool: 15 or 18 here; put its
/// bindir first on PATH too, so that the tools find its client programs:
/// `OPSKIT_TEST_PG=18 PATH=$PWD/.deps/pg/18/bin:$PATH cargo test`); else
/// `pg_config --bindir`, or the newest `/usr/lib/postgresql/*/bin` (the
/// default: Debian's 15, the fastest to set up).
pub fn bindir() -> PathBuf {
    if let Ok(d) = std::env::var("OPSKIT_PG_BINDIR") {
        return PathBuf::from(d);
    }
    if let Ok(v) = std::env::var("OPSKIT_TEST_PG") {
        let major: u32 = v
            .parse()
            .unwrap_or_else(|_| panic!("OPSKIT_TEST_PG={v}: give a major version"));
        let b = matrix_bindir(major).unwrap_or_else(|| {
            panic!("OPSKIT_TEST_PG={major}: not installed (scripts/ensure-deps.sh)")
        });
        assert!(
            b.join("pg_dump").exists(),
            "OPSKIT_TEST_PG={major}: only its server is installed here; the whole suite needs every tool (15 or 18)"
        );
        return b;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if d.join("initdb").exists() {
            return d;
        }
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let b = e.path().join("bin");
            b.join("initdb").exists().then_some((v, b))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).expect(
        "no PostgreSQL binaries: install postgresql (initdb, pg_ctl) or set OPSKIT_PG_BINDIR",
    )
}
