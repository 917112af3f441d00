//! The options of a block: what each directive sets, and what follows from
//! several of them (the compressed files' extension and command, the
//! dateext format).

use super::{Create, Freq};

/// The options of a block (the globals, then the block's own).
#[derive(Debug, Clone)]
pub struct Opts {
    pub freq: Freq,
    pub size: Option<u64>,
    pub minsize: Option<u64>,
    pub maxsize: Option<u64>,
    pub rotate: i64,
    pub maxage: Option<u64>,
    /// Days a log must be older than to rotate (not when forced).
    pub minage: Option<u64>,
    /// The number of the newest rotation (`.1` by default).
    pub start: i64,
    /// `mail ADDRESS`: where rotated logs are mailed; `mailfirst` mails the
    /// new rotation, else (`maillast`) the one rotated out of existence.
    pub mail: Option<String>,
    pub mailfirst: bool,
    /// The mail program (the command line's --mail).
    pub mailcmd: String,
    /// Later blocks leave out the logs this one has (else: an error).
    pub ignoreduplicates: bool,
    /// `addextension EXT`: like `extension`, and added where missing.
    pub addextension: Option<String>,
    /// Rename the log to LOG.tmp, copy that to the rotation after the
    /// postrotate script (for logs on another file system than olddir).
    pub renamecopy: bool,
    /// Overwrite rotations (`shred`, `shredcycles N`) before removing them.
    pub shred: bool,
    pub shredcycles: Option<u32>,
    /// Rotate logs with more than one hard link.
    pub allowhardlink: bool,
    /// dateext names the rotation after yesterday, or an hour ago.
    pub dateyesterday: bool,
    pub datehourago: bool,
    pub compress: bool,
    pub delaycompress: bool,
    /// `compressext`, when given; else from the command (see compress_ext).
    pub compressext: Option<String>,
    pub compresslevel: u32,
    pub compresscmd: Option<String>,
    pub compressoptions: Option<String>,
    /// Read, kept: logrotate uses it only to mail compressed logs.
    pub uncompresscmd: Option<String>,
    pub copytruncate: bool,
    pub copy: bool,
    pub create: Option<Create>,
    pub missingok: bool,
    pub ifempty: bool,
    pub dateext: bool,
    pub dateformat: Option<String>,
    pub extension: Option<String>,
    pub olddir: Option<String>,
    pub createolddir: Option<Create>,
    pub sharedscripts: bool,
    pub prerotate: Option<String>,
    pub postrotate: Option<String>,
    pub firstaction: Option<String>,
    pub lastaction: Option<String>,
    /// Run before each old rotation is removed, with its path.
    pub preremove: Option<String>,
    pub su: Option<(String, String)>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            freq: Freq::None,
            size: None,
            minsize: None,
            maxsize: None,
            rotate: 0,
            maxage: None,
            minage: None,
            start: 1,
            allowhardlink: false,
            ignoreduplicates: false,
            addextension: None,
            renamecopy: false,
            shred: false,
            shredcycles: None,
            mail: None,
            mailfirst: false,
            mailcmd: "/usr/bin/mail".into(),
            dateyesterday: false,
            datehourago: false,
            compress: false,
            delaycompress: false,
            compressext: None,
            compresslevel: 6,
            compresscmd: None,
            compressoptions: None,
            uncompresscmd: None,
            copytruncate: false,
            copy: false,
            create: None,
            missingok: false,
            ifempty: true,
            dateext: false,
            dateformat: None,
            extension: None,
            olddir: None,
            createolddir: None,
            sharedscripts: false,
            prerotate: None,
            postrotate: None,
            firstaction: None,
            lastaction: None,
            preremove: None,
            su: None,
        }
    }
}

impl Opts {
    /// The compressed files' extension: `compressext`, else what logrotate
    /// 3.21 infers from `compresscmd` (.bz2, .xz, .zst; .gz otherwise).
    pub fn compress_ext(&self) -> String {
        if let Some(e) = &self.compressext {
            return e.clone();
        }
        let base = self
            .compresscmd
            .as_deref()
            .and_then(|c| c.rsplit('/').next())
            .unwrap_or("gzip");
        match base {
            "bzip2" => ".bz2",
            "xz" => ".xz",
            "zstd" => ".zst",
            _ => ".gz",
        }
        .into()
    }

    /// The external compressor and its arguments, as logrotate runs it
    /// (stdin the log, stdout the compressed file); None when it is gzip
    /// with at most a level, which is compressed in-process alike.
    pub fn compress_command(&self) -> Option<Vec<String>> {
        let cmd = self.compresscmd.as_deref().unwrap_or("gzip");
        let opts: Vec<String> = self
            .compressoptions
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        let gzip = cmd.rsplit('/').next() == Some("gzip");
        let level_only = match opts.as_slice() {
            [] => true,
            [o] => o.len() == 2 && o.starts_with('-') && o[1..].parse::<u8>().is_ok_and(|l| l >= 1),
            _ => false,
        };
        if gzip && level_only {
            return None;
        }
        Some(std::iter::once(cmd.to_string()).chain(opts).collect())
    }

    /// Where `log`'s rotations go: `olddir` (absolute, or relative to the
    /// log's directory), or beside the log.
    pub fn rotated_dir(&self, log: &std::path::Path) -> std::path::PathBuf {
        let logdir = log.parent().unwrap_or(std::path::Path::new("/"));
        match &self.olddir {
            Some(d) if d.starts_with('/') => std::path::PathBuf::from(d),
            Some(d) => logdir.join(d),
            None => logdir.to_path_buf(),
        }
    }

    /// The name every rotation of `log` starts with (its name without its
    /// `extension`), and the extension rotated names keep at their end
    /// (`addextension` too, added to a name that lacks it: b -> b.1.log).
    pub fn rotation_base(&self, log: &std::path::Path) -> (String, String) {
        let mut base = log
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mut fileext = String::new();
        let ext = self.extension.as_deref().or(self.addextension.as_deref());
        if let Some(ext) = ext.filter(|e| !e.is_empty()) {
            if base.ends_with(ext) {
                base.truncate(base.len() - ext.len());
                fileext = ext.to_string();
            } else if self.addextension.is_some() {
                fileext = ext.to_string();
            }
        }
        (base, fileext)
    }

    /// `shred -u [-n N] -`, when `shred` is on.
    pub fn shred_command(&self) -> Option<Vec<String>> {
        self.shred.then(|| {
            let mut cmd = vec!["shred".to_string(), "-u".to_string()];
            if let Some(n) = self.shredcycles {
                cmd.extend(["-n".to_string(), n.to_string()]);
            }
            cmd.push("-".into());
            cmd
        })
    }

    /// The in-process gzip level: `compressoptions -N`, else compresslevel.
    pub fn gzip_level(&self) -> u32 {
        self.compressoptions
            .as_deref()
            .and_then(|o| o.trim().strip_prefix('-'))
            .and_then(|l| l.parse().ok())
            .unwrap_or(self.compresslevel)
    }

    /// The dateext format in effect.
    pub fn dateformat(&self) -> &str {
        match (&self.dateformat, self.freq) {
            (Some(f), _) => f,
            (None, Freq::Hourly) => "-%Y%m%d%H",
            (None, _) => "-%Y%m%d",
        }
    }
}
