//! `offsite window`: the points in time the bucket recovers to, beside the
//! backup root's (`opskit::window` computes both): what is left if the
//! server and its disks are gone.
//!
//! The bucket's sets come from one listing; each complete set's
//! MANIFEST.json is one small download. Its WAL archive (`PREFIX/wal/`,
//! copied by `offsite push-wal`) comes from one listing too; only the
//! checksum files of its newest segments are downloaded, where the last
//! archived transaction is recorded. A set a remote verification failed is
//! left out; the others were verified before they were pushed.
//!
//! The bucket is writable by whoever holds its keys, and those keys live
//! on the server: every manifest and checksum file read here must carry a
//! trusted signature (`OPSKIT_SIGNING_PUBKEYS`), or a forged one could
//! show a window the bucket cannot give (a set that is gone, a last
//! transaction in 2099). A manifest that fails leaves its set out; a
//! checksum file that fails ends the window's look back: its end is then
//! not known, and a warning names it.

use clap::Args as ClapArgs;
use opskit::cli::TrustArgs;
use opskit::records::{OffsiteCounts, RecoveryWindow};
use opskit::sidecar::Sidecar;
use opskit::sign::Trust;
use opskit::walstore;
use opskit::window::{SetView, WalSource};
use opskit::{Done, Emitter, Exit, Result};
use opskit_s3::Store;
use opskit_s3::sets::remote_sets;

#[derive(Debug, ClapArgs)]
pub struct WindowArgs {
    /// s3://BUCKET[/PREFIX] (default: --url, OPSKIT_OFFSITE_URL).
    #[arg(value_name = "URL")]
    pub bucket: Option<String>,

    /// Lines for a person instead of records.
    #[arg(long)]
    pub table: bool,

    #[command(flatten)]
    pub trust: TrustArgs,
}

/// The bucket's WAL archive: `PREFIX/wal/<timeline>/<name>.sha256`.
struct RemoteWal<'a> {
    store: &'a Store,
    names: Vec<String>,
    trust: &'a Trust,
}

impl<'a> RemoteWal<'a> {
    fn list(store: &'a Store, trust: &'a Trust) -> Result<RemoteWal<'a>> {
        let prefix = store.remote.key(walstore::WAL_DIR, "");
        let (objects, _) = store.list(&prefix, None)?;
        let mut names: Vec<String> = objects
            .iter()
            .filter_map(|o| {
                let (_, file) = o.key.strip_prefix(&prefix)?.split_once('/')?;
                let name = file.strip_suffix(walstore::SIDECAR)?;
                walstore::valid_name(name).then(|| name.to_string())
            })
            .collect();
        names.sort();
        Ok(RemoteWal {
            store,
            names,
            trust,
        })
    }
}

impl WalSource for RemoteWal<'_> {
    fn names(&self) -> Result<Vec<String>> {
        Ok(self.names.clone())
    }

    fn sidecar(&self, name: &str) -> Result<Option<Sidecar>> {
        let key = self.store.remote.key(
            walstore::WAL_DIR,
            &format!("{}/{}", &name[..8], walstore::sidecar_name(name)),
        );
        let text = crate::remote::download_small(self.store, &key, opskit::sidecar::MAX_SIDECAR)?;
        let origin = std::path::PathBuf::from(self.store.remote.url(&key));
        let side = Sidecar::parse(&String::from_utf8_lossy(&text), &origin)?;
        side.check(name, self.trust)
            .map_err(|e| opskit::Error::check(format!("{}: {e}", origin.display())))?;
        Ok(Some(side))
    }
}

/// The bucket's window, from what `trust` accepts.
pub fn remote(
    store: &Store,
    root: Option<&std::path::Path>,
    trust: &Trust,
) -> Result<RecoveryWindow> {
    let verdicts = crate::verify::remote_verdicts(root);
    let mut sets = Vec::new();
    for (name, info) in remote_sets(store)? {
        if !info.complete {
            continue;
        }
        match crate::remote::load(store, &name, &info, trust) {
            Ok(signed) => sets.push(SetView {
                verified: Some(verdicts.get(&name).copied().unwrap_or(true)),
                name,
                manifest: signed.manifest,
            }),
            Err(e) => log::warn!("{name}: {}; left out of the window", e.msg),
        }
    }
    let mut w = opskit::window::compute(&sets, &RemoteWal::list(store, trust)?)?;
    w.location = "remote".into();
    w.at = store.remote.url("");
    Ok(w)
}

pub fn run(args: &crate::Args, a: &WindowArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let trust = a.trust.trust()?;
    let store = args.store(a.bucket.as_deref())?;
    let root = args.root.as_deref();
    let mut windows = Vec::new();
    if let Some(r) = root {
        windows.push(opskit::window::local(r)?);
    }
    windows.push(remote(&store, root, &trust)?);
    if a.table {
        for w in &windows {
            print!("{}", opskit::window::table(w));
        }
        em.mute();
    } else {
        for w in &windows {
            em.emit(w)?;
        }
    }
    let sets = windows.iter().map(|w| w.base_sets + w.dump_sets).sum();
    Ok(Done::new(
        Exit::Ok,
        OffsiteCounts {
            sets,
            done: sets,
            failed: 0,
            bytes: 0,
        },
    ))
}
