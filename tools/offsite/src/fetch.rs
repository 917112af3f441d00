//! Reading remote sets back: `offsite pull` (into a local root, through
//! the same staging and rename as pgbackup) and `offsite verify` (every
//! byte, or a sample, hashed against the manifest).

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST, Manifest, SUMS};
use opskit::durable::{self, StagingDir, WritebackFile};
use opskit::gz::HashWriter;
use opskit::records::{OffsiteCounts, Pull, RemoteVerify};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result};

use crate::list::{RemoteSets, remote_sets};
use crate::s3::Store;

/// The result log `offsite verify --record` appends to in the backup root.
pub const REMOTE_LOG: &str = "offsite-verified.ndjson";

#[derive(Debug, ClapArgs)]
pub struct PullArgs {
    /// The remote set's name, or `latest`: the newest complete remote set.
    #[arg(value_name = "SET")]
    pub set: String,

    /// The local backup root to put it in (default: --root or OPSKIT_BACKUP_ROOT).
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,
}

#[derive(Debug, ClapArgs)]
pub struct VerifyArgs {
    /// Remote sets to check (default: every complete one).
    #[arg(value_name = "SET")]
    pub sets: Vec<String>,

    /// Read back only this fraction of each set's files, at random (at
    /// least one); sizes and the manifest are always checked.
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub sample: Option<f64>,

    /// Append each result to ROOT/offsite-verified.ndjson, or with
    /// --record=FILE to FILE (`list` and `prune` read it).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub record: Option<String>,
}

fn fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("'{s}' is not a fraction in (0, 1]")),
    }
}

pub fn pull(args: &crate::Args, p: &PullArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let start = Instant::now();
    let dest = p
        .dest
        .clone()
        .or_else(|| args.root.clone())
        .ok_or_else(|| {
            Error::usage("no destination: give --dest ROOT or set OPSKIT_BACKUP_ROOT")
        })?;
    let store = args.store(None)?;
    let sets = remote_sets(&store)?;
    let name = pick(&sets, &p.set, &store)?;
    if !dest.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dest)
            .at("creating backup root", &dest)?;
    }
    let stage = StagingDir::create(&dest.join(&name), 0o700)?;
    let manifest = download_small(&store, &store.remote.key(&name, MANIFEST))?;
    fs::write(stage.path().join(MANIFEST), &manifest).at("writing", stage.path())?;
    let (m, manifest_sha) = backupset::read_manifest(stage.path()).map_err(|e| {
        Error::failure(format!(
            "{}: {}",
            store.remote.url(&format!("{name}/{MANIFEST}")),
            e.msg
        ))
    })?;
    fs::set_permissions(
        stage.path().join(MANIFEST),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .at("writing", stage.path())?;
    let mut bytes = manifest.len() as u64;
    for f in &m.files {
        bytes += download_file(&store, &name, &f.name, f.bytes, &f.sha256, stage.path())?;
    }
    let sums = download_small(&store, &store.remote.key(&name, SUMS))?;
    check_sums(&m, &manifest_sha, &sums).map_err(|why| {
        Error::failure(format!(
            "{}: {why}",
            store.remote.url(&format!("{name}/{SUMS}"))
        ))
    })?;
    let sums_path = stage.path().join(SUMS);
    let mut f = durable::create_new(&sums_path, 0o600)?;
    f.write_all(&sums).at("writing", &sums_path)?;
    durable::sync_file(&f, &sums_path)?;
    let mpath = stage.path().join(MANIFEST);
    durable::sync_file(&fs::File::open(&mpath).at("syncing", &mpath)?, &mpath)?;
    let path = stage.commit()?;
    log::info!("pulled {} into {}", name, path.display());
    em.emit(&Pull {
        ok: true,
        url: store.remote.url(&format!("{name}/")),
        set: name,
        path: path.display().to_string(),
        bytes,
        duration_s: opskit::record::secs(start.elapsed()),
    })?;
    Ok(Done::new(
        Exit::Ok,
        OffsiteCounts {
            sets: 1,
            done: 1,
            failed: 0,
            bytes,
        },
    ))
}

/// The set `want` names: `latest` or a complete remote set's name.
fn pick(sets: &RemoteSets, want: &str, store: &Store) -> Result<String> {
    if want == "latest" {
        return sets
            .iter()
            .filter(|(_, s)| s.complete)
            .max_by_key(|(n, s)| (s.time, (*n).clone()))
            .map(|(n, _)| n.clone())
            .ok_or_else(|| {
                Error::failure(format!("no complete set under {}", store.remote.url("")))
            });
    }
    match sets.get(want) {
        Some(s) if s.complete => Ok(want.to_string()),
        Some(_) => Err(Error::failure(format!(
            "{} has no MANIFEST.json: an interrupted push, not a set",
            store.remote.url(&format!("{want}/"))
        ))),
        None => Err(Error::failure(format!(
            "no set {want} under {}",
            store.remote.url("")
        ))),
    }
}

