//! logrotate's configuration language: global options, blocks of paths
//! and globs, `include` of files and directories, scripts. Errors name
//! file:line; a block with an error is skipped, the others still run.
//!
//! Only regular files are read (a FIFO or device is refused before it can
//! block), each at most [`files::MAX_CONFIG`] bytes and lines of at most
//! [`MAX_LINE`]; an include loop is one error, the file not read again.

mod directive;
mod files;
mod olddir;
mod opts;

use directive::directive;
pub use files::load;
use files::{include_loop, read_file};
pub use opts::Opts;

use crate::taboo::Taboo;
use std::path::{Path, PathBuf};

/// The longest line of a config file.
pub const MAX_LINE: usize = 16 << 10;

/// How often a log is due, from the state file's last rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Freq {
    #[default]
    None,
    Hourly,
    Daily,
    /// Weekday 0-6 (Sunday 0), or 7: every 7 days.
    Weekly(u8),
    Monthly,
    Yearly,
}

/// `create [mode [owner [group]]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Create {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// One `paths { ... }` block.
#[derive(Debug, Clone)]
pub struct Block {
    /// The paths and globs as written.
    pub patterns: Vec<String>,
    pub opts: Opts,
    /// Where the block starts, for messages.
    pub at: String,
    /// Logs its patterns match that an earlier block with
    /// `ignoreduplicates` claimed: not this block's.
    pub exclude: Vec<PathBuf>,
}

/// A problem in a config file; the block it is in (if any) is skipped.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub at: String,
    pub msg: String,
}

#[derive(Debug, Default)]
pub struct Config {
    pub blocks: Vec<Block>,
    pub errors: Vec<ConfigError>,
    /// What an include of a directory skips.
    pub taboo: Taboo,
    /// Every log a block has claimed, and whether that block ignores
    /// duplicates of it.
    pub claimed: std::collections::HashMap<PathBuf, bool>,
    /// What was skipped and is said on stderr (an include directory's
    /// FIFO, say).
    pub warnings: Vec<ConfigError>,
    /// The files and directories being read (device, inode; name),
    /// innermost last: including one of them again is a loop.
    reading: Vec<((u64, u64), String)>,
}

/// Split a line into words; double and single quotes group.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quote = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), _) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

const SCRIPTS: [&str; 5] = [
    "prerotate",
    "postrotate",
    "firstaction",
    "lastaction",
    "preremove",
];

/// The one block of a run without a config file (`--rotate N LOG...`):
/// the logs are names, never config text (a name holding a newline or a
/// quote cannot add a block or a script), matched literally (a `*` or `[`
/// in a name is no glob); the directives apply in order.
pub fn one_off(logs: &[PathBuf], directives: &[(&str, Vec<String>)]) -> Config {
    let mut cfg = Config::default();
    let mut opts = Opts::default();
    let at = format!("command line:{}", logs.len() + 1);
    for (key, args) in directives {
        let msg = match directive(&mut opts, key, args) {
            Ok(true) => continue,
            Ok(false) => format!("unknown directive '{key}'"),
            Err(msg) => msg,
        };
        cfg.errors.push(ConfigError {
            at: at.clone(),
            msg,
        });
    }
    if cfg.errors.is_empty() {
        let patterns = logs
            .iter()
            .map(|p| glob::Pattern::escape(&p.to_string_lossy()))
            .collect();
        cfg.blocks.push(Block {
            patterns,
            opts,
            at,
            exclude: vec![],
        });
    }
    cfg
}

/// Parse one file's text.
pub fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    globals: &mut Opts,
    cfg: &mut Config,
    depth: usize,
) {
    if let Some(n) = text.lines().position(|l| l.len() > MAX_LINE) {
        cfg.errors.push(ConfigError {
            at: format!("{file}:{}", n + 1),
            msg: format!(
                "a line longer than {} KiB: refused, the file is not read",
                MAX_LINE >> 10
            ),
        });
        return;
    }
    let mut p = Reader {
        lines: text.lines().collect(),
        i: 0,
        file,
        dir,
        globals,
        cfg,
        depth,
        block: None,
        pending: vec![],
    };
    while let Some((at, ws)) = p.next_line() {
        let err = |msg: String| ConfigError {
            at: at.clone(),
            msg,
        };
        if let Some(key) = ws.first().filter(|k| SCRIPTS.contains(&k.as_str())) {
            p.script(key, err);
        } else if p.block.is_none() {
            p.outside(ws, &at, err);
        } else {
            p.inside(&ws, err);
        }
    }
    p.finish();
}

