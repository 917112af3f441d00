//! The keys of age encryption: the recipients a server encrypts to (public
//! keys only, from `--encrypt-to`, OPSKIT_AGE_RECIPIENTS or a recipients
//! file) and the identities that decrypt (an identity file kept off the
//! server), each read bounded and refused with one line naming what and
//! where.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519;

use super::{Opened, Sealer, decrypt_error};
use crate::gz::HashWriter;
use crate::{Error, IoContext, Result};

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
    /// recipients files. `None` when none are given. A bad value is exit 64
    /// naming the flag, the variable or file:line, and shown only if it reads
    /// as a public key (`age1…`, `ssh-…`): else it may be a misplaced secret.
    pub fn gather(values: &[String], files: &[PathBuf]) -> Result<Option<Recipients>> {
        let var = std::env::var(RECIPIENTS_VAR).ok();
        Self::gather_from(values, var.as_deref(), files)
    }

    /// [`Recipients::gather`], with the variable's value given (tests).
    fn gather_from(
        values: &[String],
        var: Option<&str>,
        files: &[PathBuf],
    ) -> Result<Option<Recipients>> {
        // clap fills `--encrypt-to` from the variable when the flag is absent.
        let source = match (values, var) {
            ([v], Some(e)) if v == e => RECIPIENTS_VAR,
            _ => "--encrypt-to",
        };
        let mut keys = Vec::new();
        let words = values
            .iter()
            .flat_map(|v| v.split([' ', ',', '\t', '\n']))
            .filter(|w| !w.is_empty());
        for (n, word) in words.enumerate() {
            keys.push(parse_recipient(word).map_err(|why| {
                Error::usage(match why {
                    SECRET_KEY => format!("{source}: {why}"),
                    _ if word.starts_with("age1") || word.starts_with("ssh-") => {
                        format!("{source} '{word}': {why}")
                    }
                    _ => format!("{source}, value {} (not shown): {why}", n + 1),
                })
            })?);
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

/// The variable `--encrypt-to` is read from.
const RECIPIENTS_VAR: &str = "OPSKIT_AGE_RECIPIENTS";
/// Why an identity is not a recipient: the message never shows it.
const SECRET_KEY: &str =
    "a secret key (AGE-SECRET-KEY-…) was given as a recipient: give its public key (age-keygen -y)";

fn parse_recipient(s: &str) -> std::result::Result<x25519::Recipient, &'static str> {
    if s.get(..15)
        .is_some_and(|p| p.eq_ignore_ascii_case("AGE-SECRET-KEY-"))
    {
        return Err(SECRET_KEY);
    }
    if s.starts_with("ssh-") {
        return Err("SSH keys are not supported; use an age X25519 key (age1…, from age-keygen)");
    }
    x25519::Recipient::from_str(s)
        .map_err(|_| "not an age X25519 public key (age1… from age-keygen -y)")
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A new identity file (mode 0600) in `dir`, and its public key.
    pub(in crate::crypt) fn keypair(dir: &Path) -> (PathBuf, String) {
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
        let msg = refusal(&["age1bogus".into()], None, &[]);
        assert!(msg.starts_with("--encrypt-to 'age1bogus': "), "{msg}");
        let msg = refusal(&[format!("{public} bogus")], None, &[]);
        assert!(
            msg.starts_with("--encrypt-to, value 2 (not shown): "),
            "{msg}"
        );
        let two = Recipients::gather(&[format!("{public}, {public}")], &[])
            .unwrap()
            .unwrap();
        assert_eq!(two.strings(), vec![public]);
    }

    /// The usage error `gather` gives, with the variable's value `var`.
    fn refusal(values: &[String], var: Option<&str>, files: &[PathBuf]) -> String {
        let e = Recipients::gather_from(values, var, files).err().unwrap();
        assert_eq!(e.exit, crate::Exit::Usage);
        e.msg
    }

    #[test]
    fn a_secret_key_given_as_recipient_is_named_not_echoed() {
        use age::secrecy::ExposeSecret;
        let d = tempfile::tempdir().unwrap();
        let id = x25519::Identity::generate();
        let (secret, public) = (id.to_string().expose_secret().to_string(), id.to_public());
        let f = d.path().join("recipients.txt");
        fs::write(&f, format!("# team\n{public}\n{secret}\n")).unwrap();
        let why = "a secret key (AGE-SECRET-KEY-…) was given as a recipient: give its public key (age-keygen -y)";
        let one = std::slice::from_ref(&secret);
        let mixed = [format!("{public} {}", secret.to_lowercase())];
        // Whole messages: nothing of the key is in them.
        for (msg, want) in [
            (refusal(one, None, &[]), format!("--encrypt-to: {why}")),
            (
                refusal(one, Some(&secret), &[]),
                format!("OPSKIT_AGE_RECIPIENTS: {why}"),
            ),
            (refusal(&mixed, None, &[]), format!("--encrypt-to: {why}")),
            (
                refusal(&[], None, std::slice::from_ref(&f)),
                format!("{}:3: {why}", f.display()),
            ),
        ] {
            assert_eq!(msg, want);
        }
        // Nor is any other value that does not read as a public key.
        let msg = refusal(&["hunter2-Canary-pw".into()], None, &[]);
        assert!(
            msg.starts_with("--encrypt-to, value 1 (not shown): not an age X25519"),
            "{msg}"
        );
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
