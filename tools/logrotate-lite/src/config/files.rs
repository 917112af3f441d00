//! Reading config files: only regular files (a FIFO, device or socket is
//! refused before it can block), each at most [`MAX_CONFIG`] bytes; the
//! files of an included directory, skipping (and naming) what is not a
//! regular file; and telling an include that closes a loop.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Opts, parse};

/// The most of a config file that is read.
pub const MAX_CONFIG: u64 = 1 << 20;

/// Read config files (and what they include).
pub fn load(files: &[PathBuf]) -> Config {
    let mut cfg = Config::default();
    let mut globals = Opts::default();
    for f in files {
        read_file(f, &mut globals, &mut cfg, 0);
    }
    cfg
}

/// Read a config file, or the files of a directory.
pub(super) fn read_file(path: &Path, globals: &mut Opts, cfg: &mut Config, depth: usize) {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).ok();
    let id = meta.as_ref().map(|m| (m.dev(), m.ino()));
    if let Some(id) = id {
        cfg.reading.push((id, shown.clone()));
    }
    if meta.is_some_and(|m| m.is_dir()) {
        read_dir(path, globals, cfg, depth);
    } else {
        match read_text(path) {
            Ok(text) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                parse(&text, &shown, dir, globals, cfg, depth);
            }
            Err(msg) => cfg.errors.push(ConfigError { at: shown, msg }),
        }
    }
    if id.is_some() {
        cfg.reading.pop();
    }
}

/// An included directory: its regular files in name order, but those
/// the taboo list names; anything else is skipped, saying so.
fn read_dir(dir: &Path, globals: &mut Opts, cfg: &mut Config, depth: usize) {
    let at = dir.display().to_string();
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            let msg = format!("cannot read directory: {e}");
            cfg.errors.push(ConfigError { at, msg });
            return;
        }
    };
    names.sort();
    for n in names {
        let name = n.file_name().unwrap_or_default().to_string_lossy();
        if cfg.taboo.matches(&name) {
            continue;
        }
        let kind = match std::fs::metadata(&n) {
            Ok(m) if m.is_file() => {
                read_file(&n, globals, cfg, depth + 1);
                continue;
            }
            Ok(m) => format!("{}, not a regular file", opskit::safefs::kind_of(&m)),
            Err(e) => e.to_string(),
        };
        cfg.warnings.push(ConfigError {
            at: at.clone(),
            msg: format!("skipped {}: {kind}", n.display()),
        });
    }
}

/// A config file's text: a regular file (a FIFO, device or socket is
/// refused before it can block) of at most [`MAX_CONFIG`] bytes.
fn read_text(path: &Path) -> Result<String, String> {
    let bytes = opskit::safefs::read_regular(path, MAX_CONFIG).map_err(|e| {
        // The error is reported at the file's name: what follows it.
        let p = path.display().to_string();
        match e.msg.strip_prefix(&format!("{p} ")) {
            Some(refused) => refused.to_string(),
            None => {
                let why = e
                    .msg
                    .rsplit_once(&format!("{p}: "))
                    .map_or(&*e.msg, |w| w.1);
                format!("cannot read: {why}")
            }
        }
    })?;
    String::from_utf8(bytes).map_err(|_| "cannot read: not UTF-8 text".to_string())
}

/// The include of `target` closes a loop: the chain of files it makes.
pub(super) fn include_loop(cfg: &Config, target: &Path) -> Option<String> {
    let m = std::fs::metadata(target).ok()?;
    let first = cfg
        .reading
        .iter()
        .position(|(id, _)| *id == (m.dev(), m.ino()))?;
    let mut chain: Vec<&str> = cfg.reading[first..]
        .iter()
        .map(|(_, n)| n.as_str())
        .collect();
    let shown = target.display().to_string();
    chain.push(&shown);
    Some(chain.join(" -> "))
}
