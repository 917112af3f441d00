//! Which sets are to be trusted: a set's signature checked before its
//! manifest is parsed, for its own name and by a key trusted for its kind
//! (docs/security.md).

use std::fs;
use std::path::Path;

use super::{MANIFEST, Manifest, parse_manifest, parse_set_dir_name, read_manifest_bytes};
use crate::{Error, Result};

/// A set whose manifest was read, signature-checked and parsed.
#[derive(Debug, Clone)]
pub struct Trusted {
    pub manifest: Manifest,
    /// sha256 of `MANIFEST.json`'s bytes.
    pub sha256: String,
    /// What the signature check found ("signed by trusted key …").
    pub signature: String,
}

/// The set's directory name.
pub fn dir_name(set: &Path) -> String {
    set.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What a set's signature check found.
#[derive(Debug, Clone)]
pub struct Signed {
    /// For the record: "signed by trusted key …", "not signed; accepted …".
    pub note: String,
    /// The kind it was verified as (None: not verified, allowed).
    pub kind: Option<crate::sign::Kind>,
}

/// Check a signature (`sig`, None when there is none) of manifest bytes
/// `text` for the set named `name`: made for this name, by a key trusted
/// for the kind it claims (a dump set's or a base set's; [`check_kind`]
/// then checks the manifest is of that kind).
pub fn check_signature_text(
    name: &str,
    text: &[u8],
    sig: Option<&str>,
    trust: &crate::sign::Trust,
) -> Result<Signed> {
    use crate::sign::{Kind, base_comment, claimed_comment, set_comment};
    let comment = match sig.and_then(claimed_comment) {
        Some(c) if c == base_comment(name) => c,
        _ => set_comment(name),
    };
    let note = trust
        .check(text, sig, &comment)
        .map_err(|e| Error::check(format!("{name}: signature: {e}")))?;
    let kind = (sig.is_some() && trust.has_keys())
        .then(|| Kind::of_comment(&comment))
        .flatten();
    Ok(Signed { note, kind })
}

/// [`check_signature_text`] of a set directory's `MANIFEST.json.minisig`
/// (read without following a link, bounded).
pub fn check_signature(set: &Path, text: &[u8], trust: &crate::sign::Trust) -> Result<Signed> {
    let dir = dir_name(set);
    let sig_path = set.join(crate::sign::SET_SIGNATURE);
    let sig = match fs::symlink_metadata(&sig_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => {
            let f = crate::safefs::open_nofollow(&sig_path, fs::OpenOptions::new().read(true))
                .map_err(|e| Error::check(format!("{dir}: signature: {}", e.msg)))?;
            let bytes = crate::safefs::read_bounded(f, &sig_path, 64 << 10)
                .map_err(|e| Error::check(format!("{dir}: signature: {}", e.msg)))?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
    };
    check_signature_text(&dir, text, sig.as_deref(), trust)
}

/// A set signed as a dump set must hold a dump, one signed as a base set a
/// base backup: the key of the server's database user (base sets, WAL)
/// cannot sign the dumps that root restores, nor the other way round.
pub fn check_kind(name: &str, signed: &Signed, m: &Manifest) -> Result<()> {
    use crate::sign::Kind;
    match (signed.kind, m.physical.is_some()) {
        (Some(Kind::Set), true) => Err(Error::check(format!(
            "{name}: signed as a dump set, but it holds a base backup: refused"
        ))),
        (Some(Kind::Pitr), false) => Err(Error::check(format!(
            "{name}: signed as a base set, but it holds no base backup: refused"
        ))),
        _ => Ok(()),
    }
}

/// A signed manifest must be this set's: its `set` is the directory's name
/// (a set renamed to look newer is refused).
pub fn check_set_name(set: &Path, m: &Manifest) -> Result<()> {
    let dir = dir_name(set);
    // A name dated in the future would be "the newest set" for ever.
    if let Some((_, t)) = parse_set_dir_name(&dir)
        && super::dated_ahead(t, chrono::Utc::now())
    {
        return Err(Error::check(format!(
            "{dir}: dated in the future ({t}): refused"
        )));
    }
    if m.set != dir {
        return Err(Error::check(format!(
            "{dir}: the manifest is for set '{}', not for this directory: refused",
            m.set
        )));
    }
    Ok(())
}

/// Read a set's manifest, check its signature with `trust` *before*
/// parsing it, parse it and check it is this set's. A failure is exit 1
/// naming the set: nothing in it is to be trusted.
pub fn load_trusted(set: &Path, trust: &crate::sign::Trust) -> Result<Trusted> {
    let text = read_manifest_bytes(set)?;
    let signed = check_signature(set, &text, trust)?;
    let manifest = parse_manifest(&text, &set.join(MANIFEST).display().to_string())?;
    check_set_name(set, &manifest)?;
    check_kind(&dir_name(set), &signed, &manifest)?;
    Ok(Trusted {
        manifest,
        sha256: crate::gz::sha256_hex(&text),
        signature: signed.note,
    })
}
