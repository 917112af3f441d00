//! `offsite push`: upload each set that passed verification, its files
//! first, SHA256SUMS and the signature (`MANIFEST.json.minisig`) next,
//! MANIFEST.json last. Every file's size is checked against the manifest
//! before anything goes up, and the bytes sent are hashed on the way and
//! compared with it ([`crate::upload`]): a file that changed since it was
//! verified fails the set, and its MANIFEST.json is not uploaded. An
//! object already there is compared, never overwritten.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{Duration as Days, Utc};
use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST, Manifest, SUMS};
use opskit::progress::Progress;
use opskit::reader::{Line, LineError};
use opskit::record::Fields;
use opskit::records::{Backup, ErrorRecord, OffsiteCounts, Push, Verify};
use opskit::sign::SET_SIGNATURE;
use opskit::upstream::{self, Upstream};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result, units};
use opskit_s3::Store;

use crate::upload::Upload;

#[derive(Debug, ClapArgs)]
pub struct PushArgs {
    /// [s3://BUCKET[/PREFIX]] then set directories; none or '-': records
    /// on stdin (verify-backup's `verify`, or pgbackup's `backup` checked
    /// against the root's verified.ndjson).
    #[arg(value_name = "URL|SET")]
    pub targets: Vec<String>,

    /// Also push sets that are not encrypted (they leave your control
    /// readable by whoever reads the bucket).
    #[arg(long)]
    pub allow_unencrypted: bool,

    /// Object Lock: no one, these credentials included, can delete or
    /// overwrite the uploaded objects for N days (COMPLIANCE mode; the
    /// bucket must have Object Lock enabled). Every object of the set,
    /// uploaded now or found there, is checked and if need be locked
    /// (needs s3:GetObjectRetention and s3:PutObjectRetention).
    #[arg(long, value_name = "N")]
    pub retain_days: Option<u32>,

    /// Abort the set's unfinished multipart uploads older than this (an
    /// interrupted push's; a younger one may be another push's).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = units::duration_arg)]
    pub stale_after: std::time::Duration,

    /// Parts uploaded at once per file (memory: 8 MiB each).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub jobs: u8,
}

/// A set to push, with the record that offered it.
struct Job {
    path: PathBuf,
    /// The verdict, when a `verify` record brought it.
    verified: Option<bool>,
    extra: Fields,
}

pub fn run(args: &crate::Args, p: &PushArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let (url, sets) = crate::operands(&p.targets)?;
    let store = args.store(url)?;
    let lock = p.retain_days.map(opskit_s3::retain_until);
    let mut counts = OffsiteCounts::default();
    let mut exit = Exit::Ok;
    let jobs = if sets.is_empty() || sets == ["-"] {
        from_stdin(em, &mut exit)?
    } else {
        sets.iter()
            .map(|s| Job {
                path: PathBuf::from(s),
                verified: None,
                extra: Fields::new(),
            })
            .collect()
    };
    for job in jobs {
        counts.sets += 1;
        let start = Instant::now();
        let set = job
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rec = Push {
            extra: job.extra.clone(),
            ok: false,
            url: store.remote.url(&format!("{set}/")),
            set,
            path: job.path.display().to_string(),
            encrypted: false,
            uploaded: 0,
            skipped: 0,
            bytes: 0,
            error: None,
            duration_s: 0.0,
        };
        match push_set(&store, &job, p, lock.as_deref(), &mut rec) {
            Ok(()) => {
                rec.ok = true;
                counts.done += 1;
                counts.bytes += rec.bytes;
                log::info!(
                    "pushed {} to {} ({} uploaded, {} already there)",
                    rec.set,
                    rec.url,
                    rec.uploaded,
                    rec.skipped
                );
            }
            Err(e) => {
                log::error!("{}: {}", rec.set, e.msg);
                rec.error = Some(e.msg);
                counts.failed += 1;
                exit = exit.worst(Exit::Failure);
            }
        }
        rec.duration_s = opskit::record::secs(start.elapsed());
        em.emit(&rec)?;
    }
    Ok(Done::new(exit, counts))
}

