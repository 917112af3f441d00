//! age encryption of set files: the recipients a server encrypts to (public
//! keys only), the identities that decrypt (kept off the server), a writer
//! that encrypts as it streams and a reader that decrypts as it streams.
//!
//! Files are in the age v1 format (age-encryption.org/v1) that Debian's
//! `age` tool reads and writes: 64 KiB chunks, each one authenticated, so a
//! decrypting read proves every byte.

use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::mpsc::sync_channel;
use std::thread::JoinHandle;

use age::x25519;
use sha2::{Digest, Sha256};

use crate::gz::{ChunkReader, HashWriter, hex};
use crate::{Error, IoContext, Result};

/// The scheme a manifest names.
pub const SCHEME: &str = "age";
/// The extension of an encrypted file, with its dot.
pub const EXT: &str = ".age";
/// The first line of every age v1 file.
const MAGIC: &str = "age-encryption.org/v1";
/// The largest recipients or identity file read.
const MAX_KEY_FILE: u64 = 1 << 20;

/// The public keys a set is encrypted to.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<x25519::Recipient>,
}

impl Recipients {
    /// Recipients from `--encrypt-to` values (each may hold several keys
    /// separated by spaces or commas, as `OPSKIT_AGE_RECIPIENTS` does) and
    /// recipients files. `None` when none are given.
    pub fn gather(values: &[String], files: &[PathBuf]) -> Result<Option<Recipients>> {
        let mut keys = Vec::new();
        for v in values {
            for word in v.split([' ', ',', '\t', '\n']).filter(|w| !w.is_empty()) {
                keys.push(
                    parse_recipient(word)
                        .map_err(|why| Error::usage(format!("--encrypt-to '{word}': {why}")))?,
                );
            }
        }
        for f in files {
            keys.extend(read_recipients_file(f)?);
        }
        let mut seen = std::collections::BTreeSet::new();
        keys.retain(|k| seen.insert(k.to_string()));
        Ok((!keys.is_empty()).then_some(Recipients { keys }))
    }

    /// The keys as `age1…` strings, in the order given.
    pub fn strings(&self) -> Vec<String> {
        self.keys.iter().map(ToString::to_string).collect()
    }

    /// Start encrypting into `out`; [`Sealer::finish`] must be called.
    pub fn seal<W: Write>(&self, out: W) -> io::Result<Sealer<W>> {
        let enc =
            age::Encryptor::with_recipients(self.keys.iter().map(|k| k as &dyn age::Recipient))
                .map_err(|e| io::Error::other(format!("age: {e}")))?;
        Ok(Sealer::Age(HashWriter::new(enc.wrap_output(out)?)))
    }
}

fn parse_recipient(s: &str) -> std::result::Result<x25519::Recipient, String> {
    if s.starts_with("ssh-") {
        return Err(
            "SSH keys are not supported; use an age X25519 key (age1…, from age-keygen)".into(),
        );
    }
    x25519::Recipient::from_str(s)
        .map_err(|_| "not an age X25519 public key (age1… from age-keygen -y)".to_string())
}

/// age's recipients-file format: one key a line, `#` comments and blank
/// lines allowed. A bad line is exit 64 naming the file and line.
fn read_recipients_file(path: &Path) -> Result<Vec<x25519::Recipient>> {
    let text = read_small(path, "recipients file")?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        keys.push(
            parse_recipient(line)
                .map_err(|why| Error::usage(format!("{}:{}: {why}", path.display(), i + 1)))?,
        );
    }
    if keys.is_empty() {
        return Err(Error::usage(format!(
            "{}: no recipients in the file",
            path.display()
        )));
    }
    Ok(keys)
}

fn read_small(path: &Path, what: &str) -> Result<String> {
    let meta = fs::metadata(path).at(&format!("reading {what}"), path)?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE {
        return Err(Error::usage(format!(
            "{what} {}: not a regular file of at most 1 MiB",
            path.display()
        )));
    }
    let bytes = fs::read(path).at(&format!("reading {what}"), path)?;
    String::from_utf8(bytes)
        .map_err(|_| Error::usage(format!("{what} {}: not UTF-8 text", path.display())))
}

