//! `offsite pull`: a remote set back into a local root, through the same
//! staging and rename as pgbackup. Its signature is checked before
//! anything in its manifest is used ([`crate::remote::load`]); a set that
//! fails leaves nothing in the root.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST, SUMS};
use opskit::cli::TrustArgs;
use opskit::durable::{self, StagingDir, WritebackFile};
use opskit::gz::HashWriter;
use opskit::progress::Progress;
use opskit::records::{OffsiteCounts, Pull, SetKind};
use opskit::sign::SET_SIGNATURE;
use opskit::{Done, Emitter, Error, Exit, IoContext, Result};
use opskit_s3::Store;
use opskit_s3::sets::{RemoteSets, remote_sets};

use crate::remote::{self, Signed, check_sums, download_small};

#[derive(Debug, ClapArgs)]
pub struct PullArgs {
    /// [s3://BUCKET[/PREFIX]] then the remote set's name, or `latest`:
    /// the newest complete remote set whose signed manifest passes.
    #[arg(value_name = "[URL] SET", num_args = 1..=2, required = true)]
    pub operands: Vec<String>,

    /// With `latest`: the newest set of this kind (`dump`: what
    /// restore-system.sh restores; `base`: a base set for walarchive
    /// restore). The candidates' signed manifests are read newest first;
    /// one that fails its checks (unsigned, a key not trusted, dated in
    /// the future) is passed over with a warning naming it: anyone with
    /// the bucket's keys can upload a manifest, and one that stopped the
    /// pull would stop every recovery from the bucket.
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Option<SetKind>,

    /// With `latest`: only sets of this series, the name before the set's
    /// time (pgbackup --name; by default the database's name). A prefix
    /// may hold several series: without it, another database's newer set
    /// would be taken.
    #[arg(long, value_name = "NAME")]
    pub series: Option<String>,

    /// The local backup root to put it in (default: --root or OPSKIT_BACKUP_ROOT).
    #[arg(long, value_name = "DIR")]
    pub dest: Option<PathBuf>,

    #[command(flatten)]
    pub trust: TrustArgs,
}

pub fn pull(args: &crate::Args, p: &PullArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let start = Instant::now();
    let trust = p.trust.trust()?;
    let dest = p
        .dest
        .clone()
        .or_else(|| args.root.clone())
        .ok_or_else(|| {
            Error::usage("no destination: give --dest ROOT or set OPSKIT_BACKUP_ROOT")
        })?;
    let (url, set) = match crate::operands(&p.operands)? {
        (url, [set]) => (url, set.as_str()),
        _ => {
            return Err(Error::usage(
                "pull takes one set name or 'latest' (after an optional s3://BUCKET[/PREFIX])",
            ));
        }
    };
    let store = args.store(url)?;
    let sets = remote_sets(&store)?;
    // Checked before anything is written locally.
    if set != "latest" && p.series.is_some() {
        return Err(Error::usage(
            "--series goes with `latest`, not a set's name",
        ));
    }
    // Named as pgbackup names sets (`my app` is series `my_app`).
    let series = p
        .series
        .as_deref()
        .map(|s| opskit::backupset::sanitize_name(s, "db"));
    let series = series.as_deref();
    let (name, signed) = match (set, p.kind) {
        ("latest", kind) => latest_of(&store, &sets, kind, series, &trust)?,
        (_, Some(_)) => return Err(Error::usage("--kind goes with `latest`, not a set's name")),
        (want, None) => {
            let name = named(&sets, want, &store)?;
            let signed = remote::load(&store, &name, &sets[&name], &trust)?;
            (name, signed)
        }
    };
    // An incremental base set comes with its chain: every ancestor not
    // already in the root, checked as the set is, before anything is
    // written; a link missing from the bucket stops the pull.
    let mut todo = Vec::new();
    for anc in opskit::chain::needs(&signed.manifest) {
        if dest.join(&anc).exists() {
            continue;
        }
        let Some(info) = sets.get(&anc).filter(|i| i.complete) else {
            return Err(Error::failure(format!(
                "{}: its chain's set {anc} is not complete in {}: the chain cannot be restored; nothing was pulled",
                name,
                store.remote.url("")
            )));
        };
        todo.push((anc.clone(), remote::load(&store, &anc, info, &trust)?));
    }
    todo.push((name, signed));
    // The set is staged in dest by path: nobody else may rename or
    // replace what is there, nor anything on the way to it (checked before
    // anything is made, and once dest is there).
    let private = |dir: &Path| {
        opskit::safefs::check_path_private(dir).map_err(|e| {
            // The advice that applies: the owner's own run is refused only
            // for a directory on the way that others can write.
            let mine = dir
                .metadata()
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == opskit::sys::euid());
            Error::usage(format!(
                "not pulling into {}: {}; {}",
                dest.display(),
                e.msg,
                if mine {
                    "every directory on the way to it must be root's or this user's, and writable by its owner only (or sticky)"
                } else {
                    "run offsite pull as the root's owner (sudo -u OWNER offsite pull …)"
                }
            ))
        })
    };
    if !dest.exists() {
        let made = dest.ancestors().skip(1).find(|a| a.exists());
        private(
            made.filter(|a| !a.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dest)
            .at("creating backup root", &dest)?;
    }
    private(&dest)?;
    let mut counts = OffsiteCounts {
        sets: todo.len() as u64,
        done: 0,
        failed: 0,
        bytes: 0,
    };
    for (name, signed) in todo {
        if signed.signature.is_none() {
            log::warn!("{name}: {}", signed.note);
        } else {
            log::info!("{name}: {}", signed.note);
        }
        let one = Instant::now();
        let stage = StagingDir::create(&dest.join(&name), 0o700)?;
        let bytes = fill(&store, &name, &signed, stage.path())?;
        let path = stage.commit()?;
        log::info!("pulled {} into {}", name, path.display());
        em.emit(&Pull {
            ok: true,
            url: store.remote.url(&format!("{name}/")),
            set: name,
            path: path.display().to_string(),
            bytes,
            duration_s: opskit::record::secs(one.elapsed()),
        })?;
        counts.done += 1;
        counts.bytes += bytes;
    }
    log::info!(
        "pulled {} set(s) in {:.1}s",
        counts.done,
        start.elapsed().as_secs_f64()
    );
    Ok(Done::new(Exit::Ok, counts))
}

