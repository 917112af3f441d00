//! Twin directories for differential tests: the same scenario set up
//! twice, one run by Debian's logrotate, one by logrotate-lite, and the
//! resulting trees and state files compared.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{Duration, NaiveDateTime};

pub const LOGROTATE: &str = "/usr/sbin/logrotate";

/// A file of the scenario: relative path, lines, and how many hours ago
/// it was last modified (and a minute more).
pub struct File {
    pub path: &'static str,
    pub lines: usize,
    pub age_hours: u64,
    pub gzip: bool,
}

pub const fn f(path: &'static str, lines: usize) -> File {
    File {
        path,
        lines,
        age_hours: 0,
        gzip: false,
    }
}

/// What happens between runs.
#[derive(Clone, Copy)]
pub enum Act {
    /// Run the tool (with -f when true).
    Run(bool),
    /// Move the clock: every state entry this many hours earlier.
    Hours(i64),
    /// Append lines to a file (created if missing).
    Append(&'static str, usize),
    /// Remove a file.
    Remove(&'static str),
}

pub struct Scenario {
    pub name: &'static str,
    /// `{D}` stands for the twin's directory.
    pub config: &'static str,
    pub files: &'static [File],
    /// Initial state entries: relative path, hours ago.
    pub state: &'static [(&'static str, i64)],
    /// Extra raw lines for the state file (corruption tests).
    pub state_extra: &'static str,
    pub acts: &'static [Act],
    /// Extra setup on each twin (symlinks, modes).
    pub setup: Option<fn(&Path)>,
    /// Run both tools with `-m mail.sh`, which appends its arguments and
    /// stdin to the twin's mail.out.
    pub mail: bool,
}

pub const fn scenario(
    name: &'static str,
    config: &'static str,
    files: &'static [File],
    acts: &'static [Act],
) -> Scenario {
    Scenario {
        name,
        config,
        files,
        state: &[],
        state_extra: "",
        acts,
        setup: None,
        mail: false,
    }
}

fn write_lines(p: &Path, from: usize, n: usize, tag: &str) {
    use std::io::Write;
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    for i in from..from + n {
        writeln!(
            f,
            "{{\"n\":{i},\"file\":\"{tag}\",\"msg\":\"GET /orders/{i} 200\"}}"
        )
        .unwrap();
    }
}

fn set_age(p: &Path, hours: u64) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3_600 + 60);
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

pub struct Twin {
    pub dir: PathBuf,
    pub state: PathBuf,
    pub conf: PathBuf,
    pub codes: Vec<i32>,
    pub stderr: String,
}

impl Twin {
    pub fn new(root: &Path, which: &str, s: &Scenario) -> Twin {
        let dir = root.join(which);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display().to_string();
        for file in s.files {
            let p = dir.join(file.path);
            write_lines(&p, 0, file.lines, file.path);
            if file.gzip {
                let raw = std::fs::read(&p).unwrap();
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                std::io::Write::write_all(&mut enc, &raw).unwrap();
                std::fs::write(&p, enc.finish().unwrap()).unwrap();
            }
            set_age(&p, file.age_hours);
        }
        let conf_dir = root.join(format!("{which}-conf"));
        std::fs::create_dir_all(&conf_dir).unwrap();
        let conf = conf_dir.join("logrotate.conf");
        std::fs::write(&conf, s.config.replace("{D}", &d)).unwrap();
        let state = conf_dir.join("status");
        if !s.state.is_empty() || !s.state_extra.is_empty() {
            let now = chrono::Local::now().naive_local();
            let mut text = String::from("logrotate state -- version 2\n");
            for (p, h) in s.state {
                text.push_str(&format!("\"{d}/{p}\" {}\n", fmt(now - Duration::hours(*h))));
            }
            text.push_str(s.state_extra);
            std::fs::write(&state, text).unwrap();
            restrict(&state);
        }
        if let Some(setup) = s.setup {
            setup(&dir);
        }
        if s.mail {
            let script = dir.join("mail.sh");
            let out = dir.join("mail.out");
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"ARGS: $*\" >> '{0}'\ncat >> '{0}'\n",
                    out.display()
                ),
            )
            .unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Twin {
            dir,
            state,
            conf,
            codes: vec![],
            stderr: String::new(),
        }
    }

    pub fn act(&mut self, a: Act, cmd: &dyn Fn() -> Command) {
        match a {
            Act::Run(force) => {
                let mut c = cmd();
                if force {
                    c.arg("-f");
                }
                let mail = self.dir.join("mail.sh");
                if mail.exists() {
                    c.arg("-m").arg(mail);
                }
                let out = c
                    .arg("-s")
                    .arg(&self.state)
                    .arg(&self.conf)
                    .output()
                    .unwrap();
                self.codes.push(out.status.code().unwrap_or(-1));
                self.stderr.push_str(&String::from_utf8_lossy(&out.stderr));
                if self.state.exists() {
                    restrict(&self.state);
                }
            }
            Act::Hours(h) => shift_state(&self.state, h),
            Act::Append(p, n) => {
                let p2 = self.dir.join(p);
                let from = std::fs::read_to_string(&p2)
                    .map(|s| s.lines().count())
                    .unwrap_or(0);
                write_lines(&p2, 1000 + from, n, p);
            }
            Act::Remove(p) => {
                let _ = std::fs::remove_file(self.dir.join(p));
            }
        }
    }

    /// Every file under the twin: relative name -> (compressed, content).
    pub fn tree(&self) -> BTreeMap<String, (bool, String)> {
        tree(&self.dir)
    }

    /// The state file, paths relative to the twin, times within the last
    /// two minutes shown as NOW.
    pub fn state(&self) -> BTreeMap<String, String> {
        let text = std::fs::read_to_string(&self.state).unwrap_or_default();
        let now = chrono::Local::now().naive_local();
        let d = format!("{}/", self.dir.display());
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let (p, t) = l.rsplit_once(' ')?;
                let p = p.trim_matches('"').replace(&d, "");
                let t2 = parse(t)?;
                let shown = if (now - t2).num_seconds().abs() < 120
                    && t2.format("%M:%S").to_string() != "00:00"
                {
                    "NOW".into()
                } else {
                    t.to_string()
                };
                Some((p, shown))
            })
            .collect()
    }
}