/// A writer that encrypts (and sha256-hashes the plaintext) or passes
/// through.
pub enum Sealer<W: Write> {
    Open(W),
    Age(HashWriter<age::stream::StreamWriter<W>>),
}

/// What went into an encrypted file: its plaintext size and sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plaintext {
    pub bytes: u64,
    pub sha256: String,
}

impl<W: Write> Sealer<W> {
    /// Write the last chunk and give the inner writer back, with what the
    /// plaintext was when encrypting.
    pub fn finish(self) -> io::Result<(W, Option<Plaintext>)> {
        match self {
            Sealer::Open(w) => Ok((w, None)),
            Sealer::Age(hw) => {
                let (sw, bytes, sha256) = hw.finish();
                Ok((sw.finish()?, Some(Plaintext { bytes, sha256 })))
            }
        }
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sealer::Open(w) => w.write(buf),
            Sealer::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sealer::Open(w) => w.flush(),
            Sealer::Age(w) => w.flush(),
        }
    }
}

/// The private keys that decrypt, read from an identity file.
#[derive(Clone)]
pub struct Identities {
    path: PathBuf,
    keys: Vec<x25519::Identity>,
}

impl Identities {
    /// Read an age identity file (`age-keygen`'s output). Like ssh with a
    /// private key, a file that group or others can read is refused. Errors
    /// name the file and line, never its content.
    pub fn load(path: &Path) -> Result<Identities> {
        let meta = fs::metadata(path).at("reading identity file", path)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::usage(format!(
                "identity file {} is mode {mode:04o}: a private key must not be readable by group or others (chmod 600 it)",
                path.display()
            )));
        }
        let text = read_small(path, "identity file")?;
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = x25519::Identity::from_str(line).map_err(|_| {
                Error::usage(format!(
                    "{}:{}: not an age identity (AGE-SECRET-KEY-1…, from age-keygen)",
                    path.display(),
                    i + 1
                ))
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(Error::usage(format!(
                "identity file {}: no identities in the file",
                path.display()
            )));
        }
        Ok(Identities {
            path: path.to_path_buf(),
            keys,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The public keys of these identities.
    pub fn publics(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| k.to_public().to_string())
            .collect()
    }

    /// Exit 2 unless one of these identities is among `recipients`: "no
    /// identity matches the set's recipients (age1…)".
    pub fn check_matches(&self, recipients: &[String], what: &str) -> Result<()> {
        if self.publics().iter().any(|p| recipients.contains(p)) {
            return Ok(());
        }
        Err(Error::failure(format!(
            "{what}: no identity in {} matches the set's recipients ({}); it holds {}",
            self.path.display(),
            recipients.join(", "),
            self.publics().join(", ")
        )))
    }

    /// Decrypt `src` as it is read. Every chunk is authenticated; a changed
    /// or cut file is an error from `read`.
    pub fn open<R: Read>(&self, src: R) -> io::Result<Opened<R>> {
        let d = age::Decryptor::new(src).map_err(decrypt_error)?;
        d.decrypt(self.keys.iter().map(|k| k as &dyn age::Identity))
            .map(Opened)
            .map_err(decrypt_error)
    }
}

/// What reading an encrypted file on a thread of its own came to: the
/// file's size and sha256, and what decrypting it gave (or why not).
pub struct Decrypted {
    pub file: io::Result<Plaintext>,
    pub plaintext: io::Result<Plaintext>,
}

/// Reads, hashes and decrypts a file on a thread of its own, and hashes
/// the plaintext there too; the plaintext comes through a bounded channel.
/// Whatever consumes it (decompression, tar, pg_restore) runs on another
/// core, as for an unencrypted file.
pub struct Decrypting {
    chunks: ChunkReader,
    handle: JoinHandle<Decrypted>,
}

impl Decrypting {
    pub fn spawn(file: impl Read + Send + 'static, ids: Identities) -> Decrypting {
        let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(8);
        let handle = std::thread::spawn(move || {
            let mut cipher = HashRead::new(file);
            let plaintext = (|| {
                let mut plain = HashRead::new(ids.open(&mut cipher)?);
                loop {
                    let mut buf = vec![0u8; 256 * 1024];
                    let n = plain.read(&mut buf)?;
                    if n == 0 {
                        return plain.finish();
                    }
                    buf.truncate(n);
                    if tx.send(Ok(buf)).is_err() {
                        // The consumer stopped: hash what is left.
                        return plain.finish();
                    }
                }
            })();
            if let Err(e) = &plaintext {
                let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
            }
            Decrypted {
                file: cipher.finish(),
                plaintext,
            }
        });
        Decrypting {
            chunks: ChunkReader::new(rx),
            handle,
        }
    }

    /// Let the thread read to the end, and say what the file and its
    /// plaintext were.
    pub fn finish(self) -> Decrypted {
        let Decrypting { chunks, handle } = self;
        // Without a receiver the thread hashes the rest without sending it.
        drop(chunks);
        handle.join().unwrap_or_else(|_| Decrypted {
            file: Err(io::Error::other("decrypting thread panicked")),
            plaintext: Err(io::Error::other("decrypting thread panicked")),
        })
    }
}

impl Read for Decrypting {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.chunks.read(out)
    }
}

