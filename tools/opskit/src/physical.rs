//! Base sets (`pgbackup --physical`): WAL positions and segment names, what
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
use crate::crypt::{Decrypting, Identities};
use crate::gz::HashedReader;
use crate::{Error, IoContext, Result};

/// The name of pg_basebackup's manifest inside the tar.
pub const BACKUP_MANIFEST: &str = "backup_manifest";

/// `0/2000028` → the 64-bit position.
pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some(hi << 32 | lo)
}

/// The 24-hex-digit name of the segment holding `lsn` on `timeline`.
pub fn wal_file_name(timeline: u32, lsn: u64, seg_size: u64) -> String {
    let segno = lsn / seg_size;
    let per_log = (1u64 << 32) / seg_size;
    format!(
        "{timeline:08X}{:08X}{:08X}",
        segno / per_log,
        segno % per_log
    )
}

/// A segment name's timeline and segment number (`None` for anything
/// else: history files, backup labels, partial segments).
pub fn segment_of(name: &str, seg_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    Some((tli, log * ((1u64 << 32) / seg_size) + seg))
}

/// The archive's directory in a backup root (`ROOT/wal/<timeline>/`), and
/// the checksum file that marks a WAL file archived (written last by
/// `walarchive push`).
pub const WAL_DIR: &str = "wal";
pub const SIDECAR: &str = ".sha256";

/// One archived WAL file (its checksum file is there).
#[derive(Debug, Clone)]
pub struct ArchivedWal {
    /// The WAL file's name (`%f`): a segment, `.history`, `.backup`, `.partial`.
    pub name: String,
    /// Its timeline directory.
    pub dir: std::path::PathBuf,
}

impl ArchivedWal {
    /// The files that hold it: the checksum file first (removing it first
    /// makes the file "not archived" before its data goes), then the
    /// stored file(s).
    pub fn files(&self) -> Vec<std::path::PathBuf> {
        let mut out = vec![self.dir.join(format!("{}{SIDECAR}", self.name))];
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                let stored = n == self.name
                    || n.strip_prefix(&self.name).is_some_and(|rest| {
                        [".zst", ".gz", ".age"].iter().any(|x| rest.starts_with(x))
                    });
                if stored && !n.ends_with(SIDECAR) {
                    out.push(e.path());
                }
            }
        }
        out
    }
}

/// Every archived WAL file under `root`'s archive (none when there is no
/// archive).
pub fn archived_wal(root: &Path) -> Result<Vec<ArchivedWal>> {
    let dir = root.join(WAL_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir, &e)),
    };
    let mut out = Vec::new();
    for tli in rd.flatten() {
        let path = tli.path();
        if !path.is_dir() {
            continue;
        }
        for e in fs::read_dir(&path).at("reading", &path)?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_suffix(SIDECAR)
                && !name.starts_with('.')
            {
                out.push(ArchivedWal {
                    name: name.to_string(),
                    dir: path.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Where the WAL the given base sets need starts: the earliest start
/// segment among them (its number, its name), with their segment size.
pub fn oldest_start<'a>(
    sets: impl IntoIterator<Item = &'a Manifest>,
) -> Option<(u64, String, u64)> {
    sets.into_iter()
        .filter_map(|m| {
            let info = m.physical.as_ref()?;
            let (_, n) = segment_of(&info.start_wal, info.wal_segment_size)?;
            Some((n, info.start_wal.clone(), info.wal_segment_size))
        })
        .min_by_key(|(n, _, _)| *n)
}

/// Whether archived WAL file `name` lies before segment `first`: a
/// segment, a partial segment or a backup label before it. History files
/// never do (they are kept for every timeline).
pub fn wal_before(name: &str, first: u64, seg_size: u64) -> bool {
    name.len() >= 24
        && !name.contains(".history")
        && name.is_char_boundary(24)
        && segment_of(&name[..24], seg_size).is_some_and(|(_, n)| n < first)
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

/// The plaintext of a set file, read on a thread of its own that hashes
/// (and with an identity, decrypts) it.
pub enum SetReader {
    Plain(HashedReader),
    Sealed(Decrypting),
}

impl SetReader {
    pub fn open(set: &Path, f: &FileEntry, ids: Option<&Identities>) -> Result<SetReader> {
        let path = set.join(&f.name);
        let file = File::open(&path).at("reading", &path)?;
        match (f.encrypted(), ids) {
            (false, _) => Ok(SetReader::Plain(HashedReader::new(file))),
            (true, Some(ids)) => Ok(SetReader::Sealed(Decrypting::spawn(file, ids.clone()))),
            (true, None) => Err(Error::usage(format!(
                "{} is encrypted: give the identity (--identity FILE or OPSKIT_AGE_IDENTITY)",
                path.display()
            ))),
        }
    }

    /// Read what is left and compare the file (and its plaintext) with
    /// the manifest.
    pub fn finish(self, f: &FileEntry) -> std::result::Result<(), String> {
        let (got, want) = match self {
            SetReader::Plain(h) => {
                let (_, sha) = h.finish().map_err(|e| e.to_string())?;
                (sha, &f.sha256)
            }
            SetReader::Sealed(d) => {
                let done = d.finish();
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
            Ok(())
        } else {
            Err(format!("sha256 {got} is not the manifest's {want}"))
        }
    }
}

impl Read for SetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SetReader::Plain(r) => r.read(buf),
            SetReader::Sealed(r) => r.read(buf),
        }
    }
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
        Error {
            exit: e.exit,
            msg: format!("{msg}; {} was removed", dest.display()),
        }
    })
}

