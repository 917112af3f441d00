//! The library every opskit tool shares.
//!
//! It holds exactly what each tool needs and nothing tool-specific:
//!
//! * [`record`]: the NDJSON record stream on stdout, [`records`] the type of
//!   every record kind, and [`reader`] for the records a tool consumes;
//! * [`backupset`]: the backup-set layout and manifest, and which sets are
//!   trusted (their signature);
//! * [`root`]: what a backup root holds (sets, leftovers, the rest), read one
//!   way by every tool, and [`verdicts`] its verification logs (the latest
//!   verdict of each set);
//! * [`retention`]: the retention policy, restic's `forget` rules as one
//!   pure function over (name, series, time, verdict);
//! * [`exit`]: the exit codes of the design and the error type that maps to them;
//! * [`logging`]: human logs on stderr behind the `log` crate;
//! * [`durable`]: temp + fsync + rename writes for files and directories;
//! * [`lock`]: an exclusive `flock` lock file that names its holder;
//! * [`pgconn`]: PostgreSQL connection settings resolved the way libpq does
//!   (TLS included), and [`certs`] the system's CA bundle and PEM files;
//! * [`gz`]: parallel multi-member gzip and sha256 while streaming;
//! * [`codec`]: `--compress` values, and the writer and reader of each codec;
//! * [`crypt`]: age encryption of set files (recipients, identities);
//! * [`migrations`]: where a database stands against its migration files
//!   (`migrate` applies them, healthcheck counts what is pending);
//! * [`pgcatalog`]: the tables a dump carries and their row counts;
//! * [`pgtools`]: the real `pg_dump`/`pg_restore` matching a server;
//! * [`physical`]: base sets: WAL positions, the tar's `backup_manifest`, unpacking;
//! * [`walstore`]: the WAL archive's layout (names, checksum files, temp
//!   names, the push lock, segment arithmetic) and its survey;
//! * [`walchain`]: whether the WAL archive holds every segment a base set needs;
//! * [`recovery`]: the settings forced on a cluster started from a base set;
//! * [`restrict`]: SQL from a set fed to psql under `\restrict`;
//! * [`safefs`]: opening files in directories others can write (no symlink,
//!   no hard link, no FIFO, bounded reads, private configuration files);
//! * [`sidecar`]: the (signed) checksum file of an archived WAL file;
//! * [`sign`]: minisign signatures of set manifests and WAL checksums;
//! * [`untar`]: unpacking a tar from a set without owners, special bits,
//!   devices or escapes;
//! * [`units`]: durations (`90s`, `7d`) and sizes (`10M`);
//! * [`pool`]: bounded work on every core, and one call under a deadline;
//! * [`sys`]: users, groups, euid and the host name;
//! * [`cli`]: the common `main` of every tool.

pub mod backupset;
pub mod certs;
pub mod chain;
pub mod cli;
pub mod codec;
pub mod crypt;
pub mod durable;
pub mod exit;
pub mod gz;
pub mod lock;
pub mod logging;
pub mod migrations;
pub mod pgcatalog;
pub mod pgconn;
pub mod pgtools;
pub mod physical;
pub mod pool;
pub mod progress;
pub mod reader;
pub mod record;
pub mod records;
pub mod recovery;
pub mod restrict;
pub mod retention;
pub mod root;
pub mod safefs;
pub mod sidecar;
pub mod sign;
pub mod sys;
pub mod tartap;
pub mod units;
pub mod untar;
pub mod upstream;
pub mod verdicts;
pub mod walchain;
pub mod waldump;
pub mod walstore;
pub mod window;

pub use exit::{Error, Exit, IoContext, Result};
pub use record::{Done, Emitter};
