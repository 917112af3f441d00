//! age encryption of set files: the recipients a server encrypts to (public
//! keys only), the identities that decrypt (kept off the server), a writer
//! that encrypts as it streams and a reader that decrypts as it streams.
//!
//! Files are in the age v1 format (age-encryption.org/v1) that Debian's
//! `age` tool reads and writes: 64 KiB chunks, each one authenticated, so a
//! decrypting read proves every byte.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::sync_channel;
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::gz::{ChunkReader, HashWriter, hex};

mod keys;
pub use keys::{Identities, Recipients};

/// The scheme a manifest names.
pub const SCHEME: &str = "age";
/// The extension of an encrypted file, with its dot.
pub const EXT: &str = ".age";
/// The first line of every age v1 file.
const MAGIC: &str = "age-encryption.org/v1";
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
    use super::keys::tests::keypair;
    use super::*;

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
}
