//! `offsite list`: local and remote sets side by side, newest first, as
//! records or (`--table`) a table for a person at a terminal.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use clap::Args as ClapArgs;
use opskit::backupset::{self, MANIFEST};
use opskit::records::{Location, OffsiteCounts, RemoteSet};
use opskit::{Done, Emitter, Exit, Result, units};
use opskit_s3::sets::remote_sets;

#[derive(Debug, ClapArgs)]
pub struct ListArgs {
    /// s3://BUCKET[/PREFIX] (default: --url, OPSKIT_OFFSITE_URL).
    #[arg(value_name = "URL")]
    pub bucket: Option<String>,

    /// A table on stdout instead of records.
    #[arg(long)]
    pub table: bool,
}

pub fn run(args: &crate::Args, l: &ListArgs, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    let store = args.store(l.bucket.as_deref())?;
    let remote = remote_sets(&store)?;
    let root = args.root.as_deref();
    let verdicts = match root {
        Some(r) => opskit::verdicts::VerdictLog::local(r).passed()?,
        None => Default::default(),
    };
    let remote_ok = crate::verify::remote_verdicts(root);
    let local = root.map(local_sets).unwrap_or_default();
    let broken = broken_chains(&store, &remote);
    let names: BTreeSet<&String> = remote.keys().chain(local.keys()).collect();
    let mut rows: Vec<RemoteSet> = names
        .into_iter()
        .map(|n| {
            let r = remote.get(n);
            let m = local.get(n);
            let location = match (m.is_some(), r.is_some()) {
                (true, true) => Location::Both,
                (true, false) => Location::Local,
                _ => Location::Remote,
            };
            let files = r.map(|r| &r.sizes);
            let missing_links = broken.get(n).cloned().unwrap_or_default();
            RemoteSet {
                set: n.clone(),
                location,
                created_at: backupset::parse_set_dir_name(n).map(|(_, t)| t),
                bytes: m.map(|m| m.0).or_else(|| {
                    files.map(|f| {
                        f.iter()
                            .filter(|(k, _)| *k != MANIFEST && *k != backupset::SUMS)
                            .map(|(_, v)| v)
                            .sum()
                    })
                }),
                encrypted: m
                    .map(|m| m.1)
                    .or_else(|| files.map(|f| f.keys().any(|k| k.ends_with(opskit::crypt::EXT)))),
                complete: r.map(|r| r.complete && missing_links.is_empty()),
                missing_links,
                verified: verdicts.get(n).copied(),
                remote_verified: remote_ok.get(n).copied(),
                url: r.map(|_| store.remote.url(&format!("{n}/"))),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.set.cmp(&a.set)));
    let counts = OffsiteCounts {
        sets: rows.len() as u64,
        done: rows.iter().filter(|r| r.complete == Some(true)).count() as u64,
        failed: 0,
        bytes: 0,
    };
    if l.table {
        print!("{}", table(&rows));
        em.mute();
    } else {
        for r in &rows {
            em.emit(r)?;
        }
    }
    Ok(Done::new(Exit::Ok, counts))
}

/// The remote incremental sets whose chain lacks a set that is whole in
/// the bucket, with the sets they lack. Only base sets (those with a
/// `backup_manifest`) can be incremental: their manifests are read, one
/// small download each. A manifest that cannot be read is left to
/// `offsite verify`.
fn broken_chains(
    store: &opskit_s3::Store,
    remote: &opskit_s3::sets::RemoteSets,
) -> HashMap<String, Vec<String>> {
    let whole = |n: &String| remote.get(n).is_some_and(|r| r.complete);
    remote
        .iter()
        .filter(|(_, r)| r.complete && r.sizes.contains_key(opskit::physical::BACKUP_MANIFEST))
        .filter_map(|(n, _)| {
            let m = crate::remote::manifest(store, n).ok()?;
            let missing: Vec<String> = opskit::chain::needs(&m)
                .into_iter()
                .filter(|a| !whole(a))
                .collect();
            (!missing.is_empty()).then(|| (n.clone(), missing))
        })
        .collect()
}

/// The sets of a local root: total bytes and whether encrypted.
fn local_sets(root: &Path) -> HashMap<String, (u64, bool)> {
    let mut out = HashMap::new();
    for s in opskit::root::sets(root).unwrap_or_default() {
        if let Ok(m) = s.manifest() {
            let bytes = m.bytes();
            out.insert(s.name, (bytes, m.encryption.is_some()));
        }
    }
    out
}

fn table(rows: &[RemoteSet]) -> String {
    let yn = |b: Option<bool>, yes: &str, no: &str| match b {
        Some(true) => yes.to_string(),
        Some(false) => no.to_string(),
        None => "-".to_string(),
    };
    let mut out = format!(
        "{:<40} {:<20} {:>10} {:<9} {:<6} {:<10} {:<10}\n",
        "set", "time (UTC)", "size", "encrypted", "where", "verified", "remote"
    );
    for r in rows {
        let remote = match (r.complete, r.remote_verified) {
            (Some(false), _) if !r.missing_links.is_empty() => "NO CHAIN".to_string(),
            (Some(false), _) => "INCOMPLETE".to_string(),
            (Some(true), v) => yn(v, "verified", "DAMAGED").replace('-', "copied"),
            (None, _) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<40} {:<20} {:>10} {:<9} {:<6} {:<10} {:<10}\n",
            r.set,
            r.created_at
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            r.bytes.map(units::format_size).unwrap_or_default(),
            yn(r.encrypted, "yes", "NO"),
            match r.location {
                Location::Local => "local",
                Location::Remote => "remote",
                Location::Both => "both",
            },
            yn(r.verified, "passed", "FAILED"),
            remote
        ));
    }
    out.push_str(&format!("{} sets\n", rows.len()));
    out
}
