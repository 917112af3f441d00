//! Base sets (`pgbackup --physical`): WAL positions, what
//! `pg_basebackup` says about its backup, the `backup_manifest` inside the
//! tar, and unpacking a set into a new data directory with its sha256
//! checked on the way.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use serde::Deserialize;

use crate::backupset::{FileEntry, Manifest};
use crate::codec::AtMost;
use crate::crypt::{Decrypting, Identities};
use crate::gz::HashedReader;
use crate::progress::Progress;
use crate::{Error, IoContext, Result};

/// The name of pg_basebackup's manifest inside the tar.
pub const BACKUP_MANIFEST: &str = "backup_manifest";
/// The largest `backup_manifest` read (about 200 bytes a file: millions of
/// files fit).
pub const MAX_BACKUP_MANIFEST: u64 = 1 << 30;

/// `0/2000028` → the 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(hi << 32 | lo)
}

/// The 64-bit position → `0/2000028`, as PostgreSQL writes it.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// A timeline history file's entries: (parent timeline, the LSN where the
/// next timeline branched off it), oldest first.
pub fn parse_history(text: &str) -> Vec<(u32, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let tli = w.next()?.parse().ok()?;
            let lsn = parse_lsn(w.next()?)?;
            Some((tli, lsn))
        })
        .collect()
}

/// Where a base backup starts and ends, from `pg_basebackup --verbose`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPoints {
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
}

impl BackupPoints {
    /// From pg_basebackup's messages: "write-ahead log start point:
    /// 0/2000028 on timeline 1" and "write-ahead log end point: 0/2000100".
    pub fn from_messages(lines: &[String]) -> Option<BackupPoints> {
        let mut start = None;
        let mut end = None;
        for l in lines {
            if let Some(rest) = l.split("write-ahead log start point: ").nth(1) {
                let mut w = rest.split_whitespace();
                let lsn = w.next()?.to_string();
                let tli = w.nth(2).and_then(|t| t.parse().ok())?;
                start = Some((lsn, tli));
            } else if let Some(rest) = l.split("write-ahead log end point: ").nth(1) {
                end = rest.split_whitespace().next().map(str::to_string);
            }
        }
        let (start_lsn, timeline) = start?;
        parse_lsn(&start_lsn)?;
        let end_lsn = end.filter(|e| parse_lsn(e).is_some())?;
        Some(BackupPoints {
            timeline,
            start_lsn,
            end_lsn,
        })
    }
}

/// What `backup_manifest` lists: every file of the data directory with its
/// size (its checksums are `pg_verifybackup`'s to check).
#[derive(Debug, Deserialize)]
pub struct PgBackupManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    pub version: u32,
    #[serde(rename = "Files")]
    pub files: Vec<PgManifestFile>,
}

#[derive(Debug, Deserialize)]
pub struct PgManifestFile {
    #[serde(rename = "Path")]
    pub path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    pub encoded_path: Option<String>,
    #[serde(rename = "Size")]
    pub size: u64,
}

impl PgBackupManifest {
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("{BACKUP_MANIFEST}: {e}"))
    }

    /// Compare with the regular files a tar held (path → size): the files
    /// the manifest lists and the tar lacks, or has with another size.
    /// Returns how many files were compared.
    pub fn compare(&self, held: &BTreeMap<String, u64>) -> std::result::Result<usize, String> {
        let mut bad = Vec::new();
        for f in &self.files {
            let Some(path) = f.path.as_deref() else {
                continue; // a hex-encoded non-UTF-8 name: pg_verifybackup's to check
            };
            match held.get(path) {
                None => bad.push(format!("{path} missing")),
                Some(&n) if n != f.size => {
                    bad.push(format!("{path} is {n} bytes, listed as {}", f.size))
                }
                Some(_) => {}
            }
        }
        if bad.is_empty() {
            return Ok(self.files.len());
        }
        let more = bad.len().saturating_sub(5);
        bad.truncate(5);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        Err(format!(
            "the tar does not match its {BACKUP_MANIFEST}: {}{tail}",
            bad.join(", ")
        ))
    }
}