/// A small object (a manifest, SHA256SUMS) into memory.
pub(crate) fn download_small(store: &Store, key: &str) -> Result<Vec<u8>> {
    let (_, body) = store.get(key)?;
    let mut out = Vec::new();
    body.take(backupset::MAX_MANIFEST + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::failure(format!(
                "downloading s3://{}/{key}: {e}",
                store.remote.bucket
            ))
        })?;
    if out.len() as u64 > backupset::MAX_MANIFEST {
        return Err(Error::failure(format!(
            "s3://{}/{key} is larger than any manifest",
            store.remote.bucket
        )));
    }
    Ok(out)
}

/// Stream one object into `dir/name` (0600, fsynced), hashing it; its
/// size and sha256 must be the manifest's.
fn download_file(
    store: &Store,
    set: &str,
    name: &str,
    size: u64,
    sha: &str,
    dir: &Path,
) -> Result<u64> {
    let key = store.remote.key(set, name);
    let url = format!("s3://{}/{key}", store.remote.bucket);
    let (_, mut body) = store.get(&key)?;
    let path = dir.join(name);
    let file = durable::create_new(&path, 0o600)?;
    let mut out = HashWriter::new(WritebackFile::new(file));
    io::copy(&mut body, &mut out).map_err(|e| match e.kind() {
        io::ErrorKind::StorageFull
        | io::ErrorKind::FileTooLarge
        | io::ErrorKind::PermissionDenied => Error::io("writing", &path, &e),
        _ => Error::failure(format!("downloading {url}: {e}")),
    })?;
    let (file, bytes, got) = out.finish();
    if bytes != size || got != sha {
        return Err(Error::failure(format!(
            "{url} is damaged: {bytes} bytes, sha256 {got}; its manifest says {size} bytes, sha256 {sha}"
        )));
    }
    durable::sync_file(&file.into_inner(), &path)?;
    Ok(bytes)
}

/// SHA256SUMS must be what the manifest says.
fn check_sums(m: &Manifest, manifest_sha: &str, sums: &[u8]) -> std::result::Result<(), String> {
    let mut want: Vec<(String, String)> = m
        .files
        .iter()
        .map(|f| (f.name.clone(), f.sha256.clone()))
        .collect();
    want.push((MANIFEST.into(), manifest_sha.into()));
    if backupset::sums_text(&want).as_bytes() == sums {
        Ok(())
    } else {
        Err("does not agree with the manifest".into())
    }
}

pub fn verify(args: &crate::Args, v: &VerifyArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let store = args.store(None)?;
    let sets = remote_sets(&store)?;
    let names: Vec<String> = if v.sets.is_empty() {
        let mut n: Vec<(chrono::DateTime<chrono::Utc>, String)> = sets
            .iter()
            .filter(|(_, s)| s.complete)
            .map(|(n, s)| (s.time, n.clone()))
            .collect();
        n.sort();
        n.into_iter().rev().map(|(_, n)| n).collect()
    } else {
        v.sets.clone()
    };
    let log = match &v.record {
        None => None,
        Some(f) if f.is_empty() => Some(
            args.root
                .clone()
                .ok_or_else(|| {
                    Error::usage("--record needs --root or OPSKIT_BACKUP_ROOT (or --record=FILE)")
                })?
                .join(REMOTE_LOG),
        ),
        Some(f) => Some(PathBuf::from(f)),
    };
    let mut counts = OffsiteCounts::default();
    let mut exit = Exit::Ok;
    let mut rng = Rng::seeded();
    for name in names {
        counts.sets += 1;
        let rec = check_set(&store, &sets, &name, v.sample, &mut rng);
        counts.bytes += rec.bytes;
        if rec.ok {
            counts.done += 1;
        } else {
            counts.failed += 1;
            exit = exit.worst(Exit::CheckFailed);
            for p in &rec.problems {
                log::error!("{p}");
            }
        }
        if let Some(file) = &log {
            append(file, em, &rec)?;
        }
        em.emit(&rec)?;
    }
    Ok(Done::new(exit, counts))
}