/// Write the checked manifest and its signature into the staging
/// directory, then download every file it lists and SHA256SUMS; the
/// bytes written.
fn fill(store: &Store, name: &str, signed: &Signed, dir: &Path) -> Result<u64> {
    write_new(&dir.join(MANIFEST), &signed.bytes)?;
    if let Some(sig) = &signed.signature {
        write_new(&dir.join(SET_SIGNATURE), sig)?;
    }
    let mut bytes = signed.bytes.len() as u64;
    let total = signed.manifest.bytes();
    let progress = Progress::start(format!("pulling {name}"), Some(total));
    for f in &signed.manifest.files {
        let body = Object {
            set: name,
            name: &f.name,
            size: f.bytes,
            sha: &f.sha256,
        };
        bytes += download_file(store, &body, dir, &progress)?;
    }
    progress.finish();
    let sums = download_small(
        store,
        &store.remote.key(name, SUMS),
        backupset::MAX_MANIFEST,
    )?;
    check_sums(&signed.manifest, &signed.sha256, &sums).map_err(|why| {
        Error::failure(format!(
            "{}: {why}",
            store.remote.url(&format!("{name}/{SUMS}"))
        ))
    })?;
    write_new(&dir.join(SUMS), &sums)?;
    Ok(bytes)
}

/// A new file (0600) with these bytes, fsynced.
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = durable::create_new(path, 0o600)?;
    f.write_all(bytes).at("writing", path)?;
    durable::sync_file(&f, path)
}

/// The newest complete remote set (of `kind`, of `series`) whose manifest
/// passes its checks: the sets are read newest first (by time, then name,
/// as `opskit_s3::sets::newest` orders them). One that fails (unsigned, a key not trusted,
/// dated in the future: anyone with the bucket's keys can upload a
/// manifest) is passed over with a warning naming it, so a forged set
/// never stands between the operator and the newest real one; a manifest
/// that cannot be downloaded stops the pull.
fn latest_of(
    store: &Store,
    sets: &RemoteSets,
    kind: Option<SetKind>,
    series: Option<&str>,
    trust: &opskit::sign::Trust,
) -> Result<(String, Signed)> {
    let mut complete: Vec<(&String, &opskit_s3::sets::RemoteInfo)> = sets
        .iter()
        .filter(|(n, s)| s.complete && of_series(n, series))
        .collect();
    complete.sort_by(|(a, x), (b, y)| y.time.cmp(&x.time).then_with(|| b.cmp(a)));
    let mut failed: Vec<String> = Vec::new();
    for (name, info) in complete {
        // A download that fails stops the pull (the newest set may be
        // whole); a set that fails its checks is passed over.
        let signed =
            match remote::fetch(store, name, info).and_then(|f| f.check(store, name, trust)) {
                Ok(s) => s,
                Err(e) if e.exit == opskit::Exit::CheckFailed => {
                    failed.push(e.msg);
                    continue;
                }
                Err(e) => return Err(e),
            };
        if kind.is_none_or(|k| signed.manifest.is_of(k)) {
            for why in &failed {
                log::warn!("passed over a newer set: {why}");
            }
            return Ok((name.clone(), signed));
        }
        log::debug!("{name} is not a {kind:?} set");
    }
    let what = format!(
        "{}set{} under {}",
        match kind {
            Some(SetKind::Dump) => "dump ",
            Some(SetKind::Base) => "base ",
            None => "",
        },
        series.map(|s| format!(" of {s}")).unwrap_or_default(),
        store.remote.url("")
    );
    Err(match failed.first() {
        None => Error::failure(format!("no complete {what}")),
        Some(newest) => Error::check(format!(
            "no complete {what} passed its checks ({} failed); the newest: {newest}",
            failed.len()
        )),
    })
}

