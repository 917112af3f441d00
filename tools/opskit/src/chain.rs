//! Chains of base sets: an incremental set (`pgbackup --physical
//! --incremental`, PostgreSQL 17+) holds only what changed since its
//! parent, so restoring it needs every ancestor back to a full set, put
//! together by the real `pg_combinebackup`. Verification, restores and
//! retention all ask this module what a set's chain is.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::backupset::{self, Manifest};
use crate::crypt::Identities;
use crate::pgtools::{self, PgTool};
use crate::sign::Trust;
use crate::{Error, Result, physical};

/// One set of a chain.
pub struct Link {
    pub path: PathBuf,
    pub manifest: Manifest,
}

/// The chain of the base set `set` (its manifest `m`, already trusted),
/// the full set first and `set` last: every ancestor its manifest names,
/// in the same root, signed (`trust`), a base set of the same cluster and
/// timeline, the one recorded (the same WAL range), each starting where
/// or after the one before ended. The error names the first link wrong.
pub fn resolve(set: &Path, m: &Manifest, trust: &Trust) -> std::result::Result<Vec<Link>, String> {
    let info = m
        .physical
        .as_ref()
        .ok_or_else(|| format!("{} is not a base set", set.display()))?;
    let mut links = Vec::new();
    let Some(inc) = &info.incremental else {
        links.push(Link {
            path: set.to_path_buf(),
            manifest: m.clone(),
        });
        return Ok(links);
    };
    let root = set.parent().unwrap_or(Path::new("."));
    if inc.chain.last().map(|l| l.set.as_str()) != Some(inc.parent.as_str()) {
        return Err(format!(
            "{}: its manifest's chain does not end at its parent {}",
            m.set, inc.parent
        ));
    }
    let mut previous_end = None;
    for (i, want) in inc.chain.iter().enumerate() {
        let what = if want.set == inc.parent {
            "its parent"
        } else {
            "its ancestor"
        };
        if !backupset::valid_name(&want.set) {
            return Err(format!(
                "{}: {what} '{}' is not a set name",
                m.set, want.set
            ));
        }
        let path = root.join(&want.set);
        if !path.exists() {
            return Err(format!(
                "{}: {what} {} is missing from {}: the incremental set cannot be restored without it",
                m.set,
                want.set,
                root.display()
            ));
        }
        let am = backupset::load_trusted(&path, trust)
            .map_err(|e| format!("{}: {what} {}: {}", m.set, want.set, e.msg))?
            .manifest;
        let Some(a) = am.physical.as_ref() else {
            return Err(format!("{}: {what} {} is not a base set", m.set, want.set));
        };
        let expected_parent = i.checked_sub(1).map(|p| inc.chain[p].set.as_str());
        if a.system_identifier != info.system_identifier
            || a.link(&want.set) != *want
            || a.parent() != expected_parent
        {
            return Err(format!(
                "{}: {what} {} is not the set its chain records (another cluster, WAL range or parent)",
                m.set, want.set
            ));
        }
        links.push(Link { path, manifest: am });
        check_order(&m.set, &want.set, previous_end, &want.start_lsn)?;
        previous_end = physical::parse_lsn(&want.end_lsn);
    }
    check_order(&m.set, &m.set, previous_end, &info.start_lsn)?;
    if links
        .iter()
        .any(|l| l.manifest.physical.as_ref().map(|p| p.timeline) != Some(info.timeline))
    {
        return Err(format!(
            "{}: its chain spans timelines; a chain stays on one",
            m.set
        ));
    }
    links.push(Link {
        path: set.to_path_buf(),
        manifest: m.clone(),
    });
    Ok(links)
}

fn check_order(
    set: &str,
    link: &str,
    previous_end: Option<u64>,
    start: &str,
) -> std::result::Result<(), String> {
    match (previous_end, physical::parse_lsn(start)) {
        (Some(end), Some(s)) if s < end => Err(format!(
            "{set}: {link} starts at {start}, before the set it builds on ended"
        )),
        (_, None) => Err(format!("{set}: {link}'s start {start} is not an LSN")),
        _ => Ok(()),
    }
}

/// The sets a set cannot be restored without, as its manifest names them
/// (none for a dump or a full base set): what retention keeps with it.
pub fn needs(m: &Manifest) -> Vec<String> {
    m.physical
        .as_ref()
        .and_then(|p| p.incremental.as_ref())
        .map(|i| i.chain.iter().map(|l| l.set.clone()).collect())
        .unwrap_or_default()
}

/// The sets' names, full set first.
pub fn names(chain: &[Link]) -> Vec<String> {
    chain.iter().map(|l| l.manifest.set.clone()).collect()
}

/// Why [`materialize`] failed: the sets could not be unpacked or
/// combined, or the real `pg_verifybackup` refused what was unpacked.
pub enum Failed {
    Unpack(Error),
    Verify(String),
}

