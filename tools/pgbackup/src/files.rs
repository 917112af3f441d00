//! Archives of application and configuration directories: one streamed
//! `tar.gz` per directory. Symlinks are stored as symlinks (never followed),
//! modes, owners and mtimes are kept, sockets and fifos are skipped with a
//! warning, and an unreadable file fails the backup unless told to skip it.

use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use opskit::backupset::{FileEntry, FileKind};
use opskit::{Error, Result};

use crate::sink::{Encoding, Sink};

/// `--exclude` patterns: a pattern without `/` matches a name anywhere
/// (like `tar --exclude`); one with `/` matches the path relative to the
/// archived directory.
#[derive(Debug)]
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let g = Glob::new(p.trim_end_matches('/'))
                .map_err(|e| Error::usage(format!("invalid --exclude '{p}': {e}")))?;
            if p.trim_end_matches('/').contains('/') {
                paths.add(g);
            } else {
                names.add(g);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::usage(format!("--exclude: {e}")))
        };
        Ok(Excludes {
            names: build(names)?,
            paths: build(paths)?,
        })
    }

    fn excluded(&self, rel: &Path) -> bool {
        let name_hit = rel
            .file_name()
            .is_some_and(|n| self.names.is_match(Path::new(n)));
        name_hit || self.paths.is_match(rel)
    }
}

/// The archive's name for a source directory: `files-<basename>.tar.gz`
/// (`.tar.zst` with zstd), made unique among `taken`.
pub fn archive_name(source: &Path, taken: &[String], ext: &str) -> String {
    let raw = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = opskit::backupset::sanitize_name(&raw, "root");
    let mut name = format!("files-{base}.tar{ext}");
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("files-{base}-{n}.tar{ext}");
        n += 1;
    }
    name
}

/// Archive `source` into `dir/name`. Entries are named relative to the
/// parent of `source`, so `tar -xzf <name> -C <parent>` puts them back.
/// What a tar archive of files cannot hold: sockets, fifos, devices.
fn special(ft: &fs::FileType) -> Option<&'static str> {
    if ft.is_socket() {
        Some("socket")
    } else if ft.is_fifo() {
        Some("fifo")
    } else if ft.is_block_device() || ft.is_char_device() {
        Some("device")
    } else {
        None
    }
}

pub fn archive(
    source: &Path,
    dir: &Path,
    name: &str,
    excludes: &Excludes,
    skip_unreadable: bool,
    enc: &Encoding,
) -> Result<FileEntry> {
    let meta = fs::metadata(source).map_err(|e| Error::io("reading", source, &e))?;
    if !meta.is_dir() {
        return Err(Error::usage(format!(
            "--files {}: not a directory",
            source.display()
        )));
    }
    let top = source
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("root"));
    let sink = Sink::create(dir, name, FileKind::Files, enc)?.with_progress();
    let out_path = sink.path().to_path_buf();
    let mut tar = tar::Builder::new(sink);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let mut entries = 0u64;
    let mut skipped = Vec::new();
    let walker = walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            let rel = e.path().strip_prefix(source).unwrap_or(e.path());
            rel.as_os_str().is_empty() || !excludes.excluded(rel)
        });
    for item in walker {
        let entry = match item {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| source.to_path_buf());
                let io = e
                    .into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk error"));
                unreadable(&path, &io, skip_unreadable, &mut skipped)?;
                continue;
            }
        };
        let rel = entry.path().strip_prefix(source).unwrap_or(entry.path());
        let in_archive = top.join(rel);
        let ft = entry.file_type();
        if let Some(what) = special(&ft) {
            log::warn!("skipping {what} {}", entry.path().display());
            skipped.push(format!("{} ({what})", entry.path().display()));
            continue;
        }
        let res = if ft.is_dir() {
            tar.append_dir(&in_archive, entry.path())
        } else {
            tar.append_path_with_name(entry.path(), &in_archive)
        };
        match res {
            Ok(()) => entries += 1,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                unreadable(entry.path(), &e, skip_unreadable, &mut skipped)?;
            }
            // A write error (full disk) or a file that changed under us.
            Err(e) => {
                return Err(Error::io("archiving into", &out_path, &e)
                    .context(format!("at {}", entry.path().display())));
            }
        }
    }
    let sink = tar
        .into_inner()
        .map_err(|e| Error::io("writing", &out_path, &e))?;
    let mut fe = sink.finish()?;
    fe.source = Some(source.display().to_string());
    fe.entries = Some(entries);
    fe.skipped = skipped;
    Ok(fe)
}

fn unreadable(path: &Path, e: &io::Error, skip: bool, skipped: &mut Vec<String>) -> Result<()> {
    if skip {
        log::warn!("skipping unreadable {}: {e}", path.display());
        skipped.push(format!("{} (unreadable)", path.display()));
        Ok(())
    } else {
        Err(Error::failure(format!(
            "cannot read {}: {}; fix its permissions or pass --skip-unreadable",
            path.display(),
            opskit::exit::describe_io("reading", path, e)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_are_unique_and_safe() {
        let a = archive_name(Path::new("/srv/app"), &[], ".gz");
        assert_eq!(a, "files-app.tar.gz");
        let b = archive_name(Path::new("/etc/app"), std::slice::from_ref(&a), ".gz");
        assert_eq!(
            archive_name(Path::new("/srv/app"), &[], ".zst"),
            "files-app.tar.zst"
        );
        assert_eq!(b, "files-app-2.tar.gz");
        assert_eq!(
            archive_name(Path::new("/"), &[], ".gz"),
            "files-root.tar.gz"
        );
        assert_eq!(
            archive_name(Path::new("/x/my dir"), &[], ".gz"),
            "files-my_dir.tar.gz"
        );
        assert_eq!(
            archive_name(Path::new("/x/.cfg"), &[], ".gz"),
            "files-cfg.tar.gz"
        );
    }

    #[test]
    fn excludes_match_names_and_paths() {
        let ex =
            Excludes::new(&["*.log".into(), "cache/**".into(), "node_modules/".into()]).unwrap();
        assert!(ex.excluded(Path::new("a/b/x.log")));
        assert!(ex.excluded(Path::new("cache/x")));
        assert!(ex.excluded(Path::new("web/node_modules")));
        assert!(!ex.excluded(Path::new("web/cache/x")));
        assert!(!ex.excluded(Path::new("src/main.rs")));
        assert!(
            Excludes::new(&["a[".into()])
                .unwrap_err()
                .msg
                .contains("invalid --exclude 'a['")
        );
    }
}
