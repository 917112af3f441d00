//! `offsite push`: upload each set that passed verification, its files
//! first, SHA256SUMS next, MANIFEST.json last. Large files go up as
//! multipart uploads of bounded parts, several at once; every object
//! carries its sha256, the bytes sent are hashed again on the way and
//! compared with the manifest. An object already there is compared, never
//! overwritten.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{Duration as Days, Utc};
use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST, SUMS};
use opskit::crypt::HashRead;
use opskit::gz::HashWriter;
use opskit::reader::{self, Line, LineError};
use opskit::record::Fields;
use opskit::records::{Backup, ErrorRecord, OffsiteCounts, Push, Verify};
use opskit::{Done, Emitter, Error, Exit, IoContext, Result, units};

use crate::s3::{Put, Store};

/// Parts of a multipart upload: at least this big (S3's minimum is 5 MiB).
const MIN_PART: u64 = 8 << 20;
/// Files up to this size go up in one PUT.
const ONE_PUT: u64 = 8 << 20;

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
    /// bucket must have Object Lock enabled).
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
    let (url, sets) = match p.targets.first() {
        Some(u) if u.starts_with("s3://") => (Some(u.as_str()), &p.targets[1..]),
        _ => (None, &p.targets[..]),
    };
    let store = args.store(url)?;
    let lock = p.retain_days.map(|d| {
        (Utc::now() + Days::days(i64::from(d)))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    });
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
    let mut rd = reader::open(None)?;
    let mut jobs = Vec::new();
    for item in rd.by_ref() {
        let job = item.map_err(Upstream::Bad).and_then(|line| job_of(&line));
        match job {
            Ok(Some(j)) => jobs.push(j),
            Ok(None) => {}
            Err(Upstream::Failed(rec)) => {
                *exit = exit.worst(Exit::Failure);
                em.emit(rec.as_ref())?;
            }
            Err(Upstream::Bad(e)) => {
                *exit = exit.worst(Exit::Failure);
                em.emit(&ErrorRecord::new(e.to_string()).line(e.line, None))?;
            }
        }
    }
    match rd.take_io_error() {
        Some(e) => Err(e),
        None => Ok(jobs),
    }
}

enum Upstream {
    Failed(Box<ErrorRecord>),
    Bad(LineError),
}

impl From<LineError> for Upstream {
    fn from(e: LineError) -> Self {
        Upstream::Bad(e)
    }
}

