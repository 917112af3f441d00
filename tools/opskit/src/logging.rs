//! Human-readable logs on stderr, behind the `log` crate.
//!
//! The level comes from `-v`/`-q` when given, else from `OPSKIT_LOG` (an
//! `env_logger` filter such as `debug` or `pgbackup=trace`), else `info`.

use std::io::Write;

use log::LevelFilter;

/// Level for a verbosity count: `-q` → warn, `-qq` → error, `-v` → debug,
/// `-vv` → trace; 0 → info.
pub fn level_for(verbosity: i8) -> LevelFilter {
    match verbosity {
        i8::MIN..=-3 => LevelFilter::Off,
        -2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Install the logger for `tool`. `verbosity` is `-v` count minus `-q` count;
/// `explicit` says whether either flag was given at all.
pub fn init(tool: &'static str, verbosity: i8, explicit: bool) {
    let mut b = env_logger::Builder::new();
    // Stderr, above any progress bar rather than through it.
    b.target(env_logger::Target::Pipe(Box::new(crate::progress::LogSink)));
    match std::env::var("OPSKIT_LOG") {
        Ok(spec) if !explicit && !spec.trim().is_empty() => {
            b.parse_filters(&spec);
        }
        _ => {
            b.filter_level(level_for(verbosity));
        }
    }
    b.format(move |f, rec| {
        let lvl = match rec.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        writeln!(f, "{tool}: {lvl}{}", rec.args())
    });
    // A second init (tests calling run twice) keeps the first logger.
    let _ = b.try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_levels() {
        assert_eq!(level_for(0), LevelFilter::Info);
        assert_eq!(level_for(-1), LevelFilter::Warn);
        assert_eq!(level_for(-2), LevelFilter::Error);
        assert_eq!(level_for(-5), LevelFilter::Off);
        assert_eq!(level_for(1), LevelFilter::Debug);
        assert_eq!(level_for(4), LevelFilter::Trace);
    }
}
