//! Helpers for offsite's tests: real sets from pgbackup, a real S3 server
//! (SeaweedFS, or with OPSKIT_TEST_S3=moto moto over https), the tools run
//! as an operator runs them.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::age::Key;
use opskit_testkit::s3::{S3Server, s3};
use opskit_testkit::tools::run;
use opskit_testkit::{Output, TestDb, bin, cluster};

/// A local backup root with verified sets of a seeded database.
pub struct Local {
    pub tmp: tempfile::TempDir,
    pub db: TestDb,
    pub key: Key,
    pub root: PathBuf,
}

impl Local {
    /// A root and a database with rows and a directory of files (one of
    /// `big_mib` MiB of incompressible bytes: a multipart upload).
    pub fn new(big_mib: usize) -> Local {
        let c = cluster();
        let db = c.create_db();
        c.query(
            &db.name,
            "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 5000) g",
        );
        let tmp = tempfile::tempdir().unwrap();
        let key = Key::new(tmp.path(), "recovery.key");
        let files = tmp.path().join("uploads");
        fs::create_dir(&files).unwrap();
        fs::write(files.join("a.txt"), "an upload\n").unwrap();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let big: Vec<u8> = (0..big_mib << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(files.join("big.bin"), big).unwrap();
        let root = tmp.path().join("backups");
        Local { tmp, db, key, root }
    }

    /// A new set (encrypted unless `plain`), verified with --record.
    pub fn set(&self, plain: bool) -> PathBuf {
        let c = cluster();
        let mut cmd = opskit_testkit::signing::command(bin("pgbackup"));
        cmd.arg("--dest")
            .arg(&self.root)
            .args([
                "--db",
                &self.db.url,
                "--row-counts",
                "--globals",
                "--pg-bindir",
            ])
            .arg(c.bindir())
            .arg("--files")
            .arg(self.tmp.path().join("uploads"))
            .env_remove("OPSKIT_AGE_RECIPIENTS");
        if !plain {
            cmd.args(["--encrypt-to", &self.key.public]);
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let set = PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap());
        let v = run(opskit_testkit::signing::command(bin("verify-backup"))
            .arg("--record")
            .arg(&set)
            .arg("--pg-bindir")
            .arg(c.bindir())
            .env_remove("OPSKIT_AGE_IDENTITY"));
        assert_eq!(v.code, 0, "{}", v.stderr);
        set
    }
}

/// `offsite ARGS` against the test server.
pub fn offsite(args: &[&str]) -> Command {
    let mut c = opskit_testkit::signing::command(env!("CARGO_BIN_EXE_offsite"));
    s3().configure(&mut c);
    c.args(args)
        .env_remove("OPSKIT_LOG")
        .env_remove("OPSKIT_ALLOW_UNSIGNED")
        .env_remove("OPSKIT_BACKUP_ROOT")
        .env_remove("OPSKIT_PITR_ROOT");
    c
}

pub fn server() -> &'static S3Server {
    s3()
}

/// `rclone ARGS` with a remote named `s3:` for the test server.
pub fn rclone(args: &[&str]) -> Output {
    let s = s3();
    let mut cmd = Command::new("rclone");
    if let Some(ca) = &s.ca {
        cmd.arg("--ca-cert").arg(ca);
    }
    run(cmd
        .args(args)
        .env("RCLONE_CONFIG_S3_TYPE", "s3")
        .env("RCLONE_CONFIG_S3_PROVIDER", "Other")
        .env("RCLONE_CONFIG_S3_ACCESS_KEY_ID", opskit_testkit::s3::KEY)
        .env(
            "RCLONE_CONFIG_S3_SECRET_ACCESS_KEY",
            opskit_testkit::s3::SECRET,
        )
        .env("RCLONE_CONFIG_S3_ENDPOINT", &s.endpoint)
        .env("RCLONE_CONFIG_S3_REGION", "us-east-1")
        .env("RCLONE_CONFIG", "/dev/null")
        // The machine's AWS_CA_BUNDLE makes rclone refuse its own transport.
        .env_remove("AWS_CA_BUNDLE"))
}

pub fn name_of(set: &Path) -> String {
    set.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every file of a set directory, by name, with its bytes.
pub fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Nothing is left in a backup root after a failed pull: no set, no
/// staging directory.
pub fn assert_empty(root: &Path) {
    let left: Vec<_> = fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", root.display());
}

pub fn ok(out: &Output) {
    assert_eq!(
        out.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
}

/// Sign `manifest` for set `set` with `keys` (the stock `minisign -S`),
/// writing the signature to `sig`: what an attacker with a key of their
/// own would upload.
pub fn sign_with(keys: &opskit_testkit::signing::Keys, manifest: &Path, set: &str, sig: &Path) {
    let st = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(&keys.key)
        .arg("-m")
        .arg(manifest)
        .arg("-x")
        .arg(sig)
        .args(["-t", &format!("opskit-set {set}")])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running minisign");
    assert!(st.success(), "minisign -S failed");
}

/// Run `cmd` (stdout and stderr piped), killing it and failing the test
/// when it has not ended within `secs` seconds.
pub fn run_within(cmd: &mut Command, secs: u64) -> Output {
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = opskit_testkit::tools::output_of(child);
            panic!("still running after {secs} s: killed\n{}", out.stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    opskit_testkit::tools::output_of(child)
}

/// The objects of a remote set (file names), as rclone lists them.
pub fn remote_files(bucket: &str, set: &str) -> Vec<String> {
    rclone(&["lsf", &format!("s3:{bucket}/app/{set}/")])
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}