/// The sets the records on stdin name. An upstream failure is passed on
/// and makes the run fail.
fn from_stdin(em: &mut Emitter, exit: &mut Exit) -> Result<Vec<Job>> {
    let read = upstream::read(em, job_of)?;
    if read.failures > 0 {
        *exit = exit.worst(Exit::Failure);
    }
    Ok(read.work)
}

fn job_of(line: &Line) -> std::result::Result<Upstream<Job>, LineError> {
    let job = |path: String, verified| {
        Upstream::Work(Job {
            path: PathBuf::from(path),
            verified,
            extra: line.fields.clone(),
        })
    };
    Ok(match line.event() {
        "verify" => {
            let v: Verify = line.parse()?;
            job(v.path, Some(v.ok))
        }
        "backup" => job(line.parse::<Backup>()?.path, None),
        "error" => Upstream::Failed(line.parse::<ErrorRecord>()?),
        _ => Upstream::Nothing,
    })
}

/// Push one set; `rec` is filled in as it goes.
fn push_set(
    store: &Store,
    job: &Job,
    p: &PushArgs,
    lock: Option<&str>,
    rec: &mut Push,
) -> Result<()> {
    let set = job.path.as_path();
    check_verified(job, set, &rec.set)?;
    let local = LocalSet::read(set)?;
    rec.encrypted = local.manifest.encryption.is_some();
    if !rec.encrypted && !p.allow_unencrypted {
        return Err(Error::failure(format!(
            "{} is not encrypted: pushed, it would be readable by whoever reads the bucket; encrypt new sets (pgbackup --encrypt-to) or pass --allow-unencrypted",
            set.display()
        )));
    }
    local.check_sizes(set)?;
    abort_stale_uploads(store, &rec.set, p.stale_after);
    let objects = local.objects();
    let total = objects.iter().map(|o| o.1).fold(0, u64::saturating_add);
    let progress = Progress::start(format!("pushing {}", rec.set), Some(total));
    for (name, size, sha, data) in objects {
        let key = store.remote.key(&rec.set, &name);
        let up = Upload {
            store,
            key: &key,
            path: &set.join(&name),
            data,
            size,
            sha: &sha,
            lock,
            jobs: p.jobs,
            progress: &progress,
        };
        if up.run()? {
            rec.uploaded += 1;
            rec.bytes += size;
        } else {
            rec.skipped += 1;
        }
    }
    progress.finish();
    Ok(())
}

/// Only a set that passed verification is pushed: the verdict came with
/// the record, or is the latest in its root's verified.ndjson.
fn check_verified(job: &Job, set: &Path, name: &str) -> Result<()> {
    let verified = match job.verified {
        Some(v) => v,
        None => {
            let root = set.parent().unwrap_or(Path::new("."));
            opskit::verdicts::VerdictLog::local(root).passed()?
                .get(name)
                .copied()
                .ok_or_else(|| {
                    Error::failure(format!(
                        "{} has no verification result in {}: run verify-backup --record first; not pushed",
                        set.display(),
                        root.join(backupset::VERIFIED_LOG).display()
                    ))
                })?
        }
    };
    if !verified {
        return Err(Error::failure(format!(
            "{} failed verification; not pushed",
            set.display()
        )));
    }
    Ok(())
}

/// A file to upload: its name, size and sha256, and its bytes when they
/// are in memory.
type Object<'a> = (String, u64, String, Option<&'a [u8]>);

/// What of a local set is read before anything is uploaded: the
/// manifest (bytes and parsed), SHA256SUMS and the signature. These are
/// uploaded from memory, exactly as read.
struct LocalSet {
    manifest: Manifest,
    text: Vec<u8>,
    sums: Vec<u8>,
    signature: Option<Vec<u8>>,
}

