//! age keys for tests, made by the reference tool (`age-keygen`), and the
//! stock `age` commands that decrypt and encrypt set files.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An age key pair: the identity file (0600) and its public key.
pub struct Key {
    pub identity: PathBuf,
    pub public: String,
}

impl Key {
    /// A new key in `dir/name` (made by `age-keygen`).
    pub fn new(dir: &Path, name: &str) -> Key {
        let identity = dir.join(name);
        let out = Command::new("age-keygen")
            .arg("-o")
            .arg(&identity)
            .stderr(Stdio::null())
            .status()
            .expect("running age-keygen (scripts/ensure-deps.sh installs age)");
        assert!(out.success(), "age-keygen failed");
        fs::set_permissions(&identity, fs::Permissions::from_mode(0o600)).unwrap();
        let out = Command::new("age-keygen")
            .arg("-y")
            .arg(&identity)
            .output()
            .unwrap();
        assert!(out.status.success());
        Key {
            identity,
            public: String::from_utf8(out.stdout).unwrap().trim().to_string(),
        }
    }

    /// The secret key line of the identity file (to look for leaks).
    pub fn secret(&self) -> String {
        fs::read_to_string(&self.identity)
            .unwrap()
            .lines()
            .find(|l| l.starts_with("AGE-SECRET-KEY-"))
            .expect("a secret key line")
            .to_string()
    }

    /// `age -d -i IDENTITY FILE`: the plaintext, or None when age refuses.
    pub fn decrypt(&self, file: &Path) -> Option<Vec<u8>> {
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(&self.identity)
            .arg(file)
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// `age -r PUBLIC -o OUT IN`: encrypt with the reference tool.
    pub fn encrypt_with_age(&self, input: &Path, out: &Path) {
        let st = Command::new("age")
            .args(["-r", &self.public, "-o"])
            .arg(out)
            .arg(input)
            .status()
            .unwrap();
        assert!(st.success(), "age -r failed");
    }
}
