//! Running the tool binaries from tests and reading their records.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Path of a tool binary built by this workspace (beside the test binary's
/// target dir; `CARGO_BIN_EXE_<name>` only exists in the owning package).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary is not in target/<profile>/deps");
    let p = profile_dir.join(name);
    if !p.exists() {
        // From the workspace root: a test's cwd is its own package.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --bins failed");
    }
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// What a tool run produced.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Every stdout line parsed as a JSON object; panics on a line that is not one.
    pub fn records(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"));
                assert!(v.is_object(), "record is not an object: {l}");
                v
            })
            .collect()
    }

    /// The records with `event` == `event`.
    pub fn events(&self, event: &str) -> Vec<Value> {
        self.records()
            .into_iter()
            .filter(|r| r["event"] == event)
            .collect()
    }

    /// The check named `name` of the first `verify` record.
    pub fn check(&self, name: &str) -> Value {
        self.events("verify")[0]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check: {}", self.stdout))
            .clone()
    }

    /// Exit 0, or a panic showing stdout and stderr.
    pub fn ok(&self) {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
    }

    /// The last record, which must be the summary.
    pub fn summary(&self) -> Value {
        let recs = self.records();
        let last = recs.last().cloned().expect("no records on stdout");
        assert_eq!(
            last["event"], "summary",
            "last record is not a summary: {last}"
        );
        last
    }
}

/// Run `cmd` to completion with stdin closed, capturing everything.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `cmd` with `input` on its stdin, capturing everything.
pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped");
    let input = input.to_string();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = output_of(child);
    let _ = feeder.join();
    out
}

/// Wait for a spawned child (stdout/stderr piped) and capture its output.
pub fn output_of(child: std::process::Child) -> Output {
    let out = child.wait_with_output().expect("waiting for child");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A small seeded xorshift generator, so property tests are repeatable
/// without a crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The smallest valid `MANIFEST.json` for a set directory named `set`
/// (`app-20261123T030000Z`), for tests of tools that only list sets.
pub fn minimal_manifest(set: &str) -> String {
    let (name, ts) = set.rsplit_once('-').unwrap_or((set, ""));
    let t = chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%dT%H%M%SZ")
        .map(|t| t.and_utc())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    serde_json::json!({
        "format": "opskit-set/1", "set": set, "name": name, "tool": "pgbackup",
        "tool_version": "0", "started_at": t, "finished_at": t, "duration_s": 1.0,
        "files": []
    })
    .to_string()
}

/// [`minimal_manifest`] of a dump set (its `database` part names a dump
/// file the set lists), for tools that tell dumps from base sets.
pub fn minimal_dump_manifest(set: &str) -> String {
    let mut m: Value = serde_json::from_str(&minimal_manifest(set)).unwrap();
    m["files"] = serde_json::json!([{"name": "db.dump", "kind": "database", "bytes": 0,
        "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}]);
    m["database"] = serde_json::json!({"name": "app", "server": "localhost:5432",
        "server_version": "15", "server_version_num": 150000, "pg_dump_version": "15",
        "format": "custom", "file": "db.dump", "restore_command": "pg_restore db.dump"});
    m.to_string()
}
