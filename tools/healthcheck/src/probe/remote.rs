//! `offsite:s3://BUCKET/PREFIX`: the copies offsite keeps in object
//! storage, read with offsite's own listing (credentials and endpoint as
//! the AWS tools read them).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use offsite::s3::{Options, Remote, Store};

use super::Observation;
use crate::spec::Check;

pub fn offsite(c: &Check) -> Result<Observation, String> {
    let url = c.target.split_once(':').map(|(_, u)| u).unwrap_or("");
    let remote = Remote::parse(url).map_err(|e| e.msg)?;
    let settings = offsite::aws::from_env().map_err(|e| e.msg)?;
    let path_style = std::env::var("OPSKIT_S3_PATH_STYLE").is_ok_and(|v| v == "1" || v == "true");
    let store = Store::new(
        remote,
        Options {
            settings,
            path_style,
            ca: None,
            timeout: c.timeout,
        },
    )
    .map_err(|e| e.msg)?;
    let sets = offsite::list::remote_sets(&store).map_err(|e| e.msg)?;
    let complete: Vec<(&String, DateTime<Utc>)> = sets
        .iter()
        .filter(|(_, s)| s.complete)
        .map(|(n, s)| (n, s.time))
        .collect();
    let newest = complete.iter().max_by_key(|(n, t)| (*t, (*n).clone()));
    // The verdicts of `offsite verify --record` in the local backup root.
    let root = std::env::var_os("OPSKIT_BACKUP_ROOT").map(PathBuf::from);
    let verdicts = offsite::fetch::remote_verdicts(root.as_deref());
    let verified = complete
        .iter()
        .filter(|(n, _)| verdicts.get(*n) == Some(&true))
        .max_by_key(|(n, t)| (*t, (*n).clone()));
    let age = |t: DateTime<Utc>| ((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0);
    let mut obs = Observation::default();
    obs.set("sets", complete.len());
    obs.set("incomplete", sets.len() - complete.len());
    obs.set("newest", newest.map(|(n, _)| (*n).clone()));
    obs.set("age_s", newest.map(|(_, t)| age(*t)));
    obs.set("verified", verified.map(|(n, _)| (*n).clone()));
    obs.set("verified_age_s", verified.map(|(_, t)| age(*t)));
    obs.summary = match newest {
        None => format!("no complete set in {}", store.remote.url("")),
        Some((n, t)) => format!(
            "{} sets in {}; newest {n} is {:.1} h old",
            complete.len(),
            store.remote.url(""),
            age(*t) / 3600.0
        ),
    };
    Ok(obs)
}
