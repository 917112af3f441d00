//! The file operations of one rotation, in logrotate's order, as data: so
//! a run killed half-way can be finished by the next one (see `exec`).

use opskit::records::ScriptKind;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::config::Opts;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// gzip `src` into `dst` (temp, fsync, rename), then remove `src`.
    Compress {
        src: PathBuf,
        dst: PathBuf,
        level: u32,
    },
    Remove {
        path: PathBuf,
        why: String,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    /// copytruncate / copy.
    Copy {
        from: PathBuf,
        to: PathBuf,
        truncate: bool,
    },
    /// A new empty log (kept if something already created it).
    Create {
        path: PathBuf,
        mode: Option<u32>,
        owner: Option<String>,
        group: Option<String>,
    },
    /// prerotate / postrotate for this log alone (not replayed).
    Script {
        which: ScriptKind,
    },
}

/// What rotating one log does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub log: PathBuf,
    /// Run in order, now.
    pub main: Vec<Step>,
    /// Run after the block's postrotate (compression, disposal), in parallel
    /// with other logs' `after` steps.
    pub after: Vec<Step>,
    /// Problems found while planning (a file in the way, a destination
    /// that exists): the log is not rotated when `blocked`.
    pub warnings: Vec<String>,
    pub blocked: Option<String>,
}

fn name(dir: &Path, s: String) -> PathBuf {
    dir.join(s)
}

/// A glob pattern for the names `dateformat` makes.
fn date_glob(fmt: &str) -> String {
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            if "*?[]".contains(c) {
                out.push('[');
                out.push(c);
                out.push(']');
            } else {
                out.push(c);
            }
            continue;
        }
        match it.next() {
            Some('Y') => out.push_str("[0-9][0-9][0-9][0-9]"),
            Some('m' | 'd' | 'H' | 'M' | 'S' | 'V') => out.push_str("[0-9][0-9]"),
            Some('s') => out.push_str("[0-9]*"),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Plan the rotation of `log` (a regular file of `mode`, `uid`, `gid`).
pub fn plan(
    log: &Path,
    o: &Opts,
    now: NaiveDateTime,
    mtime_of: &dyn Fn(&Path) -> Option<i64>,
) -> Plan {
    let pl = Planner::new(log, o, now, mtime_of);
    let mut p = Plan {
        log: log.to_path_buf(),
        ..Plan::default()
    };
    // The older rotations move up (or go); the previous one, left plain by
    // delaycompress, is compressed now.
    let final_name = if o.dateext {
        match pl.shift_dated(&mut p) {
            Some(f) => f,
            None => return p,
        }
    } else {
        pl.shift_numbered(&mut p)
    };
    if o.olddir.is_some() && !pl.dir.is_dir() {
        p.blocked = Some(format!("olddir {} does not exist", pl.dir.display()));
        if o.createolddir.is_none() {
            return p;
        }
        p.blocked = None;
    }
    pl.move_log(&mut p, &final_name);
    pl.dispose(&mut p, final_name);
    p
}

/// What planning one log's rotation needs to know.
struct Planner<'a> {
    log: &'a Path,
    o: &'a Opts,
    now: NaiveDateTime,
    mtime_of: &'a dyn Fn(&Path) -> Option<i64>,
    /// Where the rotated files go (olddir, or beside the log).
    dir: PathBuf,
    /// The log's name without its `extension`, and that extension.
    base: String,
    fileext: String,
    /// The compressed files' extension ("" without compress).
    compext: String,
}

impl<'a> Planner<'a> {
    fn new(
        log: &'a Path,
        o: &'a Opts,
        now: NaiveDateTime,
        mtime_of: &'a dyn Fn(&Path) -> Option<i64>,
    ) -> Self {
        let logdir = log.parent().unwrap_or(Path::new("/"));
        let dir = match &o.olddir {
            Some(d) if d.starts_with('/') => PathBuf::from(d),
            Some(d) => logdir.join(d),
            None => logdir.to_path_buf(),
        };
        let mut base = log
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut fileext = String::new();
        if let Some(ext) = o
            .extension
            .as_deref()
            .filter(|e| !e.is_empty() && base.ends_with(*e))
        {
            base.truncate(base.len() - ext.len());
            fileext = ext.to_string();
        }
        let compext = if o.compress {
            o.compressext.clone()
        } else {
            String::new()
        };
        Planner {
            log,
            o,
            now,
            mtime_of,
            dir,
            base,
            fileext,
            compext,
        }
    }