fn restrict(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
}

fn fmt(t: NaiveDateTime) -> String {
    t.format("%Y-%-m-%-d-%-H:%-M:%-S").to_string()
}

fn parse(s: &str) -> Option<NaiveDateTime> {
    let v: Vec<u32> = s
        .split(['-', ':'])
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    chrono::NaiveDate::from_ymd_opt(*v.first()? as i32, *v.get(1)?, *v.get(2)?)?.and_hms_opt(
        *v.get(3)?,
        *v.get(4)?,
        *v.get(5)?,
    )
}

fn shift_state(state: &Path, hours: i64) {
    let Ok(text) = std::fs::read_to_string(state) else {
        return;
    };
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        match l.rsplit_once(' ').and_then(|(p, t)| Some((p, parse(t)?))) {
            Some((p, t)) if i > 0 => {
                out.push_str(&format!("{p} {}\n", fmt(t - Duration::hours(hours))))
            }
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    std::fs::write(state, out).unwrap();
}

/// Every file under `dir`: relative name -> (compressed, content).
pub fn tree(dir: &Path) -> BTreeMap<String, (bool, String)> {
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (bool, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            let target = std::fs::read_link(&p).unwrap();
            let target = target
                .strip_prefix(root)
                .unwrap_or(&target)
                .display()
                .to_string();
            out.insert(rel, (false, format!("-> {target}")));
        } else if ft.is_dir() {
            out.insert(format!("{rel}/"), (false, String::new()));
            walk(root, &p, out);
        } else {
            let raw = std::fs::read(&p).unwrap();
            if raw.starts_with(&[0x1f, 0x8b]) {
                let mut s = String::new();
                flate2::read::MultiGzDecoder::new(&raw[..])
                    .read_to_string(&mut s)
                    .unwrap();
                out.insert(rel, (true, s));
            } else {
                // Files that name their own twin (configs in an include
                // directory) compare by what they say, not where they are.
                let text =
                    String::from_utf8_lossy(&raw).replace(&root.display().to_string(), "{D}");
                out.insert(rel, (false, text));
            }
        }
    }
}

/// Every scenario on both tools: identical, or a panic naming each
/// difference.
pub fn assert_all_match(scenarios: &[Scenario], lite: &Path) {
    assert!(
        Path::new(LOGROTATE).exists(),
        "Debian's logrotate is needed (make test installs it)"
    );
    let failures: Vec<String> = scenarios
        .iter()
        .filter_map(|s| compare(s, lite).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n\n")
    );
}

/// Run a scenario on both tools and compare.
pub fn compare(s: &Scenario, lite: &Path) -> Result<(), String> {
    let root = tempfile::tempdir().unwrap();
    let mut a = Twin::new(root.path(), "a", s);
    let mut b = Twin::new(root.path(), "b", s);
    let real = || Command::new(LOGROTATE);
    let ours = || {
        let mut c = Command::new(lite);
        c.env_remove("OPSKIT_LOG");
        c
    };
    for act in s.acts {
        a.act(*act, &real);
        b.act(*act, &ours);
    }
    let mut diffs = vec![];
    let (ta, tb) = (a.tree(), b.tree());
    for k in ta
        .keys()
        .chain(tb.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (ta.get(k), tb.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => diffs.push(format!(
                "{k}: logrotate (gz {}, {} bytes) vs lite (gz {}, {} bytes)",
                x.0,
                x.1.len(),
                y.0,
                y.1.len()
            )),
            (Some(_), None) => diffs.push(format!("{k}: only logrotate has it")),
            (None, Some(_)) => diffs.push(format!("{k}: only logrotate-lite has it")),
            (None, None) => {}
        }
    }
    let (sa, sb) = (a.state(), b.state());
    let close = |x: &String, y: &String| {
        x == y
            || matches!((parse(x), parse(y)), (Some(p), Some(q)) if (p - q).num_seconds().abs() <= 5)
    };
    let same = sa.len() == sb.len()
        && sa
            .iter()
            .all(|(k, v)| sb.get(k).is_some_and(|w| close(v, w)));
    if !same {
        diffs.push(format!("state: logrotate {sa:?}\n       lite      {sb:?}"));
    }
    let fa: Vec<bool> = a.codes.iter().map(|c| *c != 0).collect();
    let fb: Vec<bool> = b.codes.iter().map(|c| *c != 0).collect();
    if fa != fb {
        diffs.push(format!(
            "exit codes: logrotate {:?} vs lite {:?}",
            a.codes, b.codes
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}:\n  {}\n  logrotate said: {}\n  lite said: {}",
            s.name,
            diffs.join("\n  "),
            a.stderr.trim(),
            b.stderr.trim()
        ))
    }
}
