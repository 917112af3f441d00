//! Signatures: who wrote a set or a WAL file.
//!
//! age encrypts but does not authenticate: anyone with the public key can
//! write a set that decrypts. So the writer signs what pins everything
//! else: a set's `MANIFEST.json` (which holds every file's sha256) and each
//! archived WAL file's checksum line. The format is minisign's (Ed25519,
//! pre-hashed with BLAKE2b), so the stock tool checks a set too:
//!
//! ```text
//! minisign -Vm SET/MANIFEST.json -p opskit-signing.pub
//! ```
//!
//! The trusted comment binds a signature to its place (`opskit-set NAME`,
//! `opskit-wal NAME`): a valid signature moved to another set or segment
//! does not verify there.
//!
//! The secret key (`OPSKIT_SIGNING_KEY`, an unencrypted minisign key file,
//! mode 0600) stays on the server that writes; readers are given the public
//! keys they trust (`OPSKIT_SIGNING_PUBKEYS`). A reader with no public key
//! refuses to go on rather than pass silently; `--allow-unsigned` is the
//! explicit way to read sets made before signing was set up.

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use minisign::{KeyPair, PublicKey, PublicKeyBox, SecretKey, SecretKeyBox, SignatureBox};

use crate::{Error, Result};

/// The environment variable naming the secret key file.
pub const KEY_ENV: &str = "OPSKIT_SIGNING_KEY";
/// The environment variable listing the public keys trusted for dump sets.
pub const PUBKEYS_ENV: &str = "OPSKIT_SIGNING_PUBKEYS";
/// The one listing the keys trusted for base sets and WAL.
pub const PITR_PUBKEYS_ENV: &str = "OPSKIT_PITR_SIGNING_PUBKEYS";
/// A set's signature file, beside `MANIFEST.json` (minisign's own name).
pub const SET_SIGNATURE: &str = "MANIFEST.json.minisig";
/// The largest key or signature file read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// What a signature is about: its trusted comment.
pub fn set_comment(set: &str) -> String {
    format!("opskit-set {set}")
}

/// The trusted comment of an archived WAL file's checksum line.
pub fn wal_comment(name: &str) -> String {
    format!("opskit-wal {name}")
}

fn key_id(keynum: &[u8]) -> String {
    keynum.iter().rev().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

/// The secret key a writer signs with.
pub struct SigningKey {
    sk: SecretKey,
    pk: Option<PublicKey>,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.path.display())
    }
}