/// A decrypting reader whose errors say what they mean.
pub struct Opened<R: Read>(age::stream::StreamReader<R>);

impl<R: Read> Read for Opened<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => io::Error::new(
                e.kind(),
                format!(
                    "age: a chunk failed authentication: the file was changed or cut short ({e})"
                ),
            ),
            _ => e,
        })
    }
}

/// age's errors as one line (age formats them through its own catalogue).
fn decrypt_error(e: age::DecryptError) -> io::Error {
    use age::DecryptError as D;
    match e {
        D::Io(e) => e,
        D::NoMatchingKeys => io::Error::other("no identity matches the file's recipients"),
        D::InvalidHeader | D::UnknownFormat => {
            io::Error::new(io::ErrorKind::InvalidData, "not a valid age file header")
        }
        D::InvalidMac => io::Error::new(
            io::ErrorKind::InvalidData,
            "the age header's MAC does not match (the header was changed)",
        ),
        D::DecryptionFailed | D::KeyDecryptionFailed => io::Error::new(
            io::ErrorKind::InvalidData,
            "a chunk failed authentication (the file was changed)",
        ),
        other => io::Error::other(format!("age: {other}")),
    }
}

/// The recipient stanzas of an age file's header, read without a key:
/// their types, in order (`X25519` for each `age1…` recipient), without
/// the "grease" stanzas age writers add. age does
/// not write which key a stanza is for, so a reader without the identity
/// can check the count and the kind, not the keys.
pub fn header_stanzas(src: impl Read) -> io::Result<Vec<String>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("age header: {why}"));
    let mut lines = io::BufReader::new(src.take(64 * 1024)).lines();
    match lines.next() {
        Some(Ok(l)) if l == MAGIC => {}
        Some(Err(e)) => return Err(e),
        _ => return Err(bad("does not start with age-encryption.org/v1")),
    }
    let mut stanzas = Vec::new();
    loop {
        let line = lines
            .next()
            .ok_or_else(|| bad("ends before its MAC line"))??;
        if line.starts_with("--- ") {
            return Ok(stanzas);
        }
        let Some(args) = line.strip_prefix("-> ") else {
            return Err(bad("a line that is neither a stanza nor the MAC"));
        };
        let kind = args.split(' ').next().unwrap_or_default();
        // age writers add random "grease" stanzas that no key opens.
        if !kind.ends_with("-grease") {
            stanzas.push(kind.to_string());
        }
        // The body: base64 lines of 64 characters, ended by a shorter one.
        loop {
            let body = lines
                .next()
                .ok_or_else(|| bad("a stanza without its body"))??;
            if body.len() < 64 {
                break;
            }
        }
    }
}

