//! logrotate-lite: logrotate's configuration language and results,
//! crash-safe, without losing lines, and faster.

mod at;
mod block;
mod config;
mod decide;
mod exec;
mod journal;
mod plan;
mod replay;
mod report;
mod run;
mod state;
mod su;
mod taboo;

use std::path::PathBuf;

use clap::Parser;
use opskit::cli::{ToolArgs, Verbosity};
use opskit::records::{ErrorRecord, RotateCounts};
use opskit::{Done, Emitter, Error, Exit};

/// Rotate logs as logrotate does, from logrotate's own config files and
/// state file (so either tool can take over from the other), but
/// crash-safe: compressed files appear only complete, a run killed
/// half-way is finished by the next, and copytruncate copies what was
/// written during the copy before it truncates.
///
/// Prints a `rotate` record per log considered, `script` records, and a
/// `summary`. Every directive of logrotate 3.21, with its meaning (each
/// tested against Debian's logrotate): daily weekly monthly yearly hourly,
/// size minsize maxsize minage maxage, rotate start, compress nocompress
/// delaycompress compresscmd uncompresscmd compressoptions compressext,
/// copytruncate copy renamecopy create nocreate, missingok ifempty
/// notifempty, dateext dateformat dateyesterday datehourago extension
/// addextension, olddir createolddir, sharedscripts prerotate postrotate
/// firstaction lastaction preremove, mail mailfirst maillast nomail, shred
/// shredcycles, su, allowhardlink, ignoreduplicates, include tabooext
/// taboopat (and their no- forms); plus compresslevel (gzip in-process).
/// Deliberate differences from logrotate 3.21:
///   - an unknown directive is an error naming file:line that skips its
///     block (logrotate ignores the line and rotates the block anyway);
///     the other blocks still run;
///   - `createolddir` without a mode makes the directory 0755 (logrotate
///     3.21 makes it 07777: world-writable, setuid, setgid and sticky);
///   - a shared script (sharedscripts prerotate/postrotate, firstaction,
///     lastaction) gets the block's patterns joined by one space as $1,
///     without the trailing space logrotate 3.21 adds (3.22 drops it too).
///
/// Without a config file, for one-off use:
///   logrotate-lite --rotate 7 --compress --copytruncate /var/log/app/*.log
///
/// Exit: 0 done; 1 something was wrong (a config error, a log that could
/// not be rotated, a failed script); 2 could not run (state file locked or
/// unwritable); 64 usage (and --check finding errors).
#[derive(Debug, Parser)]
#[command(name = "logrotate-lite", version, verbatim_doc_comment)]
pub struct Args {
    /// Config files (or directories), or with --rotate: the logs themselves.
    #[arg(value_name = "CONFIG")]
    pub paths: Vec<PathBuf>,

    /// Rotate every log now, whether due or not.
    #[arg(short, long)]
    pub force: bool,

    /// Say what would be done; change nothing.
    #[arg(short, long = "dry-run", alias = "debug")]
    pub dry_run: bool,

    /// logrotate's state file.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "/var/lib/logrotate/status"
    )]
    pub state: PathBuf,

    /// Only check the config files, then exit.
    #[arg(long)]
    pub check: bool,

    /// The program that mails logs for `mail` (logrotate's -m): run as
    /// COMMAND -s SUBJECT ADDRESS with the log on stdin.
    #[arg(short, long, value_name = "COMMAND", default_value = "/usr/bin/mail")]
    pub mail: String,

    /// One-off rotation of the logs given (no config file): keep N.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub rotate: Option<i64>,

    /// One-off: gzip rotated logs.
    #[arg(long, requires = "rotate")]
    pub compress: bool,

    /// One-off: leave the newest rotated log uncompressed.
    #[arg(long, requires = "rotate")]
    pub delaycompress: bool,

    /// One-off: copy the log, then truncate it in place.
    #[arg(long, requires = "rotate")]
    pub copytruncate: bool,

    /// One-off: create a new empty log after moving the old one away.
    #[arg(long, requires = "rotate")]
    pub create: bool,

    /// One-off: no error for a log that does not exist.
    #[arg(long, requires = "rotate")]
    pub missingok: bool,

    /// One-off: do not rotate empty logs.
    #[arg(long, requires = "rotate")]
    pub notifempty: bool,

    /// One-off: name rotated logs by date (-YYYYMMDD) instead of number.
    #[arg(long, requires = "rotate")]
    pub dateext: bool,

    /// One-off: rotate only logs at least this big (e.g. 100M).
    #[arg(long, value_name = "SIZE", requires = "rotate")]
    pub size: Option<String>,

    /// Write this run's outcome as Prometheus metrics to FILE (atomically;
    /// node_exporter's textfile directory): when it ran, whether it
    /// succeeded, the logs rotated and failed.
    #[arg(long, value_name = "FILE")]
    pub prometheus: Option<PathBuf>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// The config the command line describes.
