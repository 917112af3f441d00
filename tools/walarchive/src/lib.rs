//! walarchive: PostgreSQL's `archive_command` and `restore_command`, into
//! the backup root, with PostgreSQL's rules for an archive command:
//!
//! * exit 0 only once the file is stored durably (written to a temporary
//!   name, fsynced, renamed, directory fsynced);
//! * a file archived before with the same content is success (the server
//!   archives again after a crash); with other content it is a failure
//!   naming both, and nothing is overwritten;
//! * any error (a full disk, a signal) is a non-zero exit and leaves no
//!   half file under the archived name.
//!
//! A WAL file `%f` is stored as `ROOT/wal/<timeline>/%f.zst` (`.age` when
//! encrypted) beside `%f.sha256`, which holds the original's sha256 and
//! size and is written last: a file without its `.sha256` is not archived.

pub(crate) mod recover;
pub(crate) mod store;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use opskit::cli::{ToolArgs, Verbosity};
use opskit::codec::Compression;
use opskit::records::WalCounts;
use opskit::{Done, Emitter, Exit, Result};

/// Archive PostgreSQL WAL into the backup root, and hand it back during
/// recovery.
///
/// postgresql.conf:
///   archive_mode = on
///   archive_command = 'walarchive push %p %f --root /var/backups/opskit'
///   restore_command = 'walarchive fetch %f %p --root /var/backups/opskit'
///
/// push exits 0 only when the file is stored durably; the same file again
/// is success, another file under the same name is a failure and is never
/// overwritten. fetch exits 1 when the file is not in the archive (normal
/// at the end of recovery) and checks what it hands back against the
/// sha256 taken when it was archived.
///
/// restore prepares a new data directory for point-in-time recovery from
/// the newest verified base set (pgbackup --physical) that ended before the
/// target; restore-system.sh --to TIME starts it and checks it.
///
/// window shows the points in time the root recovers to: every dump set,
/// and the ranges each verified base set reaches through the archive, up
/// to the last transaction archived (read from the WAL at push).
///
/// Exit: 0 done; 1 fetch: not archived; 2 not stored or not handed back
/// (full disk, a different file under the same name, damage); 64 usage.
#[derive(Debug, Parser)]
#[command(name = "walarchive", version, verbatim_doc_comment)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,

    /// The backup root (the archive is ROOT/wal/).
    #[arg(long, value_name = "DIR", env = "OPSKIT_BACKUP_ROOT", global = true)]
    pub root: Option<PathBuf>,

    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive one WAL file (archive_command: push %p %f).
    Push {
        /// The file's path (%p).
        path: PathBuf,
        /// Its name (%f).
        name: String,
        /// Compression: zstd[:1-19] (default), gzip[:1-9] or none.
        #[arg(long, value_name = "CODEC[:LEVEL]", default_value = "zstd", value_parser = Compression::parse)]
        compress: Compression,
        /// Encrypt to this age public key (repeatable; OPSKIT_AGE_RECIPIENTS).
        #[arg(long, value_name = "RECIPIENT", env = "OPSKIT_AGE_RECIPIENTS")]
        encrypt_to: Vec<String>,
        /// Encrypt to the keys of this age recipients file.
        #[arg(long, value_name = "FILE", env = "OPSKIT_AGE_RECIPIENTS_FILE")]
        encrypt_to_file: Vec<PathBuf>,
        /// Archive in plaintext although the root holds encrypted sets
        /// (refused otherwise: every row written since the base set would
        /// lie unencrypted beside it).
        #[arg(long)]
        allow_unencrypted: bool,
        /// Sign each file's checksum with this minisign secret key (mode
        /// 0600, readable by the server's user); fetch checks it against
        /// OPSKIT_SIGNING_PUBKEYS.
        #[arg(long, value_name = "FILE", env = "OPSKIT_SIGNING_KEY")]
        signing_key: Option<PathBuf>,
    },
    /// Hand one archived WAL file back (restore_command: fetch %f %p).
    Fetch {
        /// Its name (%f).
        name: String,
        /// Where to put it (%p).
        path: PathBuf,
        /// The age identity file for an encrypted archive (mode 0600).
        #[arg(long, value_name = "FILE", env = "OPSKIT_AGE_IDENTITY")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        trust: opskit::cli::TrustArgs,
    },
    /// Prepare a new data directory to recover to a point in time: a base
    /// set unpacked and checked by pg_verifybackup, recovery.signal, and
    /// restore_command/recovery_target_* settings (promote at the target).
    Restore {
        /// Recover up to this time (2026-12-04T14:03:00Z; no zone: UTC).
        #[arg(long, value_name = "TIME", value_parser = recover::parse_time, required_unless_present_any = ["latest", "immediate"])]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Recover every archived segment.
        #[arg(long, conflicts_with_all = ["to", "immediate"])]
        latest: bool,
        /// Recover only to the base set's own consistent point.
        #[arg(long, conflicts_with = "to")]
        immediate: bool,
        /// The new data directory (must not exist).
        #[arg(long, value_name = "DIR")]
        pgdata: PathBuf,
        /// The base set to start from (default: the newest verified one
        /// that ended before the target).
        #[arg(long, value_name = "SET")]
        set: Option<String>,
        /// The age identity file for an encrypted base set and archive.
        #[arg(long, value_name = "FILE", env = "OPSKIT_AGE_IDENTITY")]
        identity: Option<PathBuf>,
        /// Directory of pg_verifybackup (default: the one matching the set).
        #[arg(long, value_name = "DIR")]
        pg_bindir: Option<PathBuf>,
        #[command(flatten)]
        trust: opskit::cli::TrustArgs,
    },
    /// The settings a copy recovering in DIR needs at least the primary's
    /// values of (max_connections, max_worker_processes, max_wal_senders,
    /// max_prepared_transactions, max_locks_per_transaction), as its
    /// control file has them (the recovery writes each change it replays
    /// there), read with pg_controldata: a `control_settings` record whose
    /// `options` restore-pitr.sh restarts a copy that paused for them with.
    ControlSettings {
        /// The data directory (of a stopped or running cluster).
        #[arg(long, value_name = "DIR")]
        pgdata: PathBuf,
        /// Directory of pg_controldata (default: the one matching the
        /// data directory's PG_VERSION).
        #[arg(long, value_name = "DIR", env = "OPSKIT_PG_BINDIR")]
        pg_bindir: Option<PathBuf>,
    },
    /// The points in time the root recovers to: dump sets, and the
    /// continuous ranges of point-in-time recovery from each verified base
    /// set to the last transaction archived with no segment missing.
    Window {
        /// Lines for a person instead of a record.
        #[arg(long)]
        table: bool,
    },
}