fn job_of(line: &Line) -> std::result::Result<Option<Job>, Upstream> {
    let job = |path: String, verified| {
        Some(Job {
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
        "error" => return Err(Upstream::Failed(Box::new(line.parse::<ErrorRecord>()?))),
        _ => None,
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
    let verified = match job.verified {
        Some(v) => v,
        None => {
            let root = set.parent().unwrap_or(Path::new("."));
            backupset::latest_verdicts(root)?
                .get(&rec.set)
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
    let (m, manifest_sha) = backupset::read_manifest(set).map_err(|e| Error::failure(e.msg))?;
    rec.encrypted = m.encryption.is_some();
    if !rec.encrypted && !p.allow_unencrypted {
        return Err(Error::failure(format!(
            "{} is not encrypted: pushed, it would be readable by whoever reads the bucket; encrypt new sets (pgbackup --encrypt-to) or pass --allow-unencrypted",
            set.display()
        )));
    }
    abort_stale_uploads(store, &rec.set, p.stale_after);
    let sums = std::fs::read(set.join(SUMS)).at("reading", &set.join(SUMS))?;
    let mut files: Vec<(String, u64, String)> = m
        .files
        .iter()
        .map(|f| (f.name.clone(), f.bytes, f.sha256.clone()))
        .collect();
    files.push((
        SUMS.into(),
        sums.len() as u64,
        opskit::gz::sha256_hex(&sums),
    ));
    let manifest_len = std::fs::metadata(set.join(MANIFEST))
        .at("reading", &set.join(MANIFEST))?
        .len();
    files.push((MANIFEST.into(), manifest_len, manifest_sha));
    for (name, size, sha) in files {
        let key = store.remote.key(&rec.set, &name);
        let up = Upload {
            store,
            key: &key,
            path: &set.join(&name),
            size,
            sha: &sha,
            lock,
            jobs: p.jobs,
        };
        if up.run()? {
            rec.uploaded += 1;
            rec.bytes += size;
        } else {
            rec.skipped += 1;
        }
    }
    Ok(())
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

/// One file to one object.
pub(crate) struct Upload<'a> {
    pub store: &'a Store,
    pub key: &'a str,
    pub path: &'a Path,
    pub size: u64,
    pub sha: &'a str,
    pub lock: Option<&'a str>,
    pub jobs: u8,
}

impl Upload<'_> {
    /// Upload unless the same content is there; true when uploaded.
    pub fn run(&self) -> Result<bool> {
        if let Some(obj) = self.store.head(self.key)? {
            self.same_as(obj.size, obj.sha256)?;
            return Ok(false);
        }
        let put = if self.size <= ONE_PUT {
            self.one_put()?
        } else {
            self.multipart()?
        };
        match put {
            Put::Created => Ok(true),
            // Another push got there first: fine if it is the same.
            Put::Exists => {
                let obj = self.store.head(self.key)?.ok_or_else(|| {
                    Error::failure(format!(
                        "{}: the server said it exists, then that it does not",
                        self.url()
                    ))
                })?;
                self.same_as(obj.size, obj.sha256)?;
                Ok(false)
            }
        }
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.store.remote.bucket, self.key)
    }

    /// An object already there must have this file's size and sha256
    /// (from its metadata, or read back when another tool wrote it).
    fn same_as(&self, size: u64, sha: Option<String>) -> Result<()> {
        let sha = match sha {
            Some(s) => s,
            None if size == self.size => {
                let (_, body) = self.store.get(self.key)?;
                let read = HashRead::new(body)
                    .finish()
                    .map_err(|e| Error::failure(format!("reading back {}: {e}", self.url())))?;
                read.sha256
            }
            None => String::from("(not known)"),
        };
        if size == self.size && sha == self.sha {
            return Ok(());
        }
        Err(Error::failure(format!(
            "{} exists with other content ({size} bytes, sha256 {sha}; this set's file: {} bytes, sha256 {}); it is not overwritten",
            self.url(),
            self.size,
            self.sha
        )))
    }

    /// A local file that no longer is what the manifest says.
    fn changed(&self, found: &str) -> Error {
        Error::failure(format!(
            "{} changed since it was verified (sha256 {found}, the manifest says {}); not pushed",
            self.path.display(),
            self.sha
        ))
    }

    fn one_put(&self) -> Result<Put> {
        let f = File::open(self.path).at("reading", self.path)?;
        let mut body = HashRead::new(f.take(self.size));
        let put = self
            .store
            .put(self.key, self.size, self.sha, self.lock, &mut body)?;
        let sent = body.finish().at("reading", self.path)?;
        if sent.sha256 != self.sha || sent.bytes != self.size {
            if put == Put::Created {
                let _ = self.store.delete(self.key);
            }
            return Err(self.changed(&sent.sha256));
        }
        Ok(put)
    }

    /// Parts of at least 8 MiB, at most 10,000 of them, `jobs` in flight:
    /// memory stays about (jobs + 1) parts whatever the file's size.
    fn multipart(&self) -> Result<Put> {
        let part = MIN_PART.max(self.size.div_ceil(9_000).next_multiple_of(1 << 20));
        let id = self.store.create_multipart(self.key, self.sha, self.lock)?;
        let res = self
            .parts(&id, part as usize)
            .and_then(|etags| self.store.complete(self.key, &id, &etags));
        if res.is_err()
            && let Err(e) = self.store.abort(self.key, &id)
        {
            log::warn!("{}", e.msg);
        }
        res
    }

    /// Read the file part by part, hashing it, while `jobs` threads upload.
    fn parts(&self, id: &str, part: usize) -> Result<Vec<String>> {
        let mut f = File::open(self.path).at("reading", self.path)?;
        let (tx, rx) = sync_channel::<(u16, Vec<u8>)>(0);
        let rx = Arc::new(Mutex::new(rx));
        let etags: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let mut hasher = HashWriter::new(io::sink());
        let mut read_err = None;
        std::thread::scope(|s| {
            for _ in 0..self.jobs {
                let rx = Arc::clone(&rx);
                let (etags, failed) = (&etags, &failed);
                s.spawn(move || {
                    loop {
                        let next = rx.lock().expect("parts channel").recv();
                        let Ok((n, buf)) = next else { break };
                        match self.store.upload_part(self.key, id, n, &buf) {
                            Ok(etag) => {
                                let mut e = etags.lock().expect("etags");
                                if e.len() < n as usize {
                                    e.resize(n as usize, String::new());
                                }
                                e[n as usize - 1] = etag;
                            }
                            Err(err) => {
                                failed.lock().expect("failed").get_or_insert(err);
                                break;
                            }
                        }
                    }
                });
            }
            // Only the workers hold the receiver: when they have all
            // stopped (an upload failed), sending fails instead of waiting.
            drop(rx);
            let mut n: u16 = 0;
            loop {
                if failed.lock().expect("failed").is_some() {
                    break;
                }
                let mut buf = Vec::with_capacity(part);
                match (&mut f).take(part as u64).read_to_end(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        read_err = Some(e);
                        break;
                    }
                }
                let _ = hasher.write_all(&buf);
                n += 1;
                if tx.send((n, buf)).is_err() {
                    break;
                }
            }
            drop(tx);
        });
        if let Some(e) = failed.into_inner().expect("failed") {
            return Err(e);
        }
        if let Some(e) = read_err {
            return Err(Error::io("reading", self.path, &e));
        }
        let (_, bytes, sha) = hasher.finish();
        if sha != self.sha || bytes != self.size {
            return Err(self.changed(&sha));
        }
        Ok(etags.into_inner().expect("etags"))
    }
}
