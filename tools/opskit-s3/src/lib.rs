//! opskit-s3: the S3 client opskit's tools share (offsite copies sets to
//! object storage and back; healthcheck's `offsite:` check looks at them).
//!
//! * [`aws`]: credentials, region and endpoint, found where the AWS tools
//!   look, never shown;
//! * [`Remote`]: an `s3://BUCKET/PREFIX` URL, and the keys of a set's files;
//! * [`Store`]: one bucket on one endpoint: signed head, conditional put,
//!   multipart uploads, get, list, delete, each failure one line naming the
//!   endpoint, the bucket and the object;
//! * [`sets`]: the sets under a prefix (complete once their `MANIFEST.json`
//!   is there) and the newest of them.
//!
//! What offsite does with a store (push, pull, verify, prune) stays in
//! offsite; what a remote set's verification said is in the backup root's
//! verdict log ([`opskit::verdicts`]).

pub mod aws;
mod remote;
pub mod sets;
mod store;

pub use remote::Remote;
pub use store::{Object, Options, Put, Store, Unfinished, retain_until};