/// Whether the set `name` is of `series` (any, when None).
fn of_series(name: &str, series: Option<&str>) -> bool {
    series.is_none_or(|want| {
        opskit::backupset::parse_set_dir_name(name).is_some_and(|(s, _)| s == want)
    })
}

/// The complete remote set named `want`.
fn named(sets: &RemoteSets, want: &str, store: &Store) -> Result<String> {
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

/// One file of a remote set, as its manifest lists it.
struct Object<'a> {
    set: &'a str,
    name: &'a str,
    size: u64,
    sha: &'a str,
}

/// Stream one object into `dir/name` (0600, fsynced), hashing it; its
/// size and sha256 must be the manifest's.
fn download_file(store: &Store, o: &Object, dir: &Path, progress: &Progress) -> Result<u64> {
    let key = store.remote.key(o.set, o.name);
    let url = format!("s3://{}/{key}", store.remote.bucket);
    let (_, body) = store.get(&key)?;
    let path = dir.join(o.name);
    let file = durable::create_new(&path, 0o600)?;
    let mut out = HashWriter::new(WritebackFile::new(file));
    copy_at_most(progress.reader(body), &mut out, o.size, &url, &path)?;
    let (file, bytes, got) = out.finish();
    if bytes != o.size || got != o.sha {
        return Err(Error::failure(format!(
            "{url} is damaged: {bytes} bytes, sha256 {got}; its manifest says {} bytes, sha256 {}",
            o.size, o.sha
        )));
    }
    durable::sync_file(&file.into_inner(), &path)?;
    Ok(bytes)
}

/// Copy the object at `url` into `out` (the file `path`), reading at most
/// one byte more than the `size` its manifest says: a forged object, or
/// one that inflates as it is decoded, is refused as soon as that byte
/// arrives, before it fills the disk. The bytes copied.
fn copy_at_most(
    body: impl io::Read,
    out: &mut impl Write,
    size: u64,
    url: &str,
    path: &Path,
) -> Result<u64> {
    let mut body = body.take(size.saturating_add(1));
    let n = io::copy(&mut body, out).map_err(|e| match e.kind() {
        io::ErrorKind::StorageFull
        | io::ErrorKind::FileTooLarge
        | io::ErrorKind::PermissionDenied => Error::io("writing", path, &e),
        _ => Error::failure(format!("downloading {url}: {e}")),
    })?;
    if n > size {
        return Err(Error::failure(format!(
            "{url} is damaged: more than the {size} bytes its manifest says ({n} bytes read before the download was stopped)"
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An object larger than its manifest says (forged, or inflating as it
    /// is decoded) is cut off one byte past that size, naming it and both
    /// sizes: the disk does not fill before the sizes are compared.
    #[test]
    fn a_download_stops_one_byte_past_the_manifest_size() {
        let url = "s3://b/app-20261123T030005Z/db.dump.gz";
        let path = Path::new("/x/db.dump.gz");
        let mut out = Vec::new();
        let mut endless = io::repeat(7).take(64 << 20);
        let e = copy_at_most(&mut endless, &mut out, 1000, url, path).unwrap_err();
        assert_eq!(out.len(), 1001);
        assert_eq!(endless.limit(), (64 << 20) - 1001, "read on past the limit");
        assert!(
            e.msg.contains(url) && e.msg.contains("1000 bytes"),
            "{}",
            e.msg
        );
        assert_eq!(e.exit, Exit::Failure);
        for len in [0, 999, 1000] {
            let mut out = Vec::new();
            let n = copy_at_most(&mut io::repeat(7).take(len), &mut out, 1000, url, path);
            assert_eq!((n.unwrap(), out.len() as u64), (len, len));
        }
    }
}
