//! The checks of an encrypted (age) set file: its header, read without a
//! key, and with the identity a decrypting read that authenticates every
//! chunk, proves the plaintext's sha256 and runs the structural checks on
//! the plaintext as it streams.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use opskit::backupset::{self, FileEntry, Manifest, SealedContents};
use opskit::crypt::{self, Decrypting, Identities};
use opskit::pgtools::PgTool;

use crate::checks::{self, Check, Name};

/// The age header names as many X25519 recipients as the manifest lists.
/// (age does not record which key a stanza is for: without the identity,
/// the count and the kind are what can be checked.)
pub fn header(path: &Path, f: &FileEntry, m: &Manifest) -> Check {
    let name = Some(f.name.as_str());
    let want = m.encryption.as_ref().map_or(0, |e| e.recipients.len());
    let stanzas = match File::open(path).and_then(crypt::header_stanzas) {
        Ok(s) => s,
        Err(e) => return Check::fail(Name::AgeHeader, name, e.to_string()),
    };
    let x25519 = stanzas.iter().filter(|s| *s == "X25519").count();
    if x25519 == want && stanzas.len() == x25519 {
        Check::pass(
            Name::AgeHeader,
            name,
            format!("{want} X25519 recipient stanza(s), as the manifest lists"),
        )
    } else {
        Check::fail(
            Name::AgeHeader,
            name,
            format!(
                "the header has recipient stanzas [{}]; the manifest lists {want} X25519 recipient(s)",
                stanzas.join(", ")
            ),
        )
    }
}

/// Read, hash and decrypt the file on a thread of its own, check the
/// structure of the plaintext here as it streams, then compare the file
/// and the plaintext with the manifest.
pub fn read(
    file: impl Read + Send + 'static,
    f: &FileEntry,
    m: &Manifest,
    pg_restore: Option<&PgTool>,
    ids: &Identities,
) -> Vec<Check> {
    let name = Some(f.name.as_str());
    let file = opskit::codec::AtMost::new(file, f.bytes, "the file");
    let mut plain = opskit::codec::AtMost::new(
        Decrypting::spawn(file, ids.clone()),
        f.plaintext_bytes.unwrap_or(u64::MAX),
        "its plaintext",
    );
    let mut out = checks::structure(&mut plain, f, m, pg_restore);
    let done = plain.into_inner().finish();
    out.push(match done.plaintext {
        Ok(p) if Some(&p.sha256) == f.plaintext_sha256.as_ref()
            && f.plaintext_bytes.is_none_or(|b| b == p.bytes) =>
        {
            Check::pass(
                Name::Decrypt,
                name,
                format!(
                    "every chunk authenticated; {} bytes of plaintext, sha256 as the manifest records",
                    p.bytes
                ),
            )
        }
        Ok(p) => Check::fail(
            Name::Decrypt,
            name,
            format!(
                "decrypts, but to other content than the manifest records: expected sha256 {}, found {} ({} bytes)",
                f.plaintext_sha256.as_deref().unwrap_or("(none)"),
                p.sha256,
                p.bytes
            ),
        ),
        Err(e) => Check::fail(Name::Decrypt, name, e.to_string()),
    });
    out.push(checks::sha256(f, done.file.map(|p| (p.bytes, p.sha256))));
    out
}

/// `contents.json.age` read from its (decrypted) stream: it must parse.
/// A read error is the stream's, reported by the caller.
pub fn contents(src: &mut dyn Read, name: &str, checks: &mut Vec<Check>) -> io::Result<()> {
    checks.push(match parse_contents(src)? {
        Ok(c) => Check::pass(
            Name::Contents,
            Some(name),
            match &c.row_counts {
                Some(rc) => format!("row counts of {} tables", rc.len()),
                None => "no row counts".to_string(),
            },
        ),
        Err(e) => Check::fail(Name::Contents, Some(name), format!("not valid JSON: {e}")),
    });
    Ok(())
}

fn parse_contents(src: &mut dyn Read) -> io::Result<serde_json::Result<SealedContents>> {
    let mut text = Vec::new();
    src.take(backupset::MAX_MANIFEST).read_to_end(&mut text)?;
    io::copy(src, &mut io::sink())?;
    Ok(serde_json::from_slice(&text))
}

/// The row counts of an encrypted set, from `contents.json.age`.
pub fn row_counts(
    set: &Path,
    m: &Manifest,
    ids: &Identities,
) -> Result<Option<BTreeMap<String, u64>>, String> {
    let Some(f) = m
        .files
        .iter()
        .find(|f| f.kind == backupset::FileKind::Contents)
    else {
        return Ok(None);
    };
    let path = set.join(&f.name);
    let read = File::open(&path)
        .and_then(|fh| ids.open(fh))
        .and_then(|mut o| parse_contents(&mut o));
    match read {
        Ok(Ok(c)) => Ok(c.row_counts),
        Ok(Err(e)) => Err(format!("{}: not valid JSON: {e}", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
