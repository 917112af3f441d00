//! `offsite verify`: re-read remote sets and check them: the manifest's
//! signature first ([`crate::remote::load`]), then SHA256SUMS, every
//! listed object's size, and the sha256 of every file read back (or of a
//! sample).

use std::collections::HashMap;

use std::io;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args as ClapArgs;
use opskit::backupset::{self, Manifest, SUMS};
use opskit::cli::TrustArgs;
use opskit::gz::HashWriter;
use opskit::progress::Progress;
use opskit::records::{OffsiteCounts, RemoteVerify};
use opskit::sign::Trust;
use opskit::{Done, Emitter, Error, Exit, Result};
use opskit_s3::Store;
use opskit_s3::sets::{RemoteInfo, RemoteSets, remote_sets};

use crate::remote::{self, check_sums, download_small};

#[derive(Debug, ClapArgs)]
pub struct VerifyArgs {
    /// [s3://BUCKET[/PREFIX]] then the remote sets to check (default:
    /// every complete one).
    #[arg(value_name = "[URL] SET")]
    pub operands: Vec<String>,

    /// Read back only this fraction of each set's files, at random (at
    /// least one); sizes and the manifest are always checked.
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub sample: Option<f64>,

    /// Append each result to ROOT/offsite-verified.ndjson, or with
    /// --record=FILE to FILE (`list` and `prune` read it).
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub record: Option<String>,

    #[command(flatten)]
    pub trust: TrustArgs,
}

fn fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("'{s}' is not a fraction in (0, 1]")),
    }
}

pub fn verify(args: &crate::Args, v: &VerifyArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let trust = v.trust.trust()?;
    let (url, chosen) = crate::operands(&v.operands)?;
    let store = args.store(url)?;
    let sets = remote_sets(&store)?;
    let names: Vec<String> = if chosen.is_empty() {
        let mut n: Vec<(chrono::DateTime<chrono::Utc>, String)> = sets
            .iter()
            .filter(|(_, s)| s.complete)
            .map(|(n, s)| (s.time, n.clone()))
            .collect();
        n.sort();
        n.into_iter().rev().map(|(_, n)| n).collect()
    } else {
        chosen.to_vec()
    };
    let log = match &v.record {
        None => None,
        Some(f) if f.is_empty() => Some(
            args.root
                .clone()
                .ok_or_else(|| {
                    Error::usage("--record needs --root or OPSKIT_BACKUP_ROOT (or --record=FILE)")
                })?
                .join(opskit::root::OFFSITE_VERIFIED_LOG),
        ),
        Some(f) => Some(PathBuf::from(f)),
    };
    let mut counts = OffsiteCounts::default();
    let mut exit = Exit::Ok;
    let mut rng = Rng::seeded();
    for name in names {
        counts.sets += 1;
        let rec = check_set(&store, &sets, &name, &trust, v.sample, &mut rng);
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

/// Check one remote set; every problem found is in the record.
fn check_set(
    store: &Store,
    sets: &RemoteSets,
    name: &str,
    trust: &Trust,
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
    match sets.get(name).filter(|s| s.complete) {
        None => rec
            .problems
            .push(format!("{}: no such complete set", rec.url)),
        // Nothing in a manifest that fails its signature is used.
        Some(listed) => match remote::load(store, name, listed, trust) {
            Ok(signed) => {
                check_sums_object(store, name, &signed.manifest, &signed.sha256, &mut rec);
                let m = &signed.manifest;
                rec.files = m.files.len() as u64;
                let take = sample.map_or(m.files.len(), |f| {
                    ((m.files.len() as f64 * f).ceil() as usize).max(1)
                });
                let chosen = rng.choose(m.files.len(), take);
                check_files(store, name, listed, m, &chosen, &mut rec);
            }
            Err(e) => rec.problems.push(e.msg),
        },
    }
    rec.ok = rec.problems.is_empty();
    rec.duration_s = opskit::record::secs(start.elapsed());
    rec
}

/// The remote SHA256SUMS must agree with the manifest.
fn check_sums_object(
    store: &Store,
    name: &str,
    m: &Manifest,
    manifest_sha: &str,
    rec: &mut RemoteVerify,
) {
    let key = store.remote.key(name, SUMS);
    match download_small(store, &key, backupset::MAX_MANIFEST) {
        Ok(s) => {
            if let Err(why) = check_sums(m, manifest_sha, &s) {
                let url = store.remote.url(&format!("{name}/{SUMS}"));
                rec.problems.push(format!("{url}: {why}"));
            }
        }
        Err(e) => rec.problems.push(e.msg),
    }
}

/// Every listed file's object has the manifest's size; the `chosen` ones
/// are read back and hashed.
fn check_files(
    store: &Store,
    name: &str,
    listed: &RemoteInfo,
    m: &Manifest,
    chosen: &[usize],
    rec: &mut RemoteVerify,
) {
    let at = |file: &str| store.remote.url(&format!("{name}/{file}"));
    // What will be read back: the chosen files the listing shows whole.
    let total = chosen
        .iter()
        .filter_map(|&i| m.files.get(i))
        .filter(|f| listed.sizes.get(&f.name) == Some(&f.bytes))
        .map(|f| f.bytes);
    let progress = Progress::start(
        format!("reading back {name}"),
        Some(total.fold(0, u64::saturating_add)),
    );
    for (i, f) in m.files.iter().enumerate() {
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
        match hash_object(store, &store.remote.key(name, &f.name), &progress) {
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
    progress.finish();
}

/// Read an object to its end: its size and sha256.
fn hash_object(store: &Store, key: &str, progress: &Progress) -> Result<(u64, String)> {
    let (_, body) = store.get(key)?;
    let mut body = progress.reader(body);
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

/// Append one record to a result log (0600, locked, fsynced). The log is
/// in a directory others may write: a symlink or hard link planted at its
/// name is refused, never written through.
fn append(file: &Path, em: &Emitter, rec: &RemoteVerify) -> Result<()> {
    opskit::verdicts::VerdictLog::at(file).append(&em.render(rec))
}

/// The latest `remote_verify` verdict per set in a result log (none when
/// there is no log; a log that is not a regular file is skipped with a
/// warning).
pub fn remote_verdicts(root: Option<&Path>) -> HashMap<String, bool> {
    let Some(root) = root else {
        return HashMap::new();
    };
    match opskit::verdicts::VerdictLog::offsite(root).passed() {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            log::warn!("{}; its verdicts are not used", e.msg);
            HashMap::new()
        }
    }
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