/// A reader that counts and sha256-hashes what passes through it.
pub struct HashRead<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashRead<R> {
    pub fn new(inner: R) -> Self {
        HashRead {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Read what is left, and give the count and the lowercase hex sha256.
    pub fn finish(mut self) -> io::Result<Plaintext> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(Plaintext {
            bytes: self.bytes,
            sha256: hex(&self.hasher.finalize()),
        })
    }
}

impl<R: Read> Read for HashRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn keypair(dir: &Path) -> (PathBuf, String) {
        let id = x25519::Identity::generate();
        let path = dir.join("key.txt");
        use age::secrecy::ExposeSecret;
        fs::write(
            &path,
            format!("# test key\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        (path, id.to_public().to_string())
    }

    #[test]
    fn round_trip_hashes_the_plaintext() {
        let d = tempfile::tempdir().unwrap();
        let (idf, public) = keypair(d.path());
        let r = Recipients::gather(std::slice::from_ref(&public), &[])
            .unwrap()
            .unwrap();
        let mut s = r.seal(Vec::new()).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        s.write_all(&data).unwrap();
        let (ct, pt) = s.finish().unwrap();
        let pt = pt.unwrap();
        assert_eq!(pt.bytes, data.len() as u64);
        assert_eq!(pt.sha256, crate::gz::sha256_hex(&data));
        assert_eq!(header_stanzas(&ct[..]).unwrap(), vec!["X25519"]);
        let ids = Identities::load(&idf).unwrap();
        ids.check_matches(&[public], "set").unwrap();
        let mut back = HashRead::new(ids.open(&ct[..]).unwrap());
        let mut out = Vec::new();
        back.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        // A flipped byte in the last chunk fails authentication.
        let mut bad = ct.clone();
        let n = bad.len() - 10;
        bad[n] ^= 1;
        let e = io::copy(&mut ids.open(&bad[..]).unwrap(), &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("authentication"), "{e}");
        // So does a file cut at a chunk boundary (64 KiB + tag).
        let cut = &ct[..ct.len() - (200_000 - 3 * 65536) - 16];
        let e = io::copy(&mut ids.open(cut).unwrap(), &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("cut short"), "{e}");
    }

    #[test]
    fn bad_recipients_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let (_, public) = keypair(d.path());
        let f = d.path().join("recipients.txt");
        fs::write(&f, format!("# team\n{public}\n\nage1notakey\n")).unwrap();
        let e = Recipients::gather(&[], std::slice::from_ref(&f))
            .err()
            .unwrap();
        assert_eq!(e.exit, crate::Exit::Usage);
        let want = format!("{}:4: not an age X25519 public key", f.display());
        assert!(e.msg.starts_with(&want), "{}", e.msg);
        let e = Recipients::gather(&["bogus".into()], &[]).err().unwrap();
        assert!(e.msg.starts_with("--encrypt-to 'bogus': "), "{}", e.msg);
        let two = Recipients::gather(&[format!("{public}, {public}")], &[])
            .unwrap()
            .unwrap();
        assert_eq!(two.strings(), vec![public]);
    }

    #[test]
    fn loose_identity_file_is_refused_without_its_content() {
        let d = tempfile::tempdir().unwrap();
        let (idf, _) = keypair(d.path());
        fs::set_permissions(&idf, fs::Permissions::from_mode(0o640)).unwrap();
        let e = Identities::load(&idf).err().unwrap();
        assert!(e.msg.contains("mode 0640"), "{}", e.msg);
        fs::write(&idf, "AGE-SECRET-KEY-1NOTREAL\n").unwrap();
        fs::set_permissions(&idf, fs::Permissions::from_mode(0o600)).unwrap();
        let e = Identities::load(&idf).err().unwrap();
        assert!(e.msg.contains(":1: not an age identity"), "{}", e.msg);
        assert!(!e.msg.contains("NOTREAL"), "{}", e.msg);
    }

    #[test]
    fn wrong_identity_names_the_recipients() {
        let d = tempfile::tempdir().unwrap();
        let (idf, _) = keypair(d.path());
        let ids = Identities::load(&idf).unwrap();
        let e = ids.check_matches(&["age1other".into()], "s").unwrap_err();
        assert_eq!(e.exit, crate::Exit::Failure);
        assert!(
            e.msg.contains("no identity in") && e.msg.contains("(age1other)"),
            "{}",
            e.msg
        );
    }
}
