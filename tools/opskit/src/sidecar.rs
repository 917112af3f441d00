//! The checksum file of an archived WAL file: `ROOT/wal/<tli>/<name>.sha256`
//! (the layout is [`crate::walstore`]'s).
//!
//! Its first line is `<sha256 of the original> <bytes> <stored file name>`;
//! when the archiver has a signing key, the minisign signature of that line
//! follows (trusted comment `opskit-wal <name>`), so a segment or checksum
//! forged in the archive or the bucket is refused by `walarchive fetch`
//! during recovery. It is written last, in one rename: a WAL file without
//! it is not archived.

use std::path::Path;

use crate::sign::{SigningKey, Trust};
use crate::{Error, Result};

/// The largest checksum file read (a line and a signature).
pub const MAX_SIDECAR: u64 = 4096;

/// What the checksum file of an archived WAL file says.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub sha256: String,
    pub bytes: u64,
    /// The stored file's name in the same directory (`<name>.zst[.age]`).
    pub stored: String,
    /// The minisign signature of the first line, if signed.
    pub signature: Option<String>,
}

/// A stored file's name: no path, not hidden.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/')
}

impl Sidecar {
    /// The first line, which the signature covers.
    pub fn line(&self) -> String {
        format!("{} {} {}\n", self.sha256, self.bytes, self.stored)
    }

    /// The file's text, signed for `name` when there is a key.
    pub fn render(&self, name: &str, key: Option<&SigningKey>) -> Result<String> {
        let line = self.line();
        Ok(match key {
            Some(k) => {
                let sig = k.sign(line.as_bytes(), &crate::sign::wal_comment(name))?;
                format!("{line}{sig}")
            }
            None => line,
        })
    }

    /// Read the checksum file at `path` (`None` when there is none), never
    /// through a link, at most [`MAX_SIDECAR`] bytes.
    pub fn read(path: &Path) -> Result<Option<Sidecar>> {
        let f = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            _ => crate::safefs::open_nofollow(path, std::fs::OpenOptions::new().read(true))?,
        };
        let text = crate::safefs::read_bounded(f, path, MAX_SIDECAR)?;
        Self::parse(&String::from_utf8_lossy(&text), path).map(Some)
    }

    /// Parse a checksum file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Sidecar> {
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let mut w = first.split(' ');
        match (
            w.next(),
            w.next().and_then(|b| b.parse().ok()),
            w.next(),
            w.next(),
        ) {
            (Some(sha), Some(bytes), Some(stored), None)
                if sha.len() == 64
                    && sha.bytes().all(|b| b.is_ascii_hexdigit())
                    && plain_name(stored) =>
            {
                Ok(Sidecar {
                    sha256: sha.into(),
                    bytes,
                    stored: stored.into(),
                    signature: (!rest.trim().is_empty()).then(|| rest.to_string()),
                })
            }
            _ => Err(Error::failure(format!(
                "{}: not an archive checksum file",
                path.display()
            ))),
        }
    }

    /// Check the signature for WAL file `name` with `trust`.
    pub fn check(&self, name: &str, trust: &Trust) -> std::result::Result<String, String> {
        trust.check(
            self.line().as_bytes(),
            self.signature.as_deref(),
            &crate::sign::wal_comment(name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_signed_and_not() {
        let d = tempfile::tempdir().unwrap();
        let (sk, pk) = crate::sign::generate("t").unwrap();
        let kp = d.path().join("k");
        std::fs::write(&kp, sk).unwrap();
        std::fs::set_permissions(&kp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let key = SigningKey::load(&kp).unwrap();
        let s = Sidecar {
            sha256: "a".repeat(64),
            bytes: 16 << 20,
            stored: "000000010000000000000001.zst".into(),
            signature: None,
        };
        let name = "000000010000000000000001";
        let p = Path::new("x.sha256");
        let plain = s.render(name, None).unwrap();
        assert_eq!(Sidecar::parse(&plain, p).unwrap(), s);
        let signed = Sidecar::parse(&s.render(name, Some(&key)).unwrap(), p).unwrap();
        let trust = Trust::new(Some(crate::sign::public_line(&pk)), None, false).unwrap();
        assert!(signed.check(name, &trust).is_ok());
        // Moved to another segment, or its checksum changed: refused.
        assert!(signed.check("000000010000000000000002", &trust).is_err());
        let mut forged = signed.clone();
        forged.sha256 = "b".repeat(64);
        assert!(
            forged
                .check(name, &trust)
                .unwrap_err()
                .contains("bad signature")
        );
        assert!(s.check(name, &trust).unwrap_err().contains("not signed"));
        let file = d.path().join("x.sha256");
        assert_eq!(Sidecar::read(&file).unwrap(), None);
        std::fs::write(&file, &plain).unwrap();
        assert_eq!(Sidecar::read(&file).unwrap(), Some(s.clone()));
        let link = d.path().join("link.sha256");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(Sidecar::read(&link).is_err(), "never read through a link");
        assert!(Sidecar::parse("zz 1 a\n", p).is_err());
        assert!(Sidecar::parse(&format!("{} 1 ../x\n", "a".repeat(64)), p).is_err());
    }
}
