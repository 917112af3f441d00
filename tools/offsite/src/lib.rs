//! offsite: copies of verified backup sets in S3-compatible object
//! storage, and the way back when the server is gone.
//!
//! A remote set is the same directory of files under
//! `s3://BUCKET/PREFIX/<set>/`, its `MANIFEST.json` written last: a remote
//! set without its manifest does not exist, exactly as locally.
//!
//! The S3 client (AWS settings, signed requests, the listing of remote
//! sets) is the `opskit-s3` crate, which healthcheck's `offsite:` check
//! shares; this crate holds offsite's commands.

mod fetch;
mod list;
mod push;
mod remote;
mod remote_prune;
mod upload;
mod verify;
mod wal;
mod walmark;
mod window;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::records::OffsiteCounts;
use opskit::{Done, Emitter, Error, Result, units};
use opskit_s3::{Options, Remote, Store, aws};

/// Copy verified backup sets to S3-compatible object storage (AWS S3,
/// MinIO, Ceph, Backblaze B2, Wasabi, SeaweedFS), list them, verify the
/// copies, prune them, and pull one back.
///
///   pgbackup --dest /b --encrypt-to age1... | verify-backup --record | offsite push s3://backups/app
///   offsite list --table                 local and remote sets side by side
///   offsite pull latest --dest /var/backups/opskit
///   offsite verify --sample 0.1          re-read a tenth of the remote files
///   offsite prune --keep-daily 7 --keep-weekly 4
///   offsite push-wal                     the WAL archive, every minute
///   offsite window --table               the points in time the bucket recovers to
///
/// The bucket URL comes first on the command line of every subcommand
/// (`offsite list s3://backups/app`), or from --url or OPSKIT_OFFSITE_URL;
/// credentials, region and endpoint as the AWS tools read them
/// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE
/// with ~/.aws/credentials and ~/.aws/config, AWS_REGION, AWS_ENDPOINT_URL,
/// AWS_CA_BUNDLE). Secrets never appear in a record, a log line or argv.
///
/// pull and verify believe a remote set only when its MANIFEST.json is
/// signed (MANIFEST.json.minisig, pushed with the set) by a key in
/// OPSKIT_SIGNING_PUBKEYS (--signing-pubkeys), for the set's own name;
/// --allow-unsigned accepts sets made before signing was set up.
///
/// Exit: 0 done; 1 a remote copy failed verification, or pull refused a
/// set whose signature does not verify (changed after signing, signed by a
/// key that is not trusted, not signed); 2 a set could not be pushed,
/// pulled or checked (endpoint, credentials, bucket, a conflicting object,
/// a local file that changed since it was verified); 64 usage, or no
/// public key and no --allow-unsigned for pull and verify.
#[derive(Debug, Parser)]
#[command(name = "offsite", version, verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Where the sets go: s3://BUCKET[/PREFIX] (an s3:// operand, which
    /// every subcommand takes first, wins).
    #[arg(long, value_name = "URL", env = "OPSKIT_OFFSITE_URL", global = true)]
    pub url: Option<String>,

    /// The S3 endpoint (default: AWS_ENDPOINT_URL, else AWS's for the region).
    #[arg(long, value_name = "URL", global = true)]
    pub endpoint: Option<String>,

    /// Path-style addressing (endpoint/bucket/key), for servers that have
    /// no per-bucket host names; always used for an address or localhost.
    #[arg(long, env = "OPSKIT_S3_PATH_STYLE", global = true)]
    pub path_style: bool,

    /// Also trust the CA certificates in this PEM file (AWS_CA_BUNDLE too).
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,

    /// Give up on a connection or an answer after this long.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::duration_arg, global = true)]
    pub timeout: Duration,

    /// The local backup root (verification results, `list`'s local side).
    #[arg(long, value_name = "DIR", env = "OPSKIT_BACKUP_ROOT", global = true)]
    pub root: Option<PathBuf>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Upload sets that passed verification (records on stdin, or set
    /// directories) with their signatures; MANIFEST.json goes last. A
    /// rerun uploads only what is missing; an object already there with
    /// other content is an error, never overwritten.
    Push(push::PushArgs),
    /// Every set, local and remote, side by side.
    List(list::ListArgs),
    /// Download a remote set into a local backup root (staged, sha256
    /// checked, renamed into place), once its signature is checked.
    ///
    /// Its MANIFEST.json must be signed by one of the trusted keys
    /// (--signing-pubkeys, OPSKIT_SIGNING_PUBKEYS) for its own name
    /// before anything in it is used.
    ///
    /// Exit: 0 pulled; 1 refused: the set's signature does not verify
    /// (its manifest was changed after signing, a key that is not trusted
    /// signed it, or it is not signed and --allow-unsigned was not given)
    /// or its manifest is not valid; 2 the set could not be pulled (no
    /// such set, a damaged file, the endpoint, the disk); 64 usage, or no
    /// public key and no --allow-unsigned. Nothing is left in the
    /// destination unless the pull succeeded.
    Pull(fetch::PullArgs),
    /// Re-read remote sets and check every byte against their manifests,
    /// the manifest's signature first (a bad one is a problem: exit 1).
    Verify(verify::VerifyArgs),
    /// Delete remote sets by prune's policy and safety rules, and the
    /// remote WAL no kept base set needs.
    Prune(Box<remote_prune::PruneArgs>),
    /// Copy the root's WAL archive (walarchive) to PREFIX/wal/: what is
    /// not there yet, each file's checksum file last. Run it every minute
    /// (opskit-wal-offsite.timer).
    PushWal(wal::PushWalArgs),
    /// The points in time the bucket recovers to (and the root, with
    /// --root): dump sets, and the ranges of point-in-time recovery from
    /// each base set through the WAL copied by push-wal, to the last
    /// transaction archived.
    Window(window::WindowArgs),
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

/// Run the subcommand.
pub fn run(args: Args, em: &mut Emitter) -> Result<Done<OffsiteCounts>> {
    match &args.command {
        Command::Push(p) => push::run(&args, p, em),
        Command::List(l) => list::run(&args, l, em),
        Command::Pull(p) => fetch::pull(&args, p, em),
        Command::Verify(v) => verify::verify(&args, v, em),
        Command::Prune(p) => remote_prune::run(&args, p, em),
        Command::PushWal(p) => wal::push(&args, p, em),
        Command::Window(w) => window::run(&args, w, em),
    }
}

/// A leading `s3://` operand (the bucket URL, which every subcommand
/// takes first) and the operands after it; a second URL is a usage error
/// (a set directory whose path starts with `s3:` is written `./s3:…`).
pub(crate) fn operands(ops: &[String]) -> Result<(Option<&str>, &[String])> {
    let (url, rest) = match ops.first() {
        Some(u) if u.starts_with("s3://") => (Some(u.as_str()), &ops[1..]),
        _ => (None, ops),
    };
    if let Some(other) = rest.iter().find(|o| o.starts_with("s3://")) {
        return Err(Error::usage(format!(
            "'{}': one bucket URL, first (then set names or directories)",
            opskit::pgconn::redact(other)
        )));
    }
    Ok((url, rest))
}

impl Args {
    /// The store the URL names (an operand wins over --url).
    pub fn store(&self, url: Option<&str>) -> Result<Store> {
        let url = url.or(self.url.as_deref()).ok_or_else(|| {
            Error::usage("no bucket URL: give s3://BUCKET[/PREFIX] or set OPSKIT_OFFSITE_URL")
        })?;
        let remote = Remote::parse(url)?;
        let mut settings = aws::from_env()?;
        if let Some(e) = &self.endpoint {
            settings.endpoint = Some(e.clone());
        }
        Store::new(
            remote,
            Options {
                settings,
                path_style: self.path_style,
                ca: self.ca.clone(),
                timeout: self.timeout,
            },
        )
    }
}