fn unpack_into(set: &Path, f: &FileEntry, ids: Option<&Identities>, dest: &Path) -> Result<u64> {
    let what = set.join(&f.name);
    let mut src = SetReader::open(set, f, ids)?;
    let mut count = 0u64;
    {
        let content = crate::codec::reader(f.compression, &mut src).at("reading", &what)?;
        let mut ar = tar::Archive::new(content);
        ar.set_preserve_permissions(true);
        ar.set_overwrite(false);
        for entry in ar.entries().at("reading", &what)? {
            let mut e = entry.at("reading", &what)?;
            if !e.unpack_in(dest).at("unpacking into", dest)? {
                return Err(Error::check(format!(
                    "{}: entry {} would land outside the data directory; refused",
                    what.display(),
                    e.path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default()
                )));
            }
            count += 1;
        }
    }
    src.finish(f)
        .map_err(|e| Error::check(format!("{}: {e}", what.display())))?;
    Ok(count)
}

/// Run the real `pg_verifybackup` on an unpacked base set (before anything
/// in it is changed): every file against `backup_manifest`'s checksums,
/// and the WAL the backup needs parsed. The error is its messages.
pub fn pg_verifybackup(
    tool: &crate::pgtools::PgTool,
    data: &Path,
) -> std::result::Result<(), String> {
    let out = std::process::Command::new(&tool.path)
        .arg("--quiet")
        .arg(data)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.path.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect();
    Err(format!(
        "pg_verifybackup: {}",
        crate::pgtools::summarise(&lines)
    ))
}

/// Append recovery settings to a data directory's `postgresql.auto.conf`
/// (later lines win) and create `recovery.signal`.
pub fn write_recovery(data: &Path, settings: &[(&str, String)]) -> Result<()> {
    use std::io::Write;
    crate::durable::write_file(&data.join("recovery.signal"), 0o600, b"")?;
    let mut conf = String::from("\n# written by opskit for recovery\n");
    for (k, v) in settings {
        conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    let path = data.join("postgresql.auto.conf");
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .at("opening", &path)?;
    f.write_all(conf.as_bytes()).at("writing", &path)?;
    f.sync_all().at("syncing", &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_segment_names() {
        assert_eq!(parse_lsn("0/2000028"), Some(0x2000028));
        assert_eq!(parse_lsn("1/FF000000"), Some(0x1_FF00_0000));
        assert_eq!(parse_lsn("x/1"), None);
        let seg = 16 << 20;
        assert_eq!(wal_file_name(1, 0x2000028, seg), "000000010000000000000002");
        assert_eq!(
            wal_file_name(2, 0x1_FF00_0000, seg),
            "0000000200000001000000FF"
        );
        assert_eq!(segment_of("0000000200000001000000FF", seg), Some((2, 511)));
        assert_eq!(segment_of("00000002.history", seg), None);
    }

    #[test]
    fn what_lies_before_a_segment() {
        let seg = 16 << 20;
        let first = segment_of("000000020000000000000010", seg).unwrap().1;
        for (name, before) in [
            ("00000001000000000000000F", true),
            ("00000001000000000000000F.zst.age", true),
            ("00000001000000000000000F.00000028.backup", true),
            ("000000010000000000000010", false),
            ("000000030000000000000011.partial", false),
            ("00000002.history", false),
            ("00000002.history.zst.age", false),
            ("00000002.history.sha256", false),
        ] {
            assert_eq!(wal_before(name, first, seg), before, "{name}");
        }
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
}