fn one_off(args: &Args, rotate: i64) -> config::Config {
    let mut directives = vec![("rotate", vec![rotate.to_string()])];
    for (on, d) in [
        (args.compress, "compress"),
        (args.delaycompress, "delaycompress"),
        (args.copytruncate, "copytruncate"),
        (args.create, "create"),
        (args.missingok, "missingok"),
        (args.notifempty, "notifempty"),
        (args.dateext, "dateext"),
    ] {
        if on {
            directives.push((d, vec![]));
        }
    }
    if let Some(s) = &args.size {
        directives.push(("size", vec![s.clone()]));
    }
    config::one_off(&args.paths, &directives)
}

/// Run the tool.
pub fn run(args: Args, em: &mut Emitter) -> Result<Done<RotateCounts>, Error> {
    if args.paths.is_empty() {
        return Err(Error::usage(
            "give a CONFIG file, or --rotate N and the logs to rotate",
        ));
    }
    let cfg = match args.rotate {
        Some(n) => one_off(&args, n),
        None => config::load(&args.paths),
    };
    for w in &cfg.warnings {
        log::warn!("{}: {}", w.at, w.msg);
    }
    for e in &cfg.errors {
        log::error!("{}: {}", e.at, e.msg);
        em.emit(&ErrorRecord::new(format!("{}: {}", e.at, e.msg)).at(e.at.clone()))?;
    }
    if args.check {
        let exit = if cfg.errors.is_empty() {
            Exit::Ok
        } else {
            Exit::Usage
        };
        let counts = RotateCounts {
            blocks: Some(cfg.blocks.len()),
            errors: cfg.errors.len(),
            ..RotateCounts::default()
        };
        return Ok(Done::new(exit, counts));
    }
    // One-off runs have no interval: they rotate now, unless --size says when.
    let force = args.force || (args.rotate.is_some() && args.size.is_none());
    let mut cfg = cfg;
    for b in &mut cfg.blocks {
        b.opts.mailcmd = args.mail.clone();
    }
    let done = run::run(&cfg, &args.state, force, args.dry_run, em);
    if let (Some(file), false) = (&args.prometheus, args.dry_run) {
        // A run that could not go on is a failed run: never a stale success.
        let failed = Done::new(Exit::Failure, RotateCounts::default());
        let text = metrics(done.as_ref().unwrap_or(&failed));
        opskit::durable::write_file(file, 0o644, text.as_bytes())?;
    }
    done
}

/// The run's outcome as Prometheus text (`--prometheus`).
fn metrics(done: &Done<RotateCounts>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let c = &done.counts;
    let rows = [
        (
            "last_run_timestamp_seconds",
            "When logrotate-lite last ran.",
            now as f64,
        ),
        (
            "success",
            "1 when the last run rotated every log it had to without an error.",
            f64::from(u8::from(done.exit == Exit::Ok)),
        ),
        (
            "rotated_logs",
            "Logs rotated by the last run.",
            c.rotated.unwrap_or(0) as f64,
        ),
        (
            "failed_logs",
            "Logs the last run failed to rotate.",
            c.failed.unwrap_or(0) as f64,
        ),
    ];
    rows.iter()
        .map(|(name, help, v)| {
            format!("# HELP opskit_logrotate_{name} {help}\n# TYPE opskit_logrotate_{name} gauge\nopskit_logrotate_{name} {v}\n")
        })
        .collect()
}
