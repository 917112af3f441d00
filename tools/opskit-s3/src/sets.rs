//! The sets under a store's prefix, as one listing of every object shows
//! them: `PREFIX/<set>/<file>`, a set complete once its `MANIFEST.json` is
//! there (it is written last), exactly as in a local root.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use opskit::Result;
use opskit::backupset::{self, MANIFEST};

use crate::Store;

/// A remote set as the bucket listing shows it.
#[derive(Debug, Clone)]
pub struct RemoteInfo {
    pub time: DateTime<Utc>,
    /// Has its MANIFEST.json.
    pub complete: bool,
    /// Every object's size, by file name.
    pub sizes: HashMap<String, u64>,
}

/// The remote sets, by name.
pub type RemoteSets = HashMap<String, RemoteInfo>;

/// Every set under the store's prefix (one listing of every object).
/// Objects that are not in a directory named as a set are not sets.
pub fn remote_sets(store: &Store) -> Result<RemoteSets> {
    let prefix = &store.remote.prefix;
    let (objects, _) = store.list(prefix, None)?;
    let mut out: RemoteSets = HashMap::new();
    for o in objects {
        let Some((set, file)) = o
            .key
            .strip_prefix(prefix.as_str())
            .and_then(|k| k.split_once('/'))
        else {
            continue;
        };
        let Some((_, time)) = backupset::parse_set_dir_name(set) else {
            continue;
        };
        let e = out.entry(set.to_string()).or_insert(RemoteInfo {
            time,
            complete: false,
            sizes: HashMap::new(),
        });
        if file == MANIFEST {
            e.complete = true;
        }
        e.sizes.insert(file.to_string(), o.size);
    }
    Ok(out)
}

/// The newest set for which `pred` holds: by time, then by name, so two
/// sets made in the same second give the same answer every time.
pub fn newest(
    sets: &RemoteSets,
    pred: impl Fn(&str, &RemoteInfo) -> bool,
) -> Option<(&str, &RemoteInfo)> {
    sets.iter()
        .filter(|(n, s)| pred(n, s))
        .max_by(|(a, x), (b, y)| x.time.cmp(&y.time).then_with(|| a.cmp(b)))
        .map(|(n, s)| (n.as_str(), s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_is_by_time_then_name() {
        let info = |t: &str, complete| RemoteInfo {
            time: backupset::parse_set_dir_name(&format!("x-{t}")).unwrap().1,
            complete,
            sizes: HashMap::new(),
        };
        let sets: RemoteSets = [
            ("app-20261123T030005Z", info("20261123T030005Z", true)),
            ("db-20261123T030005Z", info("20261123T030005Z", true)),
            ("app-20261122T030005Z", info("20261122T030005Z", true)),
            ("app-20261124T030005Z", info("20261124T030005Z", false)),
        ]
        .into_iter()
        .map(|(n, i)| (n.to_string(), i))
        .collect();
        let complete = newest(&sets, |_, s| s.complete).map(|(n, _)| n);
        assert_eq!(complete, Some("db-20261123T030005Z"));
        let app = newest(&sets, |n, s| s.complete && n.starts_with("app-")).map(|(n, _)| n);
        assert_eq!(app, Some("app-20261123T030005Z"));
        assert!(newest(&sets, |_, _| false).is_none());
    }
}
