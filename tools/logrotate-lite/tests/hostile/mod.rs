//! What the tests of a hostile log directory and of hostile inputs share:
//! the tool under a deadline, a root-only victim file that must come out
//! untouched, and an attacker thread that swaps a log for a symlink.

#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_logrotate-lite");

/// How long one run may take before it counts as hung.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// What a run of the tool left.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The `error` records' messages.
    pub fn errors(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "error")
            .map(|v| v["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The summary record.
    pub fn summary(&self) -> serde_json::Value {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "summary")
            .unwrap_or_default()
    }
}

/// The tool, with the test's logging settings out of the way.
pub fn lite() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("OPSKIT_LOG");
    c
}

/// Run `cmd`; a run still going after [`DEADLINE`] is killed and fails
/// the test (a FIFO or a device must never make the tool hang).
pub fn run(cmd: &mut Command) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "still running after {DEADLINE:?}: {cmd:?}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().expect("wait");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A root-only file outside the log directory, and what it must stay.
pub struct Victim {
    pub path: PathBuf,
}

pub const SECRET: &str = "root:only:secret\n";

impl Victim {
    pub fn new(dir: &Path) -> Victim {
        let path = dir.join("victim");
        std::fs::write(&path, SECRET).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
        Victim { path }
    }

    /// Panic, naming `when`, if the victim was truncated, written,
    /// chowned or chmodded.
    pub fn assert_intact(&self, when: &str) {
        let m = std::fs::symlink_metadata(&self.path).unwrap();
        let got = (m.mode() & 0o7777, m.uid(), m.gid());
        assert_eq!(
            got,
            (0o600, 0, 0),
            "{when}: the victim's mode/owner changed"
        );
        let text = std::fs::read_to_string(&self.path).unwrap();
        assert_eq!(text, SECRET, "{when}: the victim's content changed");
    }
}

/// Put a fresh regular file at `path` with one atomic rename (whatever
/// was there, a symlink included, is replaced).
pub fn put_regular(path: &Path, text: &str) {
    let tmp = path.with_file_name(".put-regular");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The attacker: until stopped, swap `log` between a fresh regular file
/// and a symlink to `victim`, each by an atomic rename (so the name always
/// exists); how many swaps it made.
pub fn flipper(log: PathBuf, victim: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let dir = log.parent().unwrap().to_path_buf();
        let (file, link) = (dir.join(".flip-file"), dir.join(".flip-link"));
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let _ = std::fs::write(&file, "app line\n");
            let _ = std::fs::rename(&file, &log);
            let _ = symlink(&victim, &link);
            let _ = std::fs::rename(&link, &log);
            n += 1;
        }
        n
    })
}

/// The attacker who waits for the log to be moved away: until stopped,
/// plant a symlink to `victim` under the log's name the moment the name
/// is free; how many it planted.
pub fn planter(log: PathBuf, victim: PathBuf, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            if symlink(&victim, &log).is_ok() {
                n += 1;
            }
        }
        n
    })
}
