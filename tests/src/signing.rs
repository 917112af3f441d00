//! Signing keys for tests, made by the reference tool (`minisign -G -W`),
//! and the environment that makes the tools sign and check with them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A minisign key pair: the secret key file (0600) and the public key line.
#[derive(Debug, Clone)]
pub struct Keys {
    pub key: PathBuf,
    pub public: String,
}

impl Keys {
    /// A new pair in `dir` as `name` and `name.pub`, by `minisign -G -W`.
    pub fn new(dir: &Path, name: &str) -> Keys {
        let key = dir.join(name);
        let public = dir.join(format!("{name}.pub"));
        let st = Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(&public)
            .arg("-s")
            .arg(&key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running minisign (scripts/ensure-deps.sh installs it)");
        assert!(st.success(), "minisign -G failed");
        let text = std::fs::read_to_string(&public).unwrap();
        Keys {
            key,
            public: text.lines().nth(1).unwrap().trim().to_string(),
        }
    }

    /// A copy of the secret key in `dir` owned by `c`'s server user (0600),
    /// for an archive_command or a procedure that runs as that user.
    pub fn copy_for(&self, c: &crate::Cluster, dir: &Path) -> PathBuf {
        let to = dir.join("signing.key");
        std::fs::copy(&self.key, &to).unwrap();
        c.give(&to);
        to
    }

    /// `OPSKIT_SIGNING_KEY` and `OPSKIT_SIGNING_PUBKEYS` for these keys.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("OPSKIT_SIGNING_KEY", self.key.display().to_string()),
            ("OPSKIT_SIGNING_PUBKEYS", self.public.clone()),
        ]
    }
}

/// The key pair of this test binary, in the target directory
/// (`target/<profile>/test-signing/<test binary>/pair/`), so nothing is
/// left in /tmp. Each test runs in a process of its own (nextest), and
/// many start at once: the first to finish making a pair renames its
/// directory into place and every process uses that one (a pair made
/// over another's files would sign with a key others do not trust).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let stem = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let dir = exe
            .parent()
            .and_then(|d| d.parent())
            .unwrap()
            .join("test-signing")
            .join(stem);
        std::fs::create_dir_all(&dir).unwrap();
        let pair = dir.join("pair");
        let public = pair.join("opskit.key.pub");
        if !public.exists() {
            let tmp = tempfile::tempdir_in(&dir).unwrap();
            Keys::new(tmp.path(), "opskit.key");
            // Fails when another process was first: its pair is used.
            let _ = std::fs::rename(tmp.path(), &pair);
        }
        let text = std::fs::read_to_string(&public).unwrap();
        Keys {
            key: pair.join("opskit.key"),
            public: text.lines().nth(1).unwrap().trim().to_string(),
        }
    })
}

/// Make `cmd` sign with and trust this test binary's keys. Progress lines
/// are off (a developer's exported OPSKIT_PROGRESS_EVERY, or a slow run,
/// would add lines to a stderr a test reads); the tests of progress turn
/// them on.
pub fn signed(cmd: &mut Command) -> &mut Command {
    cmd.envs(keys().env()).env("OPSKIT_PROGRESS_EVERY", "0")
}

/// `Command::new(program)` that signs with and trusts this test binary's
/// keys (for pgbackup, verify-backup, walarchive and offsite).
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    signed(&mut c);
    c
}

/// Sign a set's `MANIFEST.json` again with this test binary's key, with
/// the stock `minisign -S` (after a test changed the manifest as the
/// set's owner would).
pub fn resign(set: &Path) {
    let name = set.file_name().unwrap().to_string_lossy().into_owned();
    let manifest = std::fs::read_to_string(set.join("MANIFEST.json")).unwrap_or_default();
    // A base set is signed as one (readers trust a key per kind).
    let kind = if manifest.contains("\"physical\"") {
        "opskit-base"
    } else {
        "opskit-set"
    };
    let st = Command::new("minisign")
        .args(["-S", "-s"])
        .arg(&keys().key)
        .arg("-m")
        .arg(set.join("MANIFEST.json"))
        .args(["-t", &format!("{kind} {name}")])
        .stdout(Stdio::null())
        .status()
        .expect("running minisign");
    assert!(st.success(), "minisign -S failed");
    let sig = set.join("MANIFEST.json.minisig");
    std::fs::set_permissions(sig, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}