impl SigningKey {
    /// Load an unencrypted minisign secret key file (`minisign -G -W`, or
    /// [`generate`]); it must be readable by its owner only.
    pub fn load(path: &Path) -> Result<SigningKey> {
        let file = crate::safefs::open_regular(path)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("reading", path, &e))?;
        crate::safefs::check_private(path, &meta)?;
        if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0 {
            return Err(Error::usage(format!(
                "signing key {} is readable by group or others: chmod 600 it",
                path.display()
            )));
        }
        let text = crate::safefs::read_bounded(file, path, MAX_KEY_FILE)?;
        let text = String::from_utf8(text)
            .map_err(|_| Error::usage(format!("{}: not a minisign key file", path.display())))?;
        let text = with_checksum(&text);
        let sk = SecretKey::from_unencrypted_box(
            SecretKeyBox::from_string(&text).map_err(|_| {
                Error::usage(format!("{}: not a minisign key file", path.display()))
            })?,
        )
        .map_err(|e| {
            Error::usage(format!(
                "{}: not an unencrypted minisign secret key ({e}); make one with `minisign -G -W`",
                path.display()
            ))
        })?;
        let pk = PublicKey::from_secret_key(&sk).ok();
        Ok(SigningKey {
            sk,
            pk,
            path: path.to_path_buf(),
        })
    }

    /// The key from `--signing-key`, or `OPSKIT_SIGNING_KEY`; none when
    /// neither is given.
    pub fn from_arg(arg: Option<&Path>) -> Result<Option<SigningKey>> {
        match arg {
            Some(p) => Self::load(p).map(Some),
            None => Ok(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key id (minisign's, 16 hex digits).
    pub fn id(&self) -> String {
        key_id(self.sk.keynum())
    }

    /// A minisign signature of `data` with `comment` as its trusted comment.
    pub fn sign(&self, data: &[u8], comment: &str) -> Result<String> {
        let sig = minisign::sign(
            self.pk.as_ref(),
            &self.sk,
            Cursor::new(data),
            Some(comment),
            Some(&format!("signed by opskit key {}", self.id())),
        )
        .map_err(|e| Error::failure(format!("signing with {}: {e}", self.path.display())))?;
        Ok(sig.into_string())
    }
}

/// minisign 0.11 (Debian's) writes a key made without a password (`-G -W`)
/// with an all-zero checksum, which the library refuses as corrupt: fill in
/// the checksum it would have written (BLAKE2b-256 of the algorithm, key id
/// and key). Any other key text is returned as it is.
fn with_checksum(text: &str) -> String {
    use base64::Engine as _;
    use blake2::digest::{Update, VariableOutput};
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut lines: Vec<&str> = text.lines().collect();
    let Some(mut raw) = lines.get(1).and_then(|l| b64.decode(l.trim()).ok()) else {
        return text.to_string();
    };
    // sig_alg 2, kdf_alg 2, chk_alg 2, salt 32, opslimit 8, memlimit 8,
    // key id 8, key 64, checksum 32.
    const KEY_AT: usize = 54;
    if raw.len() != KEY_AT + 8 + 64 + 32 || raw[2..4] != [0, 0] {
        return text.to_string();
    }
    let chk_at = KEY_AT + 72;
    if raw[chk_at..].iter().any(|&b| b != 0) {
        return text.to_string();
    }
    let mut h = blake2::Blake2bVar::new(32).expect("32 is a valid BLAKE2b size");
    h.update(&raw[..2]);
    h.update(&raw[KEY_AT..chk_at]);
    h.finalize_variable(&mut raw[chk_at..])
        .expect("the output is 32 bytes");
    let fixed = b64.encode(&raw);
    lines[1] = &fixed;
    lines.join("\n") + "\n"
}

/// The public keys a reader trusts.
#[derive(Clone)]
pub struct TrustedKeys {
    keys: Vec<PublicKey>,
    /// As given, to hand on to a child (public keys are no secret).
    source: String,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedKeys({})", self.ids().join(","))
    }
}

impl TrustedKeys {
    /// Parse `OPSKIT_SIGNING_PUBKEYS`-style text: keys separated by commas
    /// or white space, each a minisign public key (`RW…`, as the second
    /// line of a `.pub` file) or the path of a `.pub` file.
    pub fn parse(value: &str, origin: &str) -> Result<TrustedKeys> {
        let mut keys = Vec::new();
        for item in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            keys.push(Self::one(item, origin)?);
        }
        if keys.is_empty() {
            return Err(Error::usage(format!("{origin}: no public key given")));
        }
        Ok(TrustedKeys {
            keys,
            source: value.to_string(),
        })
    }

    fn one(item: &str, origin: &str) -> Result<PublicKey> {
        if item.starts_with('/') || item.starts_with('.') {
            let path = Path::new(item);
            let text = crate::safefs::read_regular(path, MAX_KEY_FILE)?;
            let text = String::from_utf8_lossy(&text);
            return PublicKey::from_box(PublicKeyBox::from_string(&text).map_err(|e| {
                Error::usage(format!("{origin}: {item}: not a minisign public key: {e}"))
            })?)
            .map_err(|e| {
                Error::usage(format!("{origin}: {item}: not a minisign public key: {e}"))
            });
        }
        PublicKey::from_base64(item).map_err(|_| {
            Error::usage(format!(
                "{origin}: '{}…' is neither a minisign public key (RW…, 56 characters) nor the path of a .pub file",
                item.chars().take(4).collect::<String>()
            ))
        })
    }

    /// The keys from `--signing-pubkeys` / `OPSKIT_SIGNING_PUBKEYS`.
    pub fn from_arg(arg: Option<&str>) -> Result<Option<TrustedKeys>> {
        arg.filter(|s| !s.trim().is_empty())
            .map(|s| Self::parse(s, PUBKEYS_ENV))
            .transpose()
    }

    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| key_id(k.keynum())).collect()
    }

    /// Check `sig_text` over `data`: made by one of the trusted keys, with
    /// exactly `comment` as its trusted comment. The error says which.
    pub fn verify(
        &self,
        data: &[u8],
        sig_text: &str,
        comment: &str,
    ) -> std::result::Result<String, String> {
        let sig = SignatureBox::from_string(sig_text)
            .map_err(|e| format!("not a minisign signature ({e})"))?;
        let signer = key_id(sig.keynum());
        let Some(pk) = self.keys.iter().find(|k| k.keynum() == sig.keynum()) else {
            return Err(format!(
                "signed by key {signer}, which is not a trusted key ({PUBKEYS_ENV}: {})",
                self.ids().join(", ")
            ));
        };
        minisign::verify(pk, &sig, Cursor::new(data), true, false, false).map_err(|e| {
            format!("bad signature by key {signer}: {e} (the signed content was changed)")
        })?;
        let got = sig
            .trusted_comment()
            .map_err(|e| format!("signature without a trusted comment: {e}"))?;
        if got != comment {
            return Err(format!(
                "the signature by key {signer} is for '{got}', not '{comment}' (moved from elsewhere)"
            ));
        }
        Ok(signer)
    }
}

