//! The checksum file of an archived WAL file: `ROOT/wal/<tli>/<name>.sha256`
//! (the layout is [`crate::walstore`]'s).
//!
//! Its first line is `<sha256 of the original> <bytes> <stored file name>`,
//! then for a segment the last transaction it ends (`xact=<time>@<lsn>`,
//! `xact=-` when it ends none; absent when it was not read): what the
//! recovery window's newest point is made of ([`crate::window`]). When the
//! archiver has a signing key, the minisign signature of that line
//! follows (trusted comment `opskit-wal <name>`), so a segment or checksum
//! forged in the archive or the bucket is refused by `walarchive fetch`
//! during recovery. It is written last, in one rename: a WAL file without
//! it is not archived.

use std::path::Path;

use chrono::{DateTime, Utc};

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
    /// The last transaction the segment ends, as `walarchive push` read
    /// it with `pg_waldump`.
    pub xact: LastXact,
    /// The minisign signature of the first line, if signed.
    pub signature: Option<String>,
}

/// The last commit or abort record in an archived segment: recovery to a
/// time stops at these records only, so the newest of them is the newest
/// point the archive recovers to.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum LastXact {
    /// Not read (an older archiver, a history file, no pg_waldump).
    #[default]
    Unread,
    /// Read: the segment holds no commit or abort.
    NoneIn,
    /// The record's commit time and where it starts in the WAL.
    At(DateTime<Utc>, u64),
}

impl LastXact {
    /// `xact=2026-12-07T03:58:49.034616Z@0/2773A38`, `xact=-`, or nothing.
    fn field(&self) -> String {
        match self {
            LastXact::Unread => String::new(),
            LastXact::NoneIn => " xact=-".into(),
            LastXact::At(t, lsn) => format!(
                " xact={}@{}",
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
                crate::physical::format_lsn(*lsn)
            ),
        }
    }

    fn parse(word: &str) -> Option<LastXact> {
        let v = word.strip_prefix("xact=")?;
        if v == "-" {
            return Some(LastXact::NoneIn);
        }
        let (t, lsn) = v.split_once('@')?;
        let t = DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc);
        Some(LastXact::At(t, crate::physical::parse_lsn(lsn)?))
    }
}

/// A stored file's name: no path, not hidden.
fn plain_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/')
}

impl Sidecar {
    /// The first line, which the signature covers.
    pub fn line(&self) -> String {
        format!(
            "{} {} {}{}\n",
            self.sha256,
            self.bytes,
            self.stored,
            self.xact.field()
        )
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
            w.next().map(LastXact::parse),
            w.next(),
        ) {
            (Some(sha), Some(bytes), Some(stored), xact, None)
                if sha.len() == 64
                    && sha.bytes().all(|b| b.is_ascii_hexdigit())
                    && plain_name(stored)
                    && xact.is_none_or(|x| x.is_some()) =>
            {
                Ok(Sidecar {
                    sha256: sha.into(),
                    bytes,
                    stored: stored.into(),
                    xact: xact.flatten().unwrap_or_default(),
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

    fn text_has_xact(word: &str) -> bool {
        matches!(LastXact::parse(word), Some(LastXact::At(..)))
    }

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
            xact: LastXact::Unread,
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
        // The last transaction rides in the signed line: moved, it is refused.
        let t = DateTime::parse_from_rfc3339("2026-12-07T03:58:49.034616Z")
            .unwrap()
            .with_timezone(&Utc);
        for xact in [LastXact::NoneIn, LastXact::At(t, 0x2773A38)] {
            let x = Sidecar { xact, ..s.clone() };
            let text = x.render(name, Some(&key)).unwrap();
            let back = Sidecar::parse(&text, p).unwrap();
            assert_eq!(back.xact, xact, "{text}");
            assert!(back.check(name, &trust).is_ok());
            let moved = Sidecar {
                xact: LastXact::Unread,
                ..back
            };
            assert!(moved.check(name, &trust).is_err());
        }
        assert!(text_has_xact("xact=2026-12-07T03:58:49.034616Z@0/2773A38"));
        let bad = format!("{} 1 a.zst xact=yesterday\n", "a".repeat(64));
        assert!(Sidecar::parse(&bad, p).is_err());
        assert!(Sidecar::parse(&format!("{} 1 ../x\n", "a".repeat(64)), p).is_err());
    }
}
