//! A throwaway PostgreSQL cluster for tests.
//!
//! One cluster per test binary ([`cluster`]), started on first use with
//! `initdb` + `pg_ctl` into a temp dir, on a free loopback port and a socket
//! dir of its own. As root, the server runs as the `postgres` user. The
//! cluster is stopped and removed when the test binary exits, however it
//! exits: an `atexit` hook stops it on a normal or failing exit, and a
//! watchdog process, which waits for the test binary's end on a pipe, stops
//! it even after a SIGKILL.
//!
//! Each test takes a fresh database ([`Cluster::create_db`]). Connections
//! over TCP need a password (scram-sha-256), and the password has URL
//! metacharacters in it, so every test exercises URL decoding and redaction.

mod conf;
mod control;
mod matrix;
pub mod pair;

pub use matrix::{
    MATRIX, archiving_cluster_of, base_backup_lock, bindir, client_bindir, cluster_of, has_tls,
    matrix_bindir, matrix_ca, summarizing_cluster,
};

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// The superuser the harness creates.
pub const SUPERUSER: &str = "opskit";

/// What a cluster has beyond the defaults (a TLS cluster's settings).
#[derive(Default)]
pub(crate) struct Setup {
    /// `listen_addresses`; 127.0.0.1 when empty.
    pub(crate) listen: &'static str,
    /// More `postgresql.conf` lines.
    pub(crate) conf: String,
    /// A `pg_hba.conf` in place of initdb's.
    pub(crate) hba: Option<String>,
    /// Files written into the data directory, 0600, owned by the server.
    pub(crate) files: Vec<(&'static str, String)>,
    /// SQL run in `postgres` once the server is up.
    pub(crate) sql: String,
    /// The server's bindir, in place of [`bindir`]'s.
    pub(crate) bindir: Option<PathBuf>,
    /// A standby of this primary: its data directory is copied with
    /// `pg_basebackup` instead of made by `initdb` ([`pair`]).
    pub(crate) standby_of: Option<pair::Upstream>,
    /// Debian's layout: `postgresql.conf` (with these lines added),
    /// `pg_hba.conf` and `pg_ident.conf` in `etc/` beside the data
    /// directory, none in it ([`crate::wal::outside_conf_cluster`]).
    pub(crate) conf_outside: Option<String>,
}

/// A running throwaway cluster.
pub struct Cluster {
    setup: Setup,
    root: PathBuf,
    bindir: PathBuf,
    port: u16,
    password: String,
    run_as: Option<(u32, u32)>,
    next_db: AtomicUsize,
    /// Serialises stop/start.
    state: Mutex<()>,
    /// Tests share the server; a test that stops it holds it alone.
    users: Users,
    _watchdog: Mutex<Option<Child>>,
}

/// A database created for one test. While it lives, the test holds the
/// server: shared with other tests, or alone for a test that stops it.
pub struct TestDb {
    pub name: String,
    /// `postgresql://opskit:<password>@127.0.0.1:<port>/<name>`
    pub url: String,
    _hold: Hold,
}

/// Who uses the server: any number of sharing tests, or one test alone.
/// Unlike `std::sync::RwLock`, a waiting lone test does not block new
/// sharers, so a test that holds two databases cannot deadlock against it;
/// the lone test runs once the sharers are done.
#[derive(Default)]
struct Users {
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

enum Hold {
    Shared(&'static Users),
    Alone(&'static Users),
}

impl Users {
    fn share(&'static self) -> Hold {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.1 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 += 1;
        Hold::Shared(self)
    }

    fn alone(&'static self) -> Hold {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.1 || s.0 > 0 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.1 = true;
        Hold::Alone(self)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let users = match self {
            Hold::Shared(u) | Hold::Alone(u) => *u,
        };
        let mut s = users.state.lock().unwrap_or_else(|e| e.into_inner());
        match self {
            Hold::Shared(_) => s.0 -= 1,
            Hold::Alone(_) => s.1 = false,
        }
        users.changed.notify_all();
    }
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// Every cluster this test binary started, stopped at its exit.
static STARTED: Mutex<Vec<&'static Cluster>> = Mutex::new(Vec::new());

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    start_once(&CLUSTER, Setup::default)
}

/// Start the cluster in `slot` on first use, and stop it at exit.
pub(crate) fn start_once(
    slot: &'static OnceLock<Cluster>,
    setup: impl FnOnce() -> Setup,
) -> &'static Cluster {
    let mut fresh = false;
    let c = slot.get_or_init(|| {
        fresh = true;
        Cluster::start_new(setup()).unwrap_or_else(|e| panic!("test cluster: {e}"))
    });
    if fresh {
        let mut started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        if started.is_empty() {
            register_atexit();
        }
        started.push(c);
    }
    c
}

#[allow(unsafe_code)]
fn register_atexit() {
    extern "C" fn stop_at_exit() {
        let started = STARTED.lock().unwrap_or_else(|e| e.into_inner());
        for c in started.iter() {
            c.destroy();
        }
    }
    // SAFETY: registers a plain function pointer; the function only runs
    // child processes and removes files.
    unsafe {
        libc::atexit(stop_at_exit);
    }
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == "postgres" {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl Cluster {
    fn start_new(setup: Setup) -> Result<Cluster, String> {
        let bindir = setup.bindir.clone().unwrap_or_else(bindir);
        let run_as = if is_root() {
            Some(postgres_ids().ok_or("running as root but there is no 'postgres' user")?)
        } else {
            None
        };
        let root = tempfile::Builder::new()
            .prefix("opskit-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        fs::create_dir(root.join("sock")).map_err(|e| e.to_string())?;
        let password = format!("s3cr:t@/pw {}", std::process::id());
        fs::write(root.join("pwfile"), format!("{password}\n")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            for p in [root.clone(), root.join("sock"), root.join("pwfile")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).map_err(|e| e.to_string())?;
        let mut c = Cluster {
            setup,
            root,
            bindir,
            port: 0,
            password,
            run_as,
            next_db: AtomicUsize::new(0),
            state: Mutex::new(()),
            users: Users::default(),
            _watchdog: Mutex::new(None),
        };
        match &c.setup.standby_of {
            Some(up) => c.copy_from(up)?,
            None => c.initdb()?,
        }
        c.spawn_watchdog()?;
        c.write_files()?;
        c.move_conf_outside()?;
        let mut last = String::new();
        for _ in 0..5 {
            c.port = free_port();
            c.write_conf()?;
            match c.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log")) {
                Ok(()) => {
                    // One statement at a time: CREATE DATABASE cannot run
                    // in the implicit transaction of a batch.
                    let mut client = c.client("postgres");
                    for stmt in c.setup.sql.split(';').filter(|s| !s.trim().is_empty()) {
                        if let Err(e) = client.batch_execute(stmt) {
                            c.destroy();
                            return Err(format!("setting up the cluster: {stmt}: {e:?}"));
                        }
                    }
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        c.destroy();
        Err(format!("could not start PostgreSQL: {last}"))
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(prog));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env("HOME", &self.root).env("LC_ALL", "C.UTF-8");
        // Keep Ctrl-C of the test run away from the server: the watchdog stops it.
        cmd.process_group(0);
        cmd
    }

    fn initdb(&self) -> Result<(), String> {
        let out = self
            .cmd("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", self.root.join("pwfile").display()))
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// A process that waits for this test binary to end (its stdin pipe
    /// closes, however we die) and then stops the server and removes it.
    fn spawn_watchdog(&self) -> Result<(), String> {
        let script =
            r#"cat >/dev/null; "$0" -D "$1" stop -m immediate -w >/dev/null 2>&1; rm -rf "$2""#;
        let mut cmd = Command::new("/bin/sh");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .arg("-c")
            .arg(script)
            .arg(self.bindir.join("pg_ctl"))
            .arg(self.data())
            .arg(&self.root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting watchdog: {e}"))?;
        *self._watchdog.lock().unwrap() = Some(child);
        Ok(())
    }

    fn pg_ctl(&self, args: &[&str], log: Option<&str>) -> Result<(), String> {
        let mut cmd = self.cmd("pg_ctl");
        cmd.arg("-D").arg(self.data()).args(args);
        if let Some(l) = log {
            cmd.arg(self.root.join(l));
        }
        if args.first() == Some(&"start") && self.setup.conf_outside.is_some() {
            cmd.arg("-o").arg(format!(
                "-c config_file={}",
                self.etc().join("postgresql.conf").display()
            ));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            Err(format!(
                "pg_ctl {}: {}{}\n{}",
                args[0],
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    }

    /// The cluster's own directory (data, socket, logs).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Where the server's Unix socket is.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (tests look for it where it must not be).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The PostgreSQL binaries this cluster runs.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A URL for database `db`, with the (percent-encoded) password.
    pub fn url(&self, db: &str) -> String {
        let pw = percent_encoding::utf8_percent_encode(
            &self.password,
            percent_encoding::NON_ALPHANUMERIC,
        );
        format!("postgresql://{SUPERUSER}:{pw}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL for database `db` over the Unix socket, needing no password.
    pub fn socket_url(&self, db: &str) -> String {
        let dir = percent_encoding::utf8_percent_encode(
            &self.socket_dir().display().to_string(),
            percent_encoding::NON_ALPHANUMERIC,
        )
        .to_string();
        format!("postgresql://{SUPERUSER}@{dir}:{}/{db}", self.port)
    }

    /// A client connected to `db` over the socket.
    pub fn client(&self, db: &str) -> postgres::Client {
        let mut cfg = postgres::Config::new();
        cfg.host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname(db)
            .connect_timeout(Duration::from_secs(10));
        cfg.connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to test database {db}: {e}"))
    }

    /// A fresh, empty database for one test, sharing the server with the
    /// other tests of the binary.
    pub fn create_db(&'static self) -> TestDb {
        self.new_db(self.users.share())
    }

    /// A fresh database for a test that stops or restarts the server: it
    /// waits until no other test uses the server and keeps others out
    /// until it is dropped.
    pub fn create_db_alone(&'static self) -> TestDb {
        self.new_db(self.users.alone())
    }

    fn new_db(&self, hold: Hold) -> TestDb {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.client("postgres")
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        TestDb {
            url: self.url(&name),
            name,
            _hold: hold,
        }
    }

    /// Run SQL in `db` and return the rows of the last statement as text
    /// (columns joined by `|`), via the client.
    /// The names of the databases whose name starts with `prefix`, taken
    /// literally (`_` and `%` are no wildcards here).
    pub fn databases_starting_with(&self, prefix: &str) -> Vec<String> {
        let mut pattern = String::new();
        for c in prefix.chars() {
            match c {
                '\\' | '_' | '%' => pattern.push('\\'),
                '\'' => pattern.push('\''),
                _ => {}
            }
            pattern.push(c);
        }
        self.query(
            "postgres",
            &format!(
                "SELECT datname FROM pg_database WHERE datname LIKE '{pattern}%' ORDER BY datname"
            ),
        )
    }

    pub fn query(&self, db: &str, sql: &str) -> Vec<String> {
        let mut c = self.client(db);
        let msgs = c.simple_query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        msgs.into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    }

    /// Environment for a child process to reach this cluster with the
    /// password in `PGPASSWORD` (for the real `psql`/`pg_dump` in tests).
    pub fn child_env(&self, db: &str) -> Vec<(String, String)> {
        vec![
            ("PGHOST".into(), "127.0.0.1".into()),
            ("PGPORT".into(), self.port.to_string()),
            ("PGUSER".into(), SUPERUSER.into()),
            ("PGPASSWORD".into(), self.password.clone()),
            ("PGDATABASE".into(), db.into()),
        ]
    }

    /// Run one of the cluster's binaries (`psql`, `pg_dump`, ...) against `db`
    /// and return stdout; panics with stderr on failure.
    pub fn run_bin(&self, prog: &str, db: &str, args: &[&str]) -> String {
        let out = Command::new(self.bindir.join(prog))
            .envs(self.child_env(db))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        assert!(
            out.status.success(),
            "{prog} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a set's `database.restore_command` (from its manifest) with the
    /// stock tools, as an operator would, into existing database `target`.
    pub fn restore_with_manifest(
        &self,
        set: &Path,
        manifest: &serde_json::Value,
        target: &str,
    ) -> crate::Output {
        self.restore_with_manifest_env(set, manifest, target, &[])
    }

    /// [`Cluster::restore_with_manifest`] with more environment (an
    /// encrypted set's `AGE_IDENTITY`).
    pub fn restore_with_manifest_env(
        &self,
        set: &Path,
        manifest: &serde_json::Value,
        target: &str,
        env: &[(&str, &Path)],
    ) -> crate::Output {
        let path = format!(
            "{}:{}",
            self.bindir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        crate::tools::run(
            Command::new("bash")
                .args(["-o", "pipefail", "-c"])
                .arg(manifest["database"]["restore_command"].as_str().unwrap())
                .current_dir(set)
                .envs(self.child_env(target))
                .env("TARGET_DB", target)
                .envs(env.iter().copied())
                .env("PATH", path),
        )
    }

    /// Stop the server and remove its files.
    fn destroy(&self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"], None);
        let _ = fs::remove_dir_all(&self.root);
    }
}