/// What a signature is for: its trusted comment's first word says, and
/// each kind has the keys that may sign it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A dump set (`opskit-set NAME`): signed by the dump writer's key.
    Set,
    /// A base set (`opskit-base NAME`) or an archived WAL file
    /// (`opskit-wal NAME`): signed by the database server user's key.
    Pitr,
}

impl Kind {
    /// The kind a trusted comment names, if any.
    pub fn of_comment(comment: &str) -> Option<Kind> {
        match comment.split_once(' ')?.0 {
            "opskit-set" => Some(Kind::Set),
            "opskit-base" | "opskit-wal" => Some(Kind::Pitr),
            _ => None,
        }
    }
}

/// The trusted comment of a base set's manifest.
pub fn base_comment(set: &str) -> String {
    format!("opskit-base {set}")
}

/// The trusted comment of a signature's text, unverified (to tell which
/// kind it claims; [`Trust::check`] verifies it).
pub fn claimed_comment(sig_text: &str) -> Option<String> {
    SignatureBox::from_string(sig_text)
        .ok()?
        .trusted_comment()
        .ok()
}

/// The public keys of each kind.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Dump sets (`OPSKIT_SIGNING_PUBKEYS`).
    pub sets: TrustedKeys,
    /// Base sets and WAL (`OPSKIT_PITR_SIGNING_PUBKEYS`; the dump keys when
    /// not given, for a server with one key).
    pub pitr: TrustedKeys,
}

impl Keys {
    fn of(&self, kind: Kind) -> &TrustedKeys {
        match kind {
            Kind::Set => &self.sets,
            Kind::Pitr => &self.pitr,
        }
    }
}

/// How a reader treats signatures.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Everything must be signed, each kind by one of its keys.
    Require(Keys),
    /// `--allow-unsigned`: signatures are checked where there are keys
    /// and a signature, and what is unsigned is accepted.
    AllowUnsigned(Option<Keys>),
}

impl Trust {
    /// From the reader's options: the keys of dump sets and of base sets
    /// and WAL, and whether unsigned sets are allowed. No key and no
    /// permission is a usage error that says how to fix it.
    pub fn new(sets: Option<&str>, pitr: Option<&str>, allow_unsigned: bool) -> Result<Trust> {
        let sets = TrustedKeys::from_arg(sets)?;
        let pitr = pitr
            .filter(|s| !s.trim().is_empty())
            .map(|s| TrustedKeys::parse(s, PITR_PUBKEYS_ENV))
            .transpose()?;
        let keys = sets.map(|sets| Keys {
            pitr: pitr.unwrap_or_else(|| sets.clone()),
            sets,
        });
        match (keys, allow_unsigned) {
            (keys, true) => Ok(Trust::AllowUnsigned(keys)),
            (Some(k), false) => Ok(Trust::Require(k)),
            (None, false) => Err(Error::usage(format!(
                "no public key to check signatures with: set {PUBKEYS_ENV} (or --signing-pubkeys) to the public key of the server's {KEY_ENV}, or pass --allow-unsigned to accept sets nobody signed"
            ))),
        }
    }

    /// Whether signatures are verified at all (there are keys).
    pub fn has_keys(&self) -> bool {
        !matches!(self, Trust::AllowUnsigned(None))
    }

    /// The arguments that give a child `walarchive` the same trust, quoted
    /// for the shell (PostgreSQL runs restore_command with `sh -c`).
    pub fn child_args(&self) -> String {
        let q = crate::sys::shell_quote;
        let keys = |k: &Keys| {
            format!(
                "--signing-pubkeys {} --pitr-signing-pubkeys {}",
                q(&k.sets.source),
                q(&k.pitr.source)
            )
        };
        match self {
            Trust::Require(k) => keys(k),
            Trust::AllowUnsigned(Some(k)) => format!("{} --allow-unsigned", keys(k)),
            Trust::AllowUnsigned(None) => "--allow-unsigned".into(),
        }
    }