    fn too_old(&self, path: &Path) -> bool {
        self.o.maxage.is_some_and(|days| {
            (self.mtime_of)(path)
                .is_some_and(|m| (self.now.and_utc().timestamp() - m) / 86_400 > days as i64)
        })
    }

    fn numbered(&self, i: i64, ext: &str) -> PathBuf {
        name(&self.dir, format!("{}.{i}{}{ext}", self.base, self.fileext))
    }

    /// `dateext`: the dated rotations, compressed, aged out and kept to
    /// `rotate`; the new rotation's name, or None when it is blocked.
    fn shift_dated(&self, p: &mut Plan) -> Option<PathBuf> {
        let (o, base, fileext, compext) = (self.o, &self.base, &self.fileext, &self.compext);
        let stamp = self.now.format(o.dateformat()).to_string();
        let final_name = name(&self.dir, format!("{base}{stamp}{fileext}"));
        let final_gz = name(&self.dir, format!("{base}{stamp}{fileext}{compext}"));
        if exists(&final_name) || (o.compress && exists(&final_gz)) {
            p.blocked = Some(format!(
                "destination {} already exists, skipping rotation",
                final_gz.display()
            ));
            return None;
        }
        let pattern = format!(
            "{}/{}{}{}*",
            glob::Pattern::escape(&self.dir.to_string_lossy()),
            glob::Pattern::escape(base),
            date_glob(o.dateformat()),
            glob::Pattern::escape(fileext)
        );
        let mut old: Vec<PathBuf> = glob::glob(&pattern)
            .map(|g| g.flatten().collect())
            .unwrap_or_default();
        old.retain(|f| {
            let n = f.to_string_lossy();
            n.ends_with(&format!("{fileext}{compext}")) || n.ends_with(fileext.as_str())
        });
        old.sort();
        if o.compress && o.delaycompress {
            for f in &old {
                if !o.compressext.is_empty() && !f.to_string_lossy().ends_with(&o.compressext) {
                    let dst = PathBuf::from(format!("{}{}", f.display(), o.compressext));
                    p.main.push(Step::Compress {
                        src: f.clone(),
                        dst,
                        level: o.compresslevel,
                    });
                }
            }
        }
        for f in old.iter().filter(|f| self.too_old(f)) {
            p.main.push(Step::Remove {
                path: f.clone(),
                why: "maxage".into(),
            });
        }
        // Keep rotate - 1 old ones beside the new one (oldest names go first:
        // date stamps sort by time).
        if o.rotate >= 0 {
            let keep = o.rotate.max(1) as usize;
            let young: Vec<&PathBuf> = old.iter().filter(|f| !self.too_old(f)).collect();
            if young.len() >= keep {
                for f in &young[..young.len() + 1 - keep] {
                    p.after.push(Step::Remove {
                        path: (*f).clone(),
                        why: format!("rotate {}", o.rotate),
                    });
                }
            }
        }
        Some(final_name)
    }