/// The total size of the files a `backup_manifest` lists, summed as it
/// streams: a manifest of millions of files is never held.
pub fn listed_bytes(r: impl Read) -> std::result::Result<u64, String> {
    use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Total(u64);
    struct Files(u64);
    #[derive(Deserialize)]
    struct Sized {
        #[serde(rename = "Size")]
        size: u64,
    }
    impl<'de> Deserialize<'de> for Files {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Files;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a list of files")
                }
                fn visit_seq<A: SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> std::result::Result<Files, A::Error> {
                    let mut sum = 0u64;
                    while let Some(f) = seq.next_element::<Sized>()? {
                        sum = sum.saturating_add(f.size);
                    }
                    Ok(Files(sum))
                }
            }
            d.deserialize_seq(V)
        }
    }
    impl<'de> Deserialize<'de> for Total {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Total;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a backup manifest")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Total, A::Error> {
                    let mut total = None;
                    while let Some(key) = map.next_key::<String>()? {
                        if key == "Files" {
                            total = Some(map.next_value::<Files>()?.0);
                        } else {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    total
                        .map(Total)
                        .ok_or_else(|| de::Error::missing_field("Files"))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_reader::<_, Total>(io::BufReader::new(r))
        .map(|t| t.0)
        .map_err(|e| format!("{BACKUP_MANIFEST}: {e}"))
}

/// The plaintext of a set file, read on a thread of its own that hashes
/// (and with an identity, decrypts) it, its progress shown on stderr
/// ([`Progress`]).
pub struct SetReader {
    stream: Stream,
    progress: Progress,
}

enum Stream {
    Plain(HashedReader),
    Sealed(AtMost<Decrypting>),
}

impl SetReader {
    pub fn open(set: &Path, f: &FileEntry, ids: Option<&Identities>) -> Result<SetReader> {
        let path = set.join(&f.name);
        let file = crate::safefs::open_nofollow(&path, fs::OpenOptions::new().read(true))?;
        Self::from_file(file, &path, f, ids)
    }

    /// [`SetReader::open`] of a file already open (`path` names it).
    pub fn from_file(
        file: File,
        path: &Path,
        f: &FileEntry,
        ids: Option<&Identities>,
    ) -> Result<SetReader> {
        if f.encrypted() && ids.is_none() {
            return Err(Error::usage(format!(
                "{} is encrypted: give the identity (--identity FILE or OPSKIT_AGE_IDENTITY)",
                path.display()
            )));
        }
        let progress = Progress::start(format!("reading {}", short(path)), Some(f.bytes));
        // Never read past what the manifest gives, the file's bytes and its
        // plaintext's: the sha256 that proves them is known only at the end.
        let file = AtMost::new(progress.reader(file), f.bytes, "the file");
        let stream = match ids.filter(|_| f.encrypted()) {
            None => Stream::Plain(HashedReader::new(file)),
            Some(ids) => Stream::Sealed(AtMost::new(
                Decrypting::spawn(file, ids.clone()),
                f.plaintext_bytes.unwrap_or(u64::MAX),
                "its plaintext",
            )),
        };
        Ok(SetReader { stream, progress })
    }

    /// Read what is left and compare the file (and its plaintext) with
    /// the manifest.
    pub fn finish(self, f: &FileEntry) -> std::result::Result<(), String> {
        let (got, want) = match self.stream {
            Stream::Plain(h) => {
                let (_, sha) = h.finish().map_err(|e| e.to_string())?;
                (sha, &f.sha256)
            }
            Stream::Sealed(d) => {
                let done = d.into_inner().finish();
                let file = done.file.map_err(|e| e.to_string())?;
                if file.sha256 != f.sha256 {
                    return Err(format!("sha256 {} is not the manifest's", file.sha256));
                }
                let plain = done.plaintext.map_err(|e| e.to_string())?;
                let want = f.plaintext_sha256.as_ref().unwrap_or(&f.sha256);
                (plain.sha256, want)
            }
        };
        if &got == want {
            self.progress.finish();
            Ok(())
        } else {
            Err(format!("sha256 {got} is not the manifest's {want}"))
        }
    }
}

impl Read for SetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.stream {
            Stream::Plain(r) => r.read(buf),
            Stream::Sealed(r) => r.read(buf),
        }
    }
}