impl ToolArgs for Args {
    fn verbosity(&self) -> &Verbosity {
        &self.verbosity
    }
}

pub fn run(args: Args, em: &mut Emitter) -> Result<Done<WalCounts>> {
    // The one command that reads no archive.
    if let Command::ControlSettings { pgdata, pg_bindir } = &args.command {
        return recover::control(pgdata, pg_bindir.as_deref(), em);
    }
    let root = args.root.clone().ok_or_else(|| {
        opskit::Error::usage("no archive: give --root DIR or set OPSKIT_BACKUP_ROOT")
    })?;
    let archive = store::Archive::new(&root);
    match &args.command {
        Command::Push {
            path,
            name,
            compress,
            encrypt_to,
            encrypt_to_file,
            allow_unencrypted,
            signing_key,
        } => {
            let seal = opskit::crypt::Recipients::gather(encrypt_to, encrypt_to_file)?;
            if seal.is_none() && !allow_unencrypted {
                store::refuse_plaintext(&root)?;
            }
            let key = opskit::sign::SigningKey::from_arg(signing_key.as_deref())?;
            let how = store::Push {
                compression: *compress,
                seal: seal.as_ref(),
                key: key.as_ref(),
            };
            archive.push(path, name, &how, em)
        }
        Command::Fetch {
            name,
            path,
            identity,
            trust,
        } => {
            let trust = trust.trust()?;
            let ids = identity
                .as_deref()
                .map(opskit::crypt::Identities::load)
                .transpose()?;
            archive.fetch(name, path, ids.as_ref(), &trust, em)
        }
        Command::Restore {
            to,
            latest,
            immediate,
            pgdata,
            set,
            identity,
            pg_bindir,
            trust,
        } => {
            let trust = trust.trust()?;
            let ids = identity
                .as_deref()
                .map(opskit::crypt::Identities::load)
                .transpose()?;
            let target = match (to, latest, immediate) {
                (Some(t), _, _) => recover::Target::Time(*t),
                (None, true, _) => recover::Target::Latest,
                _ => recover::Target::Immediate,
            };
            let req = recover::Request {
                root: &root,
                target,
                pgdata,
                set: set.as_deref(),
                ids: ids.as_ref(),
                bindir: pg_bindir.as_deref(),
                trust: &trust,
            };
            recover::restore(&req, em)
        }
        Command::ControlSettings { .. } => unreachable!("handled above"),
        Command::Window { table } => {
            let w = opskit::window::local(&root)?;
            if *table {
                print!("{}", opskit::window::table(&w));
                em.mute();
            } else {
                em.emit(&w)?;
            }
            Ok(Done::new(
                Exit::Ok,
                WalCounts {
                    files: w.base_sets + w.dump_sets,
                    bytes: 0,
                },
            ))
        }
    }
}
