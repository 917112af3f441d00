//! A remote set's manifest, believed only after its signature.
//!
//! Whoever holds the bucket's keys (they live on the server) can replace
//! any object, SHA256SUMS included; only the signing key, which is not in
//! the bucket, makes a manifest trustworthy. So `pull` and `verify`
//! download `MANIFEST.json` and `MANIFEST.json.minisig`, check the
//! manifest's bytes against the signature with the reader's trusted keys
//! for the set's own name, and only then parse the manifest (with the one
//! parser, [`backupset::parse_manifest`]) and check that it is this set's.

use std::io::Read;
use std::path::Path;

use opskit::backupset::{self, MANIFEST, Manifest};
use opskit::sign::{SET_SIGNATURE, Trust};
use opskit::{Error, Result};
use opskit_s3::Store;
use opskit_s3::sets::RemoteInfo;

/// The largest signature object read (a minisign signature is ~300 bytes).
pub const MAX_SIGNATURE: u64 = 64 << 10;

/// A remote set's manifest that passed the reader's trust.
#[derive(Debug)]
pub struct Signed {
    pub manifest: Manifest,
    /// The manifest's bytes, as downloaded and checked.
    pub bytes: Vec<u8>,
    /// Their sha256 (SHA256SUMS lists it).
    pub sha256: String,
    /// `MANIFEST.json.minisig`'s bytes, when the set has one.
    pub signature: Option<Vec<u8>>,
    /// What the check found ("signed by trusted key …").
    pub note: String,
}

/// A small object (at most `max` bytes) into memory.
pub(crate) fn download_small(store: &Store, key: &str, max: u64) -> Result<Vec<u8>> {
    let (_, body) = store.get(key)?;
    let mut out = Vec::new();
    body.take(max + 1).read_to_end(&mut out).map_err(|e| {
        Error::failure(format!(
            "downloading s3://{}/{key}: {e}",
            store.remote.bucket
        ))
    })?;
    if out.len() as u64 > max {
        return Err(Error::failure(format!(
            "s3://{}/{key} is larger than {max} bytes: not a file of a set",
            store.remote.bucket
        )));
    }
    Ok(out)
}

/// Set `name`'s manifest, parsed but its signature not checked: for
/// decisions that can only keep more (retention), never for what is
/// restored ([`load`]).
pub fn manifest(store: &Store, name: &str) -> Result<Manifest> {
    let text = download_small(
        store,
        &store.remote.key(name, MANIFEST),
        backupset::MAX_MANIFEST,
    )?;
    backupset::parse_manifest(&text, &store.remote.url(&format!("{name}/{MANIFEST}")))
}

/// A remote set's manifest and signature as downloaded, nothing in them
/// believed yet ([`Fetched::check`]).
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// Download set `name`'s manifest and its signature (`info`, its listing,
/// says whether it has one and their sizes). One listed larger than any
/// set's is exit 1 (not a set's: nothing is downloaded); a download that
/// fails is exit 2.
pub fn fetch(store: &Store, name: &str, info: &RemoteInfo) -> Result<Fetched> {
    for (file, max) in [
        (MANIFEST, backupset::MAX_MANIFEST),
        (SET_SIGNATURE, MAX_SIGNATURE),
    ] {
        if let Some(&size) = info.sizes.get(file).filter(|&&s| s > max) {
            return Err(Error::check(format!(
                "{}: {size} bytes, larger than any set's {file}: not a set made by opskit",
                store.remote.url(&format!("{name}/{file}"))
            )));
        }
    }
    let bytes = download_small(
        store,
        &store.remote.key(name, MANIFEST),
        backupset::MAX_MANIFEST,
    )?;
    let signature = info
        .sizes
        .contains_key(SET_SIGNATURE)
        .then(|| download_small(store, &store.remote.key(name, SET_SIGNATURE), MAX_SIGNATURE))
        .transpose()?;
    Ok(Fetched { bytes, signature })
}

impl Fetched {
    /// Check the signature with `trust` for this set's name, then parse
    /// the manifest and check it is this set's (its name, its kind, not
    /// dated in the future). A failure is exit 1 naming the set.
    pub fn check(&self, store: &Store, name: &str, trust: &Trust) -> Result<Signed> {
        let Fetched { bytes, signature } = self;
        let text = signature.as_deref().map(String::from_utf8_lossy);
        let at = store.remote.url(&format!("{name}/"));
        let signed = backupset::check_signature_text(name, bytes, text.as_deref(), trust)
            .map_err(|e| e.context(&at))?;
        let origin = store.remote.url(&format!("{name}/{MANIFEST}"));
        let manifest = backupset::parse_manifest(bytes, &origin)?;
        backupset::check_set_name(Path::new(name), &manifest)?;
        backupset::check_kind(name, &signed, &manifest).map_err(|e| e.context(&at))?;
        let note = signed.note;
        Ok(Signed {
            manifest,
            sha256: opskit::gz::sha256_hex(bytes),
            bytes: bytes.clone(),
            signature: signature.clone(),
            note,
        })
    }

    /// The manifest parsed, its signature not checked: for decisions that
    /// can only keep more (retention), never for what is restored.
    pub fn unchecked(&self, store: &Store, name: &str) -> Result<Manifest> {
        backupset::parse_manifest(
            &self.bytes,
            &store.remote.url(&format!("{name}/{MANIFEST}")),
        )
    }
}

/// [`fetch`] and [`Fetched::check`]: a download that fails is exit 2, a
/// signature or manifest that fails exit 1 naming the set.
pub fn load(store: &Store, name: &str, info: &RemoteInfo, trust: &Trust) -> Result<Signed> {
    fetch(store, name, info)?.check(store, name, trust)
}

/// SHA256SUMS must be what the manifest says.
pub fn check_sums(
    m: &Manifest,
    manifest_sha: &str,
    sums: &[u8],
) -> std::result::Result<(), String> {
    if backupset::expected_sums(m, manifest_sha).as_bytes() == sums {
        Ok(())
    } else {
        Err("does not agree with the manifest".into())
    }
}