/// A set file's path as progress names it: its set and its name.
fn short(path: &Path) -> String {
    let mut parts = path.iter().rev().take(2).collect::<Vec<_>>();
    parts.reverse();
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The base tar of a set.
pub fn base_file(m: &Manifest) -> Option<&FileEntry> {
    let name = &m.physical.as_ref()?.file;
    m.files.iter().find(|f| &f.name == name)
}

/// Unpack a base set's tar into `dest` (which must not exist; created
/// 0700), checking the file's sha256 (and the plaintext's) as it streams.
/// On any failure `dest` is removed again.
pub fn unpack(set: &Path, m: &Manifest, ids: Option<&Identities>, dest: &Path) -> Result<u64> {
    let f = base_file(m).ok_or_else(|| {
        Error::usage(format!(
            "{} is not a base set (pgbackup --physical): it has no data directory to restore",
            set.display()
        ))
    })?;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(dest)
        .at("creating data directory", dest)?;
    unpack_into(set, f, ids, dest).map_err(|e| {
        let _ = fs::remove_dir_all(dest);
        // Whatever broke (a damaged stream, a bad tar header, a full
        // disk), say which set file and that nothing is left.
        let what = set.join(&f.name).display().to_string();
        let msg = e.msg.replace("; the data directory was removed", "");
        let msg = if msg.starts_with(&what) {
            msg
        } else {
            format!("{what}: {msg}")
        };
        Error::new(e.exit, format!("{msg}; {} was removed", dest.display()))
    })
}

fn unpack_into(set: &Path, f: &FileEntry, ids: Option<&Identities>, dest: &Path) -> Result<u64> {
    let what = set.join(&f.name);
    let mut src = SetReader::open(set, f, ids)?;
    let count = {
        let content = crate::codec::content_reader(f, &mut src).at("reading", &what)?;
        let done = crate::untar::unpack_with(content, dest, &what, crate::untar::Links::Refuse)?;
        if !done.skipped.is_empty() || !done.stripped.is_empty() {
            log::warn!("{}: {}", what.display(), done.describe());
        }
        done.entries
    };
    src.finish(f)
        .map_err(|e| Error::check(format!("{}: {e}", what.display())))?;
    Ok(count)
}

/// Run the real `pg_verifybackup` on an unpacked base set (before anything
/// in it is changed): every file against `backup_manifest`'s checksums,
/// and, with `parse_wal`, the WAL the backup needs parsed. The error is
/// its messages.
pub fn pg_verifybackup(
    tool: &crate::pgtools::PgTool,
    data: &Path,
    parse_wal: bool,
) -> std::result::Result<(), String> {
    let mut cmd = std::process::Command::new(&tool.path);
    // Killed, the restore takes it with it.
    crate::sys::end_with_parent(&mut cmd, crate::sys::SIGTERM);
    cmd.arg("--quiet");
    if !parse_wal {
        cmd.arg("--no-parse-wal");
    }
    let out = cmd
        .arg(data)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.path.display()))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "pg_verifybackup: {}",
        crate::pgtools::summarise_stderr(&out.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns() {
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
        assert_eq!(parse_lsn("1/FF000000"), Some(0x1_FF00_0000));
        assert_eq!(parse_lsn("x/1"), None);
    }

    #[test]
    fn history_files() {
        let h = parse_history(
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore 2026-12-04\n",
        );
        assert_eq!(h, vec![(1, 0x3000158), (2, 0x5000000)]);
    }

    #[test]
    fn points_from_pg_basebackup_messages() {
        let lines: Vec<String> = [
            "pg_basebackup: initiating base backup, waiting for checkpoint to complete",
            "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1",
            "pg_basebackup: write-ahead log end point: 0/2000100",
            "pg_basebackup: base backup completed",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let p = BackupPoints::from_messages(&lines).unwrap();
        assert_eq!(p.timeline, 1);
        assert_eq!(p.start_lsn, "0/2000028");
        assert_eq!(p.end_lsn, "0/2000100");
        assert!(BackupPoints::from_messages(&lines[..2]).is_none());
    }

    #[test]
    fn manifest_comparison_names_what_differs() {
        let m = PgBackupManifest::parse(
            br#"{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [
                {"Path": "PG_VERSION", "Size": 3, "Last-Modified": "x"},
                {"Path": "base/1/1259", "Size": 8192}]}"#,
        )
        .unwrap();
        let mut held = BTreeMap::from([("PG_VERSION".to_string(), 3u64)]);
        let e = m.compare(&held).unwrap_err();
        assert!(e.contains("base/1/1259 missing"), "{e}");
        held.insert("base/1/1259".into(), 100);
        let e = m.compare(&held).unwrap_err();
        assert!(e.contains("is 100 bytes, listed as 8192"), "{e}");
        held.insert("base/1/1259".into(), 8192);
        assert_eq!(m.compare(&held), Ok(2));
    }

    #[test]
    fn listed_bytes_sums_the_files() {
        let m = br#"{"PostgreSQL-Backup-Manifest-Version": 2, "System-Identifier": 1,
            "Files": [{"Path": "PG_VERSION", "Size": 3}, {"Encoded-Path": "ff", "Size": 8192}],
            "WAL-Ranges": [{"Timeline": 1}], "Manifest-Checksum": "x"}"#;
        assert_eq!(listed_bytes(&m[..]), Ok(8195));
        assert!(listed_bytes(&b"{}"[..]).unwrap_err().contains("Files"));
    }
}
