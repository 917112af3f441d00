//! offsite: copies of verified backup sets in S3-compatible object
//! storage, and the way back when the server is gone.
//!
//! A remote set is the same directory of files under
//! `s3://BUCKET/PREFIX/<set>/`, its `MANIFEST.json` written last: a remote
//! set without its manifest does not exist, exactly as locally.

pub mod aws;
pub mod fetch;
pub mod list;
pub mod push;
pub mod remote_prune;
pub mod s3;
pub mod wal;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::records::OffsiteCounts;
use opskit::{Done, Emitter, Error, Result, units};

use crate::s3::{Options, Remote, Store};

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
///
/// The bucket URL comes from the command line or OPSKIT_OFFSITE_URL;
/// credentials, region and endpoint as the AWS tools read them
/// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE
/// with ~/.aws/credentials and ~/.aws/config, AWS_REGION, AWS_ENDPOINT_URL,
/// AWS_CA_BUNDLE). Secrets never appear in a record, a log line or argv.
///
/// Exit: 0 done; 1 a remote copy failed verification; 2 a set could not be
/// pushed, pulled or checked (endpoint, credentials, bucket, a conflicting
/// object); 64 usage.
#[derive(Debug, Parser)]
#[command(name = "offsite", version, verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// Where the sets go: s3://BUCKET[/PREFIX].
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
    /// directories); MANIFEST.json goes last. A rerun uploads only what is
    /// missing; an object already there with other content is an error,
    /// never overwritten.
    Push(push::PushArgs),
    /// Every set, local and remote, side by side.
    List(list::ListArgs),
    /// Download a remote set into a local backup root (staged, sha256
    /// checked, renamed into place).
    Pull(fetch::PullArgs),
    /// Re-read remote sets and check every byte against their manifests.
    Verify(fetch::VerifyArgs),
    /// Delete remote sets by prune's policy and safety rules, and the
    /// remote WAL no kept base set needs.
    Prune(remote_prune::PruneArgs),
    /// Copy the root's WAL archive (walarchive) to PREFIX/wal/: what is
    /// not there yet, each file's checksum file last. Run it every minute
    /// (opskit-wal-offsite.timer).
    PushWal(wal::PushWalArgs),
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
        Command::Verify(v) => fetch::verify(&args, v, em),
        Command::Prune(p) => remote_prune::run(&args, p, em),
        Command::PushWal(p) => wal::push(&args, p, em),
    }
}

impl Args {
    /// The store the URL names (`url` from the command line wins).
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