    /// Check a signature (None: there is none) over `data`, made for
    /// `comment` by a key of the kind the comment names. Ok carries a note
    /// for the record ("signed by key X", "unsigned, allowed").
    pub fn check(
        &self,
        data: &[u8],
        sig: Option<&str>,
        comment: &str,
    ) -> std::result::Result<String, String> {
        let kind = Kind::of_comment(comment).unwrap_or(Kind::Set);
        match (self, sig) {
            (Trust::Require(k), Some(s)) | (Trust::AllowUnsigned(Some(k)), Some(s)) => k
                .of(kind)
                .verify(data, s, comment)
                .map(|id| format!("signed by trusted key {id}")),
            (Trust::Require(_), None) => Err(
                "not signed: refused (only what a trusted key signed is used; --allow-unsigned accepts it)".into(),
            ),
            (Trust::AllowUnsigned(None), Some(_)) => {
                Ok("signed, not checked: no public key given (--allow-unsigned)".into())
            }
            (Trust::AllowUnsigned(_), None) => Ok("not signed; accepted (--allow-unsigned)".into()),
        }
    }
}

/// A new key pair: the secret key file's text (unencrypted, as
/// `minisign -G -W` writes it) and the public key file's text.
pub fn generate(comment: &str) -> Result<(String, String)> {
    let KeyPair { pk, sk } = KeyPair::generate_unencrypted_keypair()
        .map_err(|e| Error::failure(format!("generating a signing key: {e}")))?;
    let sk_text = sk
        .to_box(Some(comment))
        .map_err(|e| Error::failure(format!("encoding the signing key: {e}")))?
        .into_string();
    let pk_text = pk
        .to_box()
        .map_err(|e| Error::failure(format!("encoding the public key: {e}")))?
        .into_string();
    Ok((sk_text, pk_text))
}

/// The public key line (`RW…`) of a public key file's text.
pub fn public_line(pk_text: &str) -> &str {
    pk_text.lines().nth(1).unwrap_or("").trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, String) {
        let (sk, pk) = generate("test").unwrap();
        let p = dir.join(name);
        std::fs::write(&p, sk).unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (p, public_line(&pk).to_string())
    }

    #[test]
    fn sign_and_verify() {
        let d = tempfile::tempdir().unwrap();
        let (skp, pk) = pair(d.path(), "k");
        let (_, other) = pair(d.path(), "o");
        let key = SigningKey::load(&skp).unwrap();
        let sig = key.sign(b"manifest", &set_comment("app-1")).unwrap();
        let trusted = TrustedKeys::parse(&format!("{other}, {pk}"), "test").unwrap();
        assert!(
            trusted
                .verify(b"manifest", &sig, &set_comment("app-1"))
                .is_ok()
        );
        let e = trusted
            .verify(b"manifesT", &sig, &set_comment("app-1"))
            .unwrap_err();
        assert!(e.contains("bad signature"), "{e}");
        let e = trusted
            .verify(b"manifest", &sig, &set_comment("app-2"))
            .unwrap_err();
        assert!(e.contains("moved from elsewhere"), "{e}");
        let only_other = TrustedKeys::parse(&other, "test").unwrap();
        let e = only_other
            .verify(b"manifest", &sig, &set_comment("app-1"))
            .unwrap_err();
        assert!(e.contains("not a trusted key"), "{e}");
    }

    #[test]
    fn trust_needs_a_key_or_permission() {
        let e = Trust::new(None, None, false).unwrap_err();
        assert_eq!(e.exit, crate::Exit::Usage);
        assert!(e.msg.contains(PUBKEYS_ENV), "{}", e.msg);
        let t = Trust::new(None, None, true).unwrap();
        assert!(t.check(b"x", None, "c").is_ok());
        let e = TrustedKeys::parse("AGE-SECRET-KEY-1QQQQ", "X").unwrap_err();
        assert!(!e.msg.contains("QQQQ"), "{}", e.msg);
    }

    #[test]
    fn a_key_made_by_the_stock_minisign_without_a_password_loads() {
        let d = tempfile::tempdir().unwrap();
        let (k, p) = (d.path().join("k"), d.path().join("k.pub"));
        let st = std::process::Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(&p)
            .arg("-s")
            .arg(&k)
            .output()
            .expect("minisign (scripts/ensure-deps.sh installs it)");
        assert!(st.status.success());
        let key = SigningKey::load(&k).unwrap();
        let public = std::fs::read_to_string(&p).unwrap();
        let sig = key.sign(b"x", "c").unwrap();
        let t = TrustedKeys::parse(public_line(&public), "t").unwrap();
        t.verify(b"x", &sig, "c").unwrap();
    }

    #[test]
    fn a_loose_secret_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (skp, _) = pair(d.path(), "k");
        std::fs::set_permissions(&skp, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .unwrap();
        let e = SigningKey::load(&skp).unwrap_err();
        assert!(e.msg.contains("chmod 600"), "{}", e.msg);
    }
}
