//! The common `main` of every tool: parse arguments (a bad one is a one-line
//! error and exit 64, or 3 for healthcheck), set up logging and the record
//! stream, run, and turn the outcome into an exit status and, for an error,
//! an `error` record.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Args, Parser};

use serde::Serialize;

use crate::record::{Done, Emitter};
use crate::records::{ErrorRecord, Failed};
use crate::{Error, Exit, logging};

/// `-v`/`-q`, flattened into every tool's arguments.
#[derive(Debug, Clone, Default, Args)]
pub struct Verbosity {
    /// More detail on stderr (-v debug, -vv trace); overrides OPSKIT_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less on stderr (-q warnings only, -qq errors only; either hides
    /// progress). Long runs show progress on stderr: a bar on a terminal,
    /// else a line every OPSKIT_PROGRESS_EVERY (default 30s; 0 for none).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

impl Verbosity {
    pub fn level(&self) -> i8 {
        (self.verbose.min(10) as i8) - (self.quiet.min(10) as i8)
    }
    pub fn explicit(&self) -> bool {
        self.verbose > 0 || self.quiet > 0
    }
}

/// Which signatures a reader of sets or WAL trusts, flattened into the
/// arguments of every tool that reads them.
#[derive(Debug, Clone, Default, Args)]
pub struct TrustArgs {
    /// The public keys that may sign sets and WAL (minisign `RW…` keys or
    /// .pub files, comma-separated). A set's MANIFEST.json (and an archived
    /// WAL file's checksum) must be signed by one of them, for its own
    /// name; nothing else in it is read before that check.
    #[arg(long, value_name = "KEYS", env = "OPSKIT_SIGNING_PUBKEYS")]
    pub signing_pubkeys: Option<String>,

    /// The public keys that may sign base sets and WAL (the database
    /// server user's key); default: those of --signing-pubkeys. Kept apart,
    /// the postgres user's key cannot sign a dump that root restores.
    #[arg(long, value_name = "KEYS", env = "OPSKIT_PITR_SIGNING_PUBKEYS")]
    pub pitr_signing_pubkeys: Option<String>,

    /// Accept what nobody signed (sets and WAL made before signing was set
    /// up); a signature that is there is still checked when keys are given.
    #[arg(long, env = "OPSKIT_ALLOW_UNSIGNED")]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    /// The trust these arguments give; no key and no `--allow-unsigned`
    /// is a usage error that says what to set.
    pub fn trust(&self) -> crate::Result<crate::sign::Trust> {
        crate::sign::Trust::new(
            self.signing_pubkeys.as_deref(),
            self.pitr_signing_pubkeys.as_deref(),
            self.allow_unsigned,
        )
    }
}

/// Implemented by each tool's argument struct.
pub trait ToolArgs: Parser {
    fn verbosity(&self) -> &Verbosity;
}

/// What parsing the arguments came to, when it is not a run: help or
/// version printed (exit 0), or a one-line usage error (exit `usage_exit`).
pub fn parse<A: Parser>(tool: &str, usage_exit: Exit) -> Result<A, ExitCode> {
    match A::try_parse() {
        Ok(a) => Ok(a),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = e.print();
                Err(ExitCode::SUCCESS)
            }
            _ => {
                eprintln!("{tool}: {} (see {tool} --help)", one_line(&e));
                Err(usage_exit.into())
            }
        },
    }
}

/// A clap error in one line, without its "error: " prefix; a first line
/// ending in ':' takes the indented lines that follow it ("the following
/// required arguments were not provided: --dest <DIR>").
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let mut out = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if out.ends_with(':') {
        let more: Vec<&str> = lines
            .take_while(|l| l.starts_with(' '))
            .map(str::trim)
            .collect();
        out = format!("{} {}", out, more.join(", "));
    }
    out
}

/// Report the error that ended a run: one line on stderr, an `error`
/// record, and the closing `summary` (the last record of every run).
pub fn report(em: &mut Emitter, err: &Error) {
    log::error!("{}", err.msg);
    let code = err.exit.code();
    // The stream may be what failed; there is nothing more to tell then.
    let _ = em
        .emit(&ErrorRecord::new(err.msg.clone()).exit(code))
        .and_then(|()| {
            em.summary(
                false,
                Failed {
                    exit: code,
                    errors: 1,
                },
            )
        });
}

/// The whole `main` of a tool.
///
/// `run` gets the parsed arguments and the record stream and returns the
/// status and counts of a completed run, or the error that ended it; either
/// way the run's last record is its `summary`, written here. Nothing below
/// `main` ends the process, so every cleanup guard of the run has been
/// dropped by the time this returns.
pub fn main<A: ToolArgs, C: Serialize>(
    tool: &'static str,
    usage_exit: Exit,
    run: impl FnOnce(A, &mut Emitter) -> Result<Done<C>, Error>,
) -> ExitCode {
    let args: A = match parse(tool, usage_exit) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let v = args.verbosity();
    logging::init(tool, v.level(), v.explicit());
    crate::durable::ignore_sigxfsz();
    let mut em = Emitter::stdout(tool);
    let res = run(args, &mut em).and_then(|done| {
        em.summary(done.exit == Exit::Ok, done.counts)
            .map(|()| done.exit)
    });
    match res {
        Ok(exit) => exit.into(),
        Err(err) if err.is_stdout_closed() => ExitCode::SUCCESS,
        Err(mut err) => {
            if err.exit == Exit::Usage {
                err.exit = usage_exit;
            }
            report(&mut em, &err);
            err.exit.into()
        }
    }
}