/// Check one remote set: its manifest, every listed object's size, and
/// the sha256 of the files read back.
fn check_set(
    store: &Store,
    sets: &RemoteSets,
    name: &str,
    sample: Option<f64>,
    rng: &mut Rng,
) -> RemoteVerify {
    let start = Instant::now();
    let mut rec = RemoteVerify {
        ok: false,
        set: name.into(),
        url: store.remote.url(&format!("{name}/")),
        files: 0,
        checked: 0,
        bytes: 0,
        problems: Vec::new(),
        duration_s: 0.0,
    };
    let at = |file: &str| store.remote.url(&format!("{name}/{file}"));
    let Some(listed) = sets.get(name).filter(|s| s.complete) else {
        rec.problems
            .push(format!("{}: no such complete set", rec.url));
        return rec;
    };
    let manifest = match download_small(store, &store.remote.key(name, MANIFEST)) {
        Ok(m) => m,
        Err(e) => {
            rec.problems.push(e.msg);
            return rec;
        }
    };
    let m: Manifest = match serde_json::from_slice(&manifest) {
        Ok(m) => m,
        Err(e) => {
            rec.problems
                .push(format!("{}: not a valid manifest: {e}", at(MANIFEST)));
            return rec;
        }
    };
    let manifest_sha = opskit::gz::sha256_hex(&manifest);
    match download_small(store, &store.remote.key(name, SUMS)) {
        Ok(s) => {
            if let Err(why) = check_sums(&m, &manifest_sha, &s) {
                rec.problems.push(format!("{}: {why}", at(SUMS)));
            }
        }
        Err(e) => rec.problems.push(e.msg),
    }
    rec.files = m.files.len() as u64;
    let take = sample.map_or(m.files.len(), |f| {
        ((m.files.len() as f64 * f).ceil() as usize).max(1)
    });
    let chosen = rng.choose(m.files.len(), take);
    for (i, f) in m.files.iter().enumerate() {
        if !backupset::safe_member_name(&f.name) {
            rec.problems
                .push(format!("{}: unsafe file name {:?}", at(MANIFEST), f.name));
            continue;
        }
        match listed.sizes.get(&f.name) {
            None => {
                rec.problems.push(format!("{}: missing", at(&f.name)));
                continue;
            }
            Some(&s) if s != f.bytes => {
                rec.problems.push(format!(
                    "{}: {s} bytes, the manifest says {}",
                    at(&f.name),
                    f.bytes
                ));
                continue;
            }
            _ => {}
        }
        if !chosen.contains(&i) {
            continue;
        }
        rec.checked += 1;
        match hash_object(store, &store.remote.key(name, &f.name)) {
            Ok((bytes, sha)) => {
                rec.bytes += bytes;
                if bytes != f.bytes || sha != f.sha256 {
                    rec.problems.push(format!(
                        "{}: read back {bytes} bytes, sha256 {sha}; the manifest says {} bytes, sha256 {}",
                        at(&f.name),
                        f.bytes,
                        f.sha256
                    ));
                }
            }
            Err(e) => rec.problems.push(e.msg),
        }
    }
    rec.ok = rec.problems.is_empty();
    rec.duration_s = opskit::record::secs(start.elapsed());
    rec
}

/// Read an object to its end: its size and sha256.
fn hash_object(store: &Store, key: &str) -> Result<(u64, String)> {
    let (_, mut body) = store.get(key)?;
    let mut h = HashWriter::new(io::sink());
    io::copy(&mut body, &mut h).map_err(|e| {
        Error::failure(format!(
            "reading back s3://{}/{key}: {e}",
            store.remote.bucket
        ))
    })?;
    let (_, n, sha) = h.finish();
    Ok((n, sha))
}

/// Append one record to a result log (0600, locked, fsynced).
fn append(file: &Path, em: &Emitter, rec: &RemoteVerify) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .at("opening result log", file)?;
    f.lock().at("locking", file)?;
    let mut line = em.render(rec);
    line.push('\n');
    f.write_all(line.as_bytes()).at("appending to", file)?;
    f.sync_data().at("syncing", file)
}

/// The latest `remote_verify` verdict per set in a result log.
pub fn remote_verdicts(root: Option<&Path>) -> HashMap<String, bool> {
    let mut out = HashMap::new();
    let Some(Ok(f)) = root.map(|r| fs::File::open(r.join(REMOTE_LOG))) else {
        return out;
    };
    let mut rd = opskit::reader::RecordReader::new(io::BufReader::new(f));
    for line in rd.by_ref().flatten() {
        if let Ok(r) = line.parse::<RemoteVerify>() {
            out.insert(r.set, r.ok);
        }
    }
    out
}

/// A small xorshift generator for choosing the sample.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `k` distinct indexes below `n`.
    fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        for i in 0..k.min(n) {
            let j = i + (self.next() % (n - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx.truncate(k.min(n));
        idx
    }
}