impl From<Error> for Failed {
    fn from(e: Error) -> Failed {
        Failed::Unpack(e)
    }
}

/// The data directory `dest` (which must not exist) made from `chain`,
/// each set's files proven as they come:
/// - a full set is unpacked (its sha256 checked as it streams) and
///   `pg_verifybackup` (`verify`, the set's own) checks it against the
///   server's `backup_manifest` and parses its WAL;
/// - a chain is unpacked beside `dest` (the full set on a thread of its
///   own), each set passed by `pg_verifybackup`, then combined by the
///   set's own `pg_combinebackup`, with hard links on 18 and later so that
///   it takes no second copy of the space.
///
/// The free space is checked first. What was unpacked beside `dest` is
/// removed on every path; on failure `dest` too. The number of entries
/// the last set held.
pub fn materialize(
    chain: &[Link],
    ids: Option<&Identities>,
    dest: &Path,
    bindir: Option<&Path>,
    verify: &PgTool,
) -> std::result::Result<u64, Failed> {
    let last = chain.last().expect("a chain has its set");
    enough_space(chain, dest)?;
    if chain.len() == 1 {
        let t = std::time::Instant::now();
        let entries = physical::unpack(&last.path, &last.manifest, ids, dest)?;
        log::debug!("unpacked in {:.1}s", t.elapsed().as_secs_f64());
        return match physical::pg_verifybackup(verify, dest, true) {
            Ok(()) => Ok(entries),
            Err(e) => {
                let _ = fs::remove_dir_all(dest);
                Err(Failed::Verify(e))
            }
        };
    }
    let info = last.manifest.physical.as_ref().expect("a base set");
    let major = pgtools::major_of_num(info.server_version_num);
    let combine = pgtools::find_exact(
        "pg_combinebackup",
        major,
        &info.server_version,
        bindir,
        "postgresql-client",
    )?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let parts = dest.with_file_name(format!(".{name}.chain"));
    if parts.exists() {
        // A run killed before it cleaned up: nothing in it is used.
        fs::remove_dir_all(&parts).map_err(|e| Error::io("removing", &parts, &e))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&parts)
        .map_err(|e| Error::io("creating", &parts, &e))?;
    let tools = Tools {
        combine: &combine,
        verify,
        major,
    };
    let result = combine_into(chain, ids, &parts, dest, &tools);
    remove_parts(&parts);
    if result.is_err() {
        let _ = fs::remove_dir_all(dest);
    }
    result
}

struct Tools<'a> {
    combine: &'a PgTool,
    verify: &'a PgTool,
    major: u32,
}

/// Refuse, before anything is written, a restore the file system of
/// `dest` has no room for: every set's data directory as its plain
/// `backup_manifest` lists it, and its WAL; on 17 the combined copy too
/// (18 links it). Sets kept without a `backup_manifest` (older ones) are
/// not measured.
fn enough_space(chain: &[Link], dest: &Path) -> Result<()> {
    let mut need = 0u64;
    for link in chain {
        let Some(f) = link
            .manifest
            .files
            .iter()
            .find(|f| f.kind == backupset::FileKind::BackupManifest)
        else {
            return Ok(());
        };
        let path = link.path.join(&f.name);
        let file = crate::safefs::open_nofollow(&path, fs::OpenOptions::new().read(true))?;
        let listed = physical::listed_bytes(file)
            .map_err(|e| Error::check(format!("{}: {e}", path.display())))?;
        let info = link.manifest.physical.as_ref().expect("a base set");
        let wal = match (
            physical::parse_lsn(&info.start_lsn),
            physical::parse_lsn(&info.end_lsn),
        ) {
            (Some(s), Some(e)) => {
                (e.saturating_sub(s) / info.wal_segment_size.max(1) + 2) * info.wal_segment_size
            }
            _ => 0,
        };
        need = need.saturating_add(listed + wal);
    }
    let info = chain[chain.len() - 1]
        .manifest
        .physical
        .as_ref()
        .expect("a base set");
    if chain.len() > 1 && pgtools::major_of_num(info.server_version_num) < 18 {
        need = need.saturating_add(need / chain.len() as u64);
    }
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let avail = crate::sys::statvfs(dir)
        .map_err(|e| Error::io("checking the free space of", dir, &e))?
        .avail;
    if avail < need {
        return Err(Error::failure(format!(
            "restoring {} needs {} free in {}, and {} are: free some, or restore elsewhere; nothing was written",
            names(chain).join(" + "),
            crate::units::format_size(need),
            dir.display(),
            crate::units::format_size(avail)
        )));
    }
    Ok(())
}