impl LocalSet {
    fn read(set: &Path) -> Result<LocalSet> {
        let failed = |e: Error| Error::failure(e.msg);
        let text = backupset::read_manifest_bytes(set).map_err(failed)?;
        let origin = set.join(MANIFEST).display().to_string();
        let manifest = backupset::parse_manifest(&text, &origin).map_err(failed)?;
        backupset::check_set_name(set, &manifest).map_err(failed)?;
        let sums = read_small(&set.join(SUMS), backupset::MAX_MANIFEST)?;
        let sig = set.join(SET_SIGNATURE);
        let signature = match std::fs::symlink_metadata(&sig) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                log::warn!(
                    "{}: not signed (no {SET_SIGNATURE}): pushed without a signature, it pulls only with --allow-unsigned",
                    set.display()
                );
                None
            }
            _ => Some(read_small(&sig, crate::remote::MAX_SIGNATURE)?),
        };
        Ok(LocalSet {
            manifest,
            text,
            sums,
            signature,
        })
    }

    /// Every file must have its manifest size before anything goes up.
    fn check_sizes(&self, set: &Path) -> Result<()> {
        for f in &self.manifest.files {
            let path = set.join(&f.name);
            let meta = std::fs::symlink_metadata(&path).at("reading", &path)?;
            if !meta.is_file() {
                return Err(Error::failure(format!(
                    "{} is {}, not a regular file; not pushed",
                    path.display(),
                    opskit::safefs::kind_of(&meta)
                )));
            }
            if meta.len() != f.bytes {
                return Err(Error::failure(format!(
                    "{} is {} bytes, the manifest says {} bytes: it changed since it was verified; not pushed",
                    path.display(),
                    meta.len(),
                    f.bytes
                )));
            }
        }
        Ok(())
    }

    /// What goes up, in order: the files, SHA256SUMS, the signature, and
    /// MANIFEST.json last.
    fn objects(&self) -> Vec<Object<'_>> {
        let mut out: Vec<Object<'_>> = self
            .manifest
            .files
            .iter()
            .map(|f| (f.name.clone(), f.bytes, f.sha256.clone(), None))
            .collect();
        let held = [
            (SUMS, Some(&self.sums)),
            (SET_SIGNATURE, self.signature.as_ref()),
            (MANIFEST, Some(&self.text)),
        ];
        for (name, bytes) in held {
            if let Some(b) = bytes {
                let sha = opskit::gz::sha256_hex(b);
                out.push((name.into(), b.len() as u64, sha, Some(b.as_slice())));
            }
        }
        out
    }
}

/// A small file of a set, read without following a symlink (or blocking
/// on a FIFO), at most `max` bytes.
fn read_small(path: &Path, max: u64) -> Result<Vec<u8>> {
    let f = opskit::safefs::open_nofollow(path, std::fs::OpenOptions::new().read(true))?;
    opskit::safefs::read_bounded(f, path, max).map_err(|e| Error::failure(e.msg))
}

/// Abort the set's unfinished multipart uploads that an interrupted run
/// left (older than `stale`: a younger one may be another push's).
fn abort_stale_uploads(store: &Store, set: &str, stale: std::time::Duration) {
    let prefix = store.remote.key(set, "");
    match store.uploads(&prefix) {
        Ok(ups) => {
            let cutoff = Utc::now() - Days::from_std(stale).unwrap_or(Days::hours(1));
            for u in ups {
                if u.started.is_some_and(|t| t > cutoff) {
                    continue;
                }
                log::warn!(
                    "aborting an unfinished upload of s3://{}/{} left by an interrupted run",
                    store.remote.bucket,
                    u.key
                );
                if let Err(e) = store.abort(&u.key, &u.id) {
                    log::warn!("{}", e.msg);
                }
            }
        }
        Err(e) => log::warn!("{}", e.msg),
    }
}
