//! One file of a set (or of the WAL archive) to one object. The bytes
//! sent are the bytes checked: a small file is read into memory, checked
//! against its size and sha256, then sent; a large one goes up as a
//! multipart upload of bounded parts, hashed as they are read and never
//! completed unless every byte is what the manifest says. An object
//! already there is compared, never overwritten.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use opskit::crypt::HashRead;
use opskit::gz::HashWriter;
use opskit::progress::Progress;
use opskit::{Error, IoContext, Result};
use opskit_s3::{Put, Store};

/// Parts of a multipart upload: at least this big (S3's minimum is 5 MiB).
const MIN_PART: u64 = 8 << 20;
/// Files up to this size go up in one PUT (from memory).
pub(crate) const ONE_PUT: u64 = 8 << 20;

/// One file to one object.
pub(crate) struct Upload<'a> {
    pub store: &'a Store,
    pub key: &'a str,
    /// The local file (read unless `data` is given; named in messages).
    pub path: &'a Path,
    /// The file's bytes, when the caller has them in memory already.
    pub data: Option<&'a [u8]>,
    /// What the manifest says the file is.
    pub size: u64,
    pub sha: &'a str,
    pub lock: Option<&'a str>,
    pub jobs: u8,
    /// Counts the bytes read for sending (and the size of a file already
    /// there).
    pub progress: &'a Progress,
}

impl Upload<'_> {
    /// Upload unless the same content is there; true when uploaded. With
    /// a lock, the object is locked until at least its date however it got
    /// there: uploaded now, by an earlier push (a run killed before it
    /// locked, one without --retain-days), or by another push at once.
    pub fn run(&self) -> Result<bool> {
        let uploaded = self.upload()?;
        if let Some(until) = self.lock {
            self.store.ensure_locked(self.key, until)?;
        }
        Ok(uploaded)
    }

    fn upload(&self) -> Result<bool> {
        if let Some(obj) = self.store.head(self.key)? {
            self.same_as(obj.size, obj.sha256)?;
            self.progress.add(self.size);
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

    /// The bytes read must be the manifest's: else the file changed since
    /// it was verified (or while it was read), and nothing is completed.
    fn check(&self, bytes: u64, sha: &str) -> Result<()> {
        if bytes == self.size && sha == self.sha {
            return Ok(());
        }
        Err(Error::failure(format!(
            "{} changed since it was verified: read {bytes} bytes, sha256 {sha}; the manifest says {} bytes, sha256 {}; not pushed",
            self.path.display(),
            self.size,
            self.sha
        )))
    }

    /// The file's bytes: those given, or the file opened without
    /// following a symlink (reads at most one byte more than its size).
    fn source(&self) -> Result<Box<dyn Read + Send + '_>> {
        Ok(match self.data {
            Some(d) => Box::new(self.progress.reader(d)),
            None => Box::new(
                self.progress.reader(
                    opskit::safefs::open_nofollow(self.path, OpenOptions::new().read(true))?
                        .take(self.size + 1),
                ),
            ),
        })
    }

    /// Read whole, checked, then sent: what goes up is what was checked,
    /// and a body can never be shorter than the length announced.
    fn one_put(&self) -> Result<Put> {
        let mut data = Vec::with_capacity(self.size as usize);
        self.source()?
            .read_to_end(&mut data)
            .at("reading", self.path)?;
        self.check(data.len() as u64, &opskit::gz::sha256_hex(&data))?;
        self.store
            .put(self.key, self.size, self.sha, self.lock, data.as_slice())
    }

    /// Parts of at least 8 MiB, at most 10,000 of them, `jobs` in flight:
    /// memory stays about (jobs + 1) parts whatever the file's size.
    fn multipart(&self) -> Result<Put> {
        let part = MIN_PART.max(self.size.div_ceil(9_000).next_multiple_of(1 << 20));
        let id = self.store.create_multipart(self.key, self.sha, self.lock)?;
        let res = self
            .parts(&id, part as usize)
            .and_then(|etags| self.store.complete(self.key, &id, &etags));
        // An upload that failed, or lost to an object already there, is
        // aborted: its parts are freed.
        if !matches!(res, Ok(Put::Created))
            && let Err(e) = self.store.abort(self.key, &id)
        {
            log::warn!("{}", e.msg);
        }
        res
    }

    /// Read the file part by part, hashing it, while `jobs` threads upload;
    /// the ETags, once every byte read was checked.
    fn parts(&self, id: &str, part: usize) -> Result<Vec<String>> {
        let mut f = self.source()?;
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
        self.check(bytes, &sha)?;
        Ok(etags.into_inner().expect("etags"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store nobody answers for (port 1): the checks below must fail
    /// before anything is sent.
    fn nowhere() -> Store {
        let mut settings =
            opskit_s3::aws::resolve(&|k: &str| k.starts_with("AWS_").then(|| "x".to_string()))
                .unwrap();
        settings.endpoint = Some("http://127.0.0.1:1".into());
        settings.ca_bundle = None;
        let o = opskit_s3::Options {
            settings,
            path_style: true,
            ca: None,
            timeout: std::time::Duration::from_secs(2),
        };
        Store::new(opskit_s3::Remote::parse("s3://backups").unwrap(), o).unwrap()
    }

    /// A file shorter or longer than its manifest entry is refused from
    /// what was read, never sent with a length it does not have.
    #[test]
    fn a_file_of_another_size_is_refused_before_it_is_sent() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let store = nowhere();
        let want = b"0123456789";
        let sha = opskit::gz::sha256_hex(want);
        let up = Upload {
            store: &store,
            key: "set/f",
            path: &path,
            data: None,
            size: want.len() as u64,
            sha: &sha,
            lock: None,
            jobs: 1,
            progress: &Progress::default(),
        };
        for (body, read) in [(&b"01234"[..], 5), (&b"0123456789abc"[..], 11)] {
            std::fs::write(&path, body).unwrap();
            let e = up.one_put().unwrap_err();
            assert!(
                e.msg.contains(&format!("read {read} bytes"))
                    && e.msg.contains("the manifest says 10 bytes"),
                "{}",
                e.msg
            );
            assert!(!e.msg.contains("127.0.0.1"), "sent: {}", e.msg);
        }
        std::os::unix::fs::symlink(d.path().join("elsewhere"), d.path().join("link")).unwrap();
        let link = d.path().join("link");
        let e = Upload { path: &link, ..up }.one_put().unwrap_err();
        assert!(e.msg.contains("symbolic link"), "{}", e.msg);
    }
}