/// A block being read: its patterns, options, start, and first error.
struct OpenBlock {
    patterns: Vec<String>,
    opts: Opts,
    at: String,
    error: Option<ConfigError>,
}

/// The state of reading one config file.
struct Reader<'a> {
    lines: Vec<&'a str>,
    i: usize,
    file: &'a str,
    dir: &'a Path,
    globals: &'a mut Opts,
    cfg: &'a mut Config,
    depth: usize,
    block: Option<OpenBlock>,
    /// Paths read before their block's `{`.
    pending: Vec<String>,
}

impl Reader<'_> {
    /// The next line with words on it, and where it is; a line whose words
    /// cannot be read is an error (the block's, if in one).
    fn next_line(&mut self) -> Option<(String, Vec<String>)> {
        while self.i < self.lines.len() {
            let at = format!("{}:{}", self.file, self.i + 1);
            let raw = self.lines[self.i].trim();
            self.i += 1;
            if raw.is_empty() || raw.starts_with('#') {
                continue;
            }
            match words(raw) {
                Ok(ws) => return Some((at, ws)),
                Err(msg) => self.error(ConfigError { at, msg }),
            }
        }
        None
    }

    /// An error: the open block's first (which skips the block), or the file's.
    fn error(&mut self, e: ConfigError) {
        match &mut self.block {
            Some(b) => {
                b.error.get_or_insert(e);
            }
            None => self.cfg.errors.push(e),
        }
    }

    /// A script: everything up to `endscript`.
    fn script(&mut self, key: &str, err: impl Fn(String) -> ConfigError) {
        let mut body = String::new();
        let mut ended = false;
        while self.i < self.lines.len() {
            let l = self.lines[self.i];
            self.i += 1;
            if l.trim() == "endscript" {
                ended = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let Some(b) = &mut self.block else {
            self.cfg
                .errors
                .push(err(format!("'{key}' outside a block")));
            return;
        };
        if !ended {
            b.error
                .get_or_insert(err(format!("'{key}' without 'endscript'")));
            return;
        }
        let target = &mut b.opts;
        match key {
            "prerotate" => target.prerotate = Some(body),
            "postrotate" => target.postrotate = Some(body),
            "firstaction" => target.firstaction = Some(body),
            "preremove" => target.preremove = Some(body),
            _ => target.lastaction = Some(body),
        }
    }

    /// Outside a block: a global directive, an include, or paths opening a
    /// block (the '{' may end this line or be alone).
    fn outside(&mut self, mut ws: Vec<String>, at: &str, err: impl Fn(String) -> ConfigError) {
        // A '{' inside the line (`path { rotate 1 }`): logrotate reads the
        // rest as the block's first directive and fails; the block is
        // skipped, and so is what it swallows up to the next '}'.
        if let Some(open) = ws
            .iter()
            .position(|w| w == "{")
            .filter(|&i| i + 1 < ws.len())
        {
            let mut patterns = std::mem::take(&mut self.pending);
            patterns.extend(ws[..open].iter().cloned());
            let e = err("'{' must end its line (a block cannot be written on one line)".into());
            self.open(patterns, at, Some(e));
            return;
        }
        if ws.last().is_some_and(|w| w == "{" || w.ends_with('{')) {
            let last = ws.pop().unwrap_or_default();
            let head = last.trim_end_matches('{');
            if !head.is_empty() {
                ws.push(head.to_string());
            }
            self.pending.extend(ws);
            let patterns = std::mem::take(&mut self.pending);
            let e = patterns
                .is_empty()
                .then(|| err("a block with no log paths".into()));
            self.open(patterns, at, e);
            return;
        }
        let key = ws[0].clone();
        if key == "include" {
            self.include(ws.get(1), err);
        } else if key == "tabooext" || key == "taboopat" {
            if let Err(e) = self.cfg.taboo.directive(key == "tabooext", &ws[1..]) {
                self.cfg.errors.push(err(e));
            }
        } else if key.starts_with('/')
            || key.starts_with('"')
            || key.contains('*')
            || key.starts_with('~')
        {
            self.pending.extend(ws);
        } else {
            match directive(self.globals, &key, &ws[1..]) {
                Ok(true) => {}
                Ok(false) => self
                    .cfg
                    .errors
                    .push(err(format!("unknown directive '{key}'"))),
                Err(e) => self.cfg.errors.push(err(e)),
            }
        }
    }

    fn open(&mut self, patterns: Vec<String>, at: &str, error: Option<ConfigError>) {
        self.block = Some(OpenBlock {
            patterns,
            opts: self.globals.clone(),
            at: at.to_string(),
            error,
        });
    }

    fn include(&mut self, path: Option<&String>, err: impl Fn(String) -> ConfigError) {
        if self.depth > 20 {
            self.cfg.errors.push(err("include nested too deep".into()));
            return;
        }
        let Some(p) = path else {
            self.cfg.errors.push(err("include needs a path".into()));
            return;
        };
        let p = self.dir.join(p);
        match include_loop(self.cfg, &p) {
            // Reported once; the file is not read again, so nothing in it
            // is reported again (as duplicate log entries, say).
            Some(chain) => {
                let e = err(format!("include loop: {chain}: not read again"));
                if !self
                    .cfg
                    .errors
                    .iter()
                    .any(|x| x.at == e.at && x.msg == e.msg)
                {
                    self.cfg.errors.push(e);
                }
            }
            None => read_file(&p, self.globals, self.cfg, self.depth + 1),
        }
    }

    /// A block's `}`: the checks logrotate makes when it reads a block
    /// (its olddir, logs another block has), then the block is kept.
    fn close(&mut self, err: impl Fn(String) -> ConfigError) {
        let b = self.block.take().expect("in a block");
        if let Some(e) = b.error {
            self.cfg.errors.push(e);
            return;
        }
        let checked = olddir::missing(&b.patterns, &b.opts)
            .map(|old| {
                format!(
                    "error verifying olddir path {}: No such file or directory",
                    old.display()
                )
            })
            .map_or(Ok(()), Err)
            .and_then(|()| olddir::claim(&b.patterns, &b.opts, &mut self.cfg.claimed));
        match checked {
            Ok(exclude) => self.cfg.blocks.push(Block {
                patterns: b.patterns,
                opts: b.opts,
                at: b.at,
                exclude,
            }),
            Err(msg) => {
                self.cfg.errors.push(err(msg));
                // As logrotate: the rest of the file is skipped.
                self.i = self.lines.len();
            }
        }
    }

    /// Inside a block: its directives, up to `}`.
    fn inside(&mut self, ws: &[String], err: impl Fn(String) -> ConfigError) {
        if ws[0] == "}" {
            self.close(err);
            return;
        }
        let b = self.block.as_mut().expect("in a block");
        if ws[0] == "include" || ws[0] == "tabooext" || ws[0] == "taboopat" {
            let what = format!("{} may not appear inside a block", ws[0]);
            b.error.get_or_insert(err(what));
            return;
        }
        match directive(&mut b.opts, &ws[0], &ws[1..]) {
            Ok(true) => {}
            Ok(false) => {
                b.error
                    .get_or_insert(err(format!("unknown directive '{}'", ws[0])));
            }
            Err(e) => {
                b.error.get_or_insert(err(e));
            }
        }
    }

    /// The end of the file: a block left open, paths left without one.
    fn finish(self) {
        if let Some(b) = self.block {
            self.cfg.errors.push(ConfigError {
                at: b.at,
                msg: "block not closed with '}'".into(),
            });
        }
        if !self.pending.is_empty() {
            self.cfg.errors.push(ConfigError {
                at: format!("{}:{}", self.file, self.lines.len()),
                msg: format!("paths without a block: {}", self.pending.join(" ")),
            });
        }
    }
}

#[cfg(test)]
mod tests;
