//! The file operations of one rotation, in logrotate's order, as data: so
//! a run killed half-way can be finished by the next one (see `exec`).

use opskit::records::ScriptKind;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::at::FileId;
use crate::config::Opts;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Compress `src` into `dst` (temp, fsync, rename), then remove `src`:
    /// gzip in-process at `level`, or `command` (compresscmd and its
    /// compressoptions) reading `src` on stdin and writing `dst`.
    Compress {
        src: PathBuf,
        dst: PathBuf,
        level: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<Vec<String>>,
    },
    /// Remove a rotation; with `shred` (logrotate's `shred -u [-n N] -` on
    /// the open file) first overwrite it.
    Remove {
        path: PathBuf,
        why: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shred: Option<Vec<String>>,
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
    /// prerotate / postrotate for this log alone, or preremove for `arg`
    /// (not replayed).
    Script {
        which: ScriptKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        arg: Option<PathBuf>,
    },
    /// `mail`: `command -s subject address` with `file` on stdin, through
    /// `uncompress` when it is compressed (not replayed).
    Mail {
        file: PathBuf,
        subject: String,
        address: String,
        command: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uncompress: Option<String>,
    },
}

/// What rotating one log does.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub log: PathBuf,
    /// The log as it was checked: copytruncate copies and truncates only
    /// that file (absent in journals of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_id: Option<FileId>,
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

/// Plan the rotation of `log`, the regular file `checked` describes (its
/// identity, mode, owner and group as they were checked).
pub fn plan(
    log: &Path,
    checked: &std::fs::Metadata,
    o: &Opts,
    now: NaiveDateTime,
    mtime_of: &dyn Fn(&Path) -> Option<i64>,
) -> Plan {
    let pl = Planner::new(log, checked, o, now, mtime_of);
    let mut p = Plan {
        log: log.to_path_buf(),
        log_id: Some(FileId::of(checked)),
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
    pl.dispose(&mut p, final_name.clone());
    pl.mail(&mut p, &final_name);
    pl.renamecopy(&mut p, &final_name);
    pl.preremove(&mut p);
    p
}

/// What planning one log's rotation needs to know.
struct Planner<'a> {
    log: &'a Path,
    checked: &'a std::fs::Metadata,
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
        checked: &'a std::fs::Metadata,
        o: &'a Opts,
        now: NaiveDateTime,
        mtime_of: &'a dyn Fn(&Path) -> Option<i64>,
    ) -> Self {
        let dir = o.rotated_dir(log);
        let (base, fileext) = o.rotation_base(log);
        let compext = if o.compress {
            o.compress_ext()
        } else {
            String::new()
        };
        Planner {
            log,
            checked,
            o,
            now,
            mtime_of,
            dir,
            base,
            fileext,
            compext,
        }
    }

    /// `maxage N`: modified before now − N × 86400 s, as logrotate
    /// compares (not whole days of age: a 47-hour-old file is past
    /// `maxage 1`).
    fn too_old(&self, path: &Path) -> bool {
        self.o.maxage.is_some_and(|days| {
            let limit = self.now.and_utc().timestamp() - (days as i64).saturating_mul(86_400);
            (self.mtime_of)(path).is_some_and(|m| m < limit)
        })
    }

    /// The `i`-th rotation (1 the newest), numbered from `start`.
    fn numbered(&self, i: i64, ext: &str) -> PathBuf {
        let n = i - 1 + self.o.start;
        name(&self.dir, format!("{}.{n}{}{ext}", self.base, self.fileext))
    }

    /// The time a dateext rotation is named after.
    fn stamp_time(&self) -> NaiveDateTime {
        if self.o.dateyesterday {
            self.now - chrono::TimeDelta::days(1)
        } else if self.o.datehourago {
            self.now - chrono::TimeDelta::hours(1)
        } else {
            self.now
        }
    }

    /// `dateext`: the dated rotations, compressed, aged out and kept to
    /// `rotate`; the new rotation's name, or None when it is blocked.
    fn shift_dated(&self, p: &mut Plan) -> Option<PathBuf> {
        let (o, base, fileext, compext) = (self.o, &self.base, &self.fileext, &self.compext);
        let stamp = self.stamp_time().format(o.dateformat()).to_string();
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
                let ext = o.compress_ext();
                if !ext.is_empty() && !f.to_string_lossy().ends_with(&ext) {
                    let dst = PathBuf::from(format!("{}{ext}", f.display()));
                    p.main.push(Step::Compress {
                        src: f.clone(),
                        dst,
                        level: o.gzip_level(),
                        command: o.compress_command(),
                    });
                }
            }
        }
        for f in old.iter().filter(|f| self.too_old(f)) {
            p.main.push(Step::Remove {
                path: f.clone(),
                why: "maxage".into(),
                shred: self.o.shred_command(),
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
                        shred: self.o.shred_command(),
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
                    level: o.gzip_level(),
                    command: o.compress_command(),
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
                        shred: self.o.shred_command(),
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
                shred: self.o.shred_command(),
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
                shred: self.o.shred_command(),
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
                arg: None,
            });
        }
        if o.copytruncate || o.copy {
            p.main.push(Step::Copy {
                from: log.to_path_buf(),
                to: final_name.to_path_buf(),
                truncate: o.copytruncate,
            });
        } else {
            // renamecopy: to LOG.tmp now, copied to the rotation later.
            let to = if o.renamecopy {
                renamecopy_temp(log)
            } else {
                final_name.to_path_buf()
            };
            p.main.push(Step::Rename {
                from: log.to_path_buf(),
                to,
            });
            if let Some(c) = &o.create {
                // Unset parts come from the log as it was checked, as in
                // logrotate (never from what a symlink swapped in points to).
                use std::os::unix::fs::MetadataExt;
                let m = self.checked;
                p.main.push(Step::Create {
                    path: log.to_path_buf(),
                    mode: c.mode.or(Some(m.mode() & 0o777)),
                    owner: c.owner.clone().or(Some(m.uid().to_string())),
                    group: c.group.clone().or(Some(m.gid().to_string())),
                });
            }
        }
        if o.postrotate.is_some() && !o.sharedscripts {
            p.main.push(Step::Script {
                which: ScriptKind::Postrotate,
                arg: None,
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
                shred: self.o.shred_command(),
            });
        } else if self.o.compress && !self.o.delaycompress {
            // Before the old rotation's removal, as logrotate orders them
            // (a preremove script sees that order).
            let dst = PathBuf::from(format!("{}{}", final_name.display(), self.compext));
            let compress = Step::Compress {
                src: final_name,
                dst,
                level: self.o.gzip_level(),
                command: self.o.compress_command(),
            };
            p.after.insert(0, compress);
        }
    }
}

fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// `renamecopy`'s temporary name: the log's, plus `.tmp`.
fn renamecopy_temp(log: &Path) -> PathBuf {
    PathBuf::from(format!("{}.tmp", log.display()))
}

impl Planner<'_> {
    /// `preremove`: the script, with the file's path, before each removal
    /// of an old rotation and of each file compression replaces.
    fn preremove(&self, p: &mut Plan) {
        if self.o.preremove.is_none() {
            return;
        }
        for steps in [&mut p.main, &mut p.after] {
            let mut i = 0;
            while i < steps.len() {
                // logrotate runs it for the uncompressed file that
                // compression removes too.
                let removed = match &steps[i] {
                    Step::Remove { path, why, .. } if why != "renamecopy" => Some(path.clone()),
                    Step::Compress { src, .. } => Some(src.clone()),
                    _ => None,
                };
                if let Some(path) = removed {
                    let script = Step::Script {
                        which: ScriptKind::Preremove,
                        arg: Some(path),
                    };
                    steps.insert(i, script);
                    i += 1;
                }
                i += 1;
            }
        }
    }

    /// `renamecopy`: the log was renamed to LOG.tmp before the postrotate;
    /// after it, LOG.tmp is copied to the rotation's name and removed
    /// (before the rotation is mailed or compressed).
    fn renamecopy(&self, p: &mut Plan, final_name: &Path) {
        if !self.o.renamecopy || self.o.copytruncate || self.o.copy {
            return;
        }
        let tmp = renamecopy_temp(self.log);
        p.after.insert(
            0,
            Step::Copy {
                from: tmp.clone(),
                to: final_name.to_path_buf(),
                truncate: false,
            },
        );
        p.after.insert(
            1,
            Step::Remove {
                path: tmp,
                why: "renamecopy".into(),
                shred: None,
            },
        );
    }

    /// `mail`: with `mailfirst` the new rotation, before it is compressed,
    /// under the log's own name; else each rotation `rotate` removes, under
    /// its name, just before it goes (as logrotate 3.21 mails them).
    fn mail(&self, p: &mut Plan, final_name: &Path) {
        let Some(address) = &self.o.mail else { return };
        let ext = self.o.compress_ext();
        let step = |file: &Path, subject: String| Step::Mail {
            file: file.to_path_buf(),
            subject,
            address: address.clone(),
            command: self.o.mailcmd.clone(),
            uncompress: (!ext.is_empty() && file.to_string_lossy().ends_with(&ext)).then(|| {
                self.o
                    .uncompresscmd
                    .clone()
                    .unwrap_or_else(|| "gunzip".into())
            }),
        };
        if self.o.mailfirst {
            if self.o.rotate != 0 {
                p.after
                    .insert(0, step(final_name, self.log.display().to_string()));
            }
            return;
        }
        let rotate_why = format!("rotate {}", self.o.rotate);
        let mut i = 0;
        while i < p.after.len() {
            if let Step::Remove { path, why, .. } = &p.after[i]
                && *why == rotate_why
            {
                let mail = step(path, path.display().to_string());
                p.after.insert(i, mail);
                i += 1;
            }
            i += 1;
        }
    }
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