    /// Numbered rotations: `.N` renamed to `.N+1` (the one beyond `rotate`
    /// goes), aged out; the new rotation's name (`.1`).
    fn shift_numbered(&self, p: &mut Plan) -> PathBuf {
        let (o, compext) = (self.o, &self.compext);
        if o.compress && o.delaycompress {
            let prev = self.numbered(1, "");
            if exists(&prev) {
                p.main.push(Step::Compress {
                    src: prev.clone(),
                    dst: self.numbered(1, compext),
                    level: o.compresslevel,
                });
            }
        }
        let count = if o.rotate < 0 {
            let mut n = 1;
            while exists(&self.numbered(n, compext)) {
                n += 1;
            }
            n
        } else {
            o.rotate.max(1)
        };
        if o.maxage.is_some() {
            for i in 1..=count + 1 {
                let f = self.numbered(i, compext);
                if self.too_old(&f) {
                    p.main.push(Step::Remove {
                        path: f,
                        why: "maxage".into(),
                    });
                }
            }
        }
        let dispose = self.numbered(count + 1, compext);
        if exists(&dispose) && o.rotate >= 0 {
            // logrotate's rename would overwrite it; it is the one to go.
            p.main.push(Step::Remove {
                path: dispose.clone(),
                why: format!("rotate {}", o.rotate),
            });
        }
        // Only renames of files that exist (logrotate skips the others):
        // a replayed step must not move a file a later step put there.
        for i in (1..=count).rev() {
            let from = self.numbered(i, compext);
            // .1 may only appear through the delaycompress step above.
            if exists(&from)
                || (i == 1 && o.compress && o.delaycompress && exists(&self.numbered(1, "")))
            {
                p.main.push(Step::Rename {
                    from,
                    to: self.numbered(i + 1, compext),
                });
            }
        }
        if o.rotate >= 0 {
            p.after.push(Step::Remove {
                path: dispose,
                why: format!("rotate {}", o.rotate),
            });
        }
        let final_name = self.numbered(1, "");
        // A plain .1 in the way (compress was switched on, say): keep it.
        // Without compression the renames above already moved it to .2.
        let renamed = compext.is_empty();
        if exists(&final_name) && !renamed && !(o.compress && o.delaycompress) {
            let aside = PathBuf::from(format!(
                "{}.opskit-aside-{}",
                final_name.display(),
                self.now.and_utc().timestamp()
            ));
            p.warnings.push(format!(
                "{} was in the way; moved to {}",
                final_name.display(),
                aside.display()
            ));
            p.main.push(Step::Rename {
                from: final_name.clone(),
                to: aside,
            });
        }
        final_name
    }

    /// The log itself: copied (copytruncate, copy) or renamed and created
    /// anew, between its own prerotate and postrotate.
    fn move_log(&self, p: &mut Plan, final_name: &Path) {
        let (o, log) = (self.o, self.log);
        if o.prerotate.is_some() && !o.sharedscripts {
            p.main.push(Step::Script {
                which: ScriptKind::Prerotate,
            });
        }
        if o.copytruncate || o.copy {
            p.main.push(Step::Copy {
                from: log.to_path_buf(),
                to: final_name.to_path_buf(),
                truncate: o.copytruncate,
            });
        } else {
            p.main.push(Step::Rename {
                from: log.to_path_buf(),
                to: final_name.to_path_buf(),
            });
            if let Some(c) = &o.create {
                // Unset parts come from the log being rotated, as in logrotate.
                use std::os::unix::fs::MetadataExt;
                let m = log.metadata().ok();
                p.main.push(Step::Create {
                    path: log.to_path_buf(),
                    mode: c.mode.or(m.as_ref().map(|m| m.mode() & 0o777)),
                    owner: c.owner.clone().or(m.as_ref().map(|m| m.uid().to_string())),
                    group: c.group.clone().or(m.as_ref().map(|m| m.gid().to_string())),
                });
            }
        }
        if o.postrotate.is_some() && !o.sharedscripts {
            p.main.push(Step::Script {
                which: ScriptKind::Postrotate,
            });
        }
    }

    /// The new rotation: removed (`rotate 0`) or compressed (first, after
    /// the postrotate).
    fn dispose(&self, p: &mut Plan, final_name: PathBuf) {
        if self.o.rotate == 0 {
            p.after.push(Step::Remove {
                path: final_name,
                why: "rotate 0".into(),
            });
        } else if self.o.compress && !self.o.delaycompress {
            let dst = PathBuf::from(format!("{}{}", final_name.display(), self.compext));
            p.after.insert(
                0,
                Step::Compress {
                    src: final_name,
                    dst,
                    level: self.o.compresslevel,
                },
            );
        }
    }
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_globs() {
        assert_eq!(
            date_glob("-%Y%m%d"),
            "-[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]"
        );
        assert_eq!(date_glob(".%s"), ".[0-9]*");
    }
}