fn combine_into(
    chain: &[Link],
    ids: Option<&Identities>,
    parts: &Path,
    dest: &Path,
    tools: &Tools,
) -> std::result::Result<u64, Failed> {
    let dirs: Vec<PathBuf> = (0..chain.len())
        .map(|i| parts.join(i.to_string()))
        .collect();
    let unpack = |i: usize| -> Result<u64> {
        let t = std::time::Instant::now();
        let entries = physical::unpack(&chain[i].path, &chain[i].manifest, ids, &dirs[i])?;
        log::debug!(
            "{}: unpacked in {:.1}s",
            chain[i].manifest.set,
            t.elapsed().as_secs_f64()
        );
        Ok(entries)
    };
    // Each set is checked by pg_verifybackup against the manifest its
    // server wrote (the combined directory gets none: writing one costs
    // more than the combining). Only the last set's WAL is parsed: the
    // combined directory has that set's WAL, and no other.
    let verify = |i: usize| -> std::result::Result<(), Failed> {
        physical::pg_verifybackup(tools.verify, &dirs[i], i + 1 == chain.len())
            .map_err(|e| Failed::Verify(format!("{}: {e}", chain[i].manifest.set)))
    };
    let t = std::time::Instant::now();
    // The full set (the bulk) is unpacked on a thread of its own while the
    // incrementals are unpacked and checked here, side by side on two
    // cores.
    let (full, rest) = std::thread::scope(|s| {
        let full = s.spawn(|| unpack(0).map_err(Failed::from));
        let rest: std::result::Result<Vec<u64>, Failed> = (1..chain.len())
            .map(|i| {
                let n = unpack(i)?;
                verify(i)?;
                Ok(n)
            })
            .collect();
        (full.join(), rest)
    });
    joined(full, "unpacking the full set")?;
    let entries = rest?.last().copied().unwrap_or(0);
    log::info!(
        "unpacked {} sets in {:.1}s; combining them",
        chain.len(),
        t.elapsed().as_secs_f64()
    );
    // pg_combinebackup and pg_verifybackup only read the parts: the full
    // set is checked while the chain is combined, and the result is kept
    // only if both pass.
    let t = std::time::Instant::now();
    let (checked, combined) = std::thread::scope(|s| {
        let checked = s.spawn(|| verify(0));
        let combined = combine(chain, &dirs, dest, tools);
        (checked.join(), combined)
    });
    joined(checked, "checking the full set")?;
    combined?;
    log::info!(
        "checked the full set and combined in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(entries)
}

/// A scoped thread's result; a panic is a failure named by `what`.
fn joined<T>(
    r: std::thread::Result<std::result::Result<T, Failed>>,
    what: &str,
) -> std::result::Result<T, Failed> {
    r.unwrap_or_else(|_| {
        Err(Failed::Unpack(Error::failure(format!(
            "{what}: the thread panicked"
        ))))
    })
}

/// `pg_combinebackup` of the unpacked `dirs` into `dest`.
fn combine(
    chain: &[Link],
    dirs: &[PathBuf],
    dest: &Path,
    tools: &Tools,
) -> std::result::Result<(), Failed> {
    let mut cmd = std::process::Command::new(&tools.combine.path);
    // Killed (kill -9, the OOM killer), the restore takes pg_combinebackup
    // with it: it would go on writing a data directory nobody finishes.
    crate::sys::end_with_parent(&mut cmd, crate::sys::SIGTERM);
    cmd.arg("--output").arg(dest);
    // Every set was proven (its sha256, pg_verifybackup); a manifest of
    // the result would only be read back. The server fsyncs its data
    // directory when it starts from a backup: no sync here.
    cmd.args(["--no-sync", "--no-manifest"]);
    // Hard links (18+) or the kernel's copy: the parts are removed after.
    cmd.arg(if tools.major >= 18 {
        "--link"
    } else {
        "--copy-file-range"
    });
    cmd.args(dirs);
    let out = cmd
        .output()
        .map_err(|e| Error::failure(format!("cannot run {}: {e}", tools.combine.path.display())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Failed::Unpack(Error::check(format!(
        "pg_combinebackup of {} failed: {}; nothing was kept",
        names(chain).join(" + "),
        pgtools::summarise_stderr(&out.stderr)
    ))))
}

/// Remove the unpacked parts, each set's directory on a thread of its own:
/// thousands of small files, and the full set's copies of the segments the
/// chain rewrote (which the kernel may still be writing back).
fn remove_parts(parts: &Path) {
    let t = std::time::Instant::now();
    if let Ok(entries) = fs::read_dir(parts) {
        let dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        std::thread::scope(|s| {
            for d in &dirs {
                s.spawn(move || fs::remove_dir_all(d));
            }
        });
    }
    let _ = fs::remove_dir_all(parts);
    log::debug!("removed the parts in {:.2}s", t.elapsed().as_secs_f64());
}
