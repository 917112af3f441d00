//! logrotate-lite against Debian's logrotate on twin copies of the same
//! scenarios: after the same runs, the file trees (names, decompressed
//! contents, which are compressed), the state files and whether each run
//! failed must be identical.

mod twin;

use twin::Act::{Append, Hours, Remove, Run};
use twin::{File, Scenario, compare, f, scenario};

const DAY: i64 = 25;

fn lite() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_logrotate-lite"))
}

const WEBSYS: &str = "{D}/websys/*.log {\n    daily\n    rotate 30\n    compress\n    delaycompress\n    missingok\n    notifempty\n    copytruncate\n}\n";

const SCENARIOS: &[Scenario] = &[
    scenario(
        "the websys config, five days",
        WEBSYS,
        &[f("websys/a.log", 50), f("websys/b.log", 20)],
        &[
            Run(false),
            Hours(DAY),
            Run(false),
            Append("websys/a.log", 10),
            Hours(DAY),
            Run(false),
            Hours(DAY),
            Run(false),
            Append("websys/b.log", 3),
            Hours(DAY),
            Run(false),
        ],
    ),
    scenario(
        "create, rotate 3, five forced runs",
        "{D}/app.log {\n rotate 3\n create\n}\n",
        &[f("app.log", 10)],
        &[
            Run(true),
            Append("app.log", 5),
            Run(true),
            Append("app.log", 6),
            Run(true),
            Append("app.log", 7),
            Run(true),
            Append("app.log", 8),
            Run(true),
        ],
    ),
    scenario(
        "rotate 0 removes",
        "{D}/app.log {\n daily\n rotate 0\n create\n}\n",
        &[f("app.log", 10)],
        &[Run(false), Hours(DAY), Run(false)],
    ),
    scenario(
        "rotate -1 keeps all",
        "{D}/app.log {\n rotate -1\n create\n compress\n}\n",
        &[f("app.log", 10)],
        &[
            Run(true),
            Append("app.log", 1),
            Run(true),
            Append("app.log", 2),
            Run(true),
            Append("app.log", 3),
            Run(true),
        ],
    ),
    scenario(
        "compress without delay, rotate 2",
        "{D}/app.log {\n daily\n rotate 2\n compress\n create 0640\n}\n",
        &[f("app.log", 100)],
        &[
            Run(false),
            Hours(DAY),
            Run(false),
            Append("app.log", 5),
            Hours(DAY),
            Run(false),
            Append("app.log", 6),
            Hours(DAY),
            Run(false),
        ],
    ),
    scenario(
        "size",
        "{D}/app.log {\n size 4k\n rotate 2\n create\n}\n",
        &[f("app.log", 10)],
        &[Run(false), Append("app.log", 200), Run(false), Run(false)],
    ),
    scenario(
        "minsize holds a due log back",
        "{D}/app.log {\n daily\n minsize 4k\n rotate 2\n}\n",
        &[f("app.log", 10)],
        &[
            Run(false),
            Hours(DAY),
            Run(false),
            Append("app.log", 200),
            Run(false),
            Hours(DAY),
            Run(false),
        ],
    ),
    scenario(
        "maxsize rotates before the interval",
        "{D}/app.log {\n daily\n maxsize 4k\n rotate 2\n create\n}\n",
        &[f("app.log", 10)],
        &[Run(false), Append("app.log", 200), Run(false)],
    ),
    scenario(
        "size then daily: the last wins",
        "{D}/app.log {\n size 1\n daily\n rotate 2\n}\n",
        &[f("app.log", 10)],
        &[Run(false), Run(false)],
    ),
    scenario(
        "weekly",
        "{D}/app.log {\n weekly\n rotate 2\n}\n",
        &[f("app.log", 10)],
        &[
            Run(false),
            Hours(24 * 6),
            Run(false),
            Hours(24 * 2),
            Run(false),
        ],
    ),
    scenario(
        "monthly and yearly",
        "{D}/m.log {\n monthly\n rotate 2\n}\n{D}/y.log {\n yearly\n rotate 2\n}\n",
        &[f("m.log", 10), f("y.log", 10)],
        &[
            Run(false),
            Hours(24 * 40),
            Run(false),
            Hours(24 * 370),
            Run(false),
        ],
    ),
    scenario(
        "hourly",
        "{D}/app.log {\n hourly\n rotate 3\n create\n}\n",
        &[f("app.log", 10)],
        &[
            Run(false),
            Hours(2),
            Run(false),
            Append("app.log", 3),
            Hours(2),
            Run(false),
        ],
    ),
    scenario(
        "notifempty and ifempty",
        "{D}/n.log {\n daily\n notifempty\n rotate 2\n}\n{D}/i.log {\n daily\n ifempty\n rotate 2\n create\n}\n",
        &[f("n.log", 0), f("i.log", 0)],
        &[Run(false), Hours(DAY), Run(false), Run(true)],
    ),
    scenario(
        "missingok",
        "{D}/gone.log {\n daily\n missingok\n rotate 2\n}\n{D}/here.log {\n daily\n rotate 2\n}\n",
        &[f("here.log", 5)],
        &[Run(false), Hours(DAY), Run(false)],
    ),
    scenario(
        "missing without missingok fails",
        "{D}/gone.log {\n daily\n rotate 2\n}\n{D}/here.log {\n daily\n rotate 2\n}\n",
        &[f("here.log", 5)],
        &[Run(true)],
    ),
    scenario(
        "dateext with older dated files",
        "{D}/app.log {\n daily\n rotate 2\n dateext\n compress\n}\n",
        &[
            f("app.log", 30),
            File {
                path: "app.log-20261001.gz",
                lines: 3,
                age_hours: 1200,
                gzip: true,
            },
            File {
                path: "app.log-20261002.gz",
                lines: 4,
                age_hours: 1176,
                gzip: true,
            },
            File {
                path: "app.log-20261003.gz",
                lines: 5,
                age_hours: 1152,
                gzip: true,
            },
        ],
        &[Run(false), Hours(DAY), Run(false)],
    ),
    scenario(
        "dateformat",
        "{D}/app.log {\n rotate 3\n dateext\n dateformat -%Y-%m-%d\n}\n",
        &[f("app.log", 30), f("app.log-2026-10-01", 3)],
        &[Run(true)],
    ),
    scenario(
        "dateext with extension",
        "{D}/app.log {\n rotate 3\n dateext\n extension .log\n compress\n}\n",
        &[f("app.log", 30)],
        &[Run(true)],
    ),
    scenario(
        "dateext twice a day is refused",
        "{D}/app.log {\n rotate 3\n dateext\n create\n}\n",
        &[f("app.log", 30)],
        &[Run(true), Append("app.log", 3), Run(true)],
    ),
    scenario(
        "extension with numbers",
        "{D}/app.log {\n rotate 3\n extension .log\n compress\n create\n}\n",
        &[f("app.log", 30)],
        &[Run(true), Append("app.log", 3), Run(true)],
    ),
    scenario(
        "compressext",
        "{D}/app.log {\n rotate 2\n compress\n compressext .gz\n}\n",
        &[f("app.log", 30)],
        &[Run(true)],
    ),
    scenario(
        "olddir",
        "{D}/app.log {\n rotate 2\n olddir old\n compress\n create\n}\n",
        &[f("app.log", 30), f("old/keep", 1)],
        &[
            Run(true),
            Append("app.log", 4),
            Run(true),
            Append("app.log", 4),
            Run(true),
        ],
    ),
    scenario(
        "createolddir",
        "{D}/app.log {\n rotate 2\n olddir archive\n createolddir 0750 root root\n}\n",
        &[f("app.log", 30)],
        &[Run(true)],
    ),
    scenario(
        "create with mode, postrotate gets the log",
        "{D}/app.log {\n rotate 2\n create 0600\n postrotate\n  echo \"post $1\" | sed 's#.*/##' >> {D}/post.out\n endscript\n}\n",
        &[f("app.log", 30)],
        &[Run(true), Append("app.log", 2), Run(true)],
    ),
    scenario(
        "sharedscripts run once with the pattern",
        "{D}/s/*.log {\n rotate 2\n sharedscripts\n prerotate\n  echo pre >> {D}/scripts.out\n endscript\n postrotate\n  echo post >> {D}/scripts.out\n endscript\n}\n",
        &[f("s/a.log", 3), f("s/b.log", 4)],
        &[Run(true), Run(true)],
    ),
    scenario(
        "firstaction, prerotate, lastaction",
        "{D}/app.log {\n rotate 2\n firstaction\n  echo first >> {D}/order.out\n endscript\n prerotate\n  echo pre >> {D}/order.out\n endscript\n lastaction\n  echo last >> {D}/order.out\n endscript\n}\n",
        &[f("app.log", 3)],
        &[Run(true)],
    ),
    scenario(
        "failing prerotate leaves the log",
        "{D}/app.log {\n rotate 2\n prerotate\n  exit 3\n endscript\n}\n{D}/other.log {\n rotate 2\n}\n",
        &[f("app.log", 3), f("other.log", 3)],
        &[Run(true)],
    ),
    scenario(
        "maxage",
        "{D}/app.log {\n rotate 10\n maxage 5\n compress\n}\n",
        &[
            f("app.log", 30),
            File {
                path: "app.log.1.gz",
                lines: 3,
                age_hours: 48,
                gzip: true,
            },
            File {
                path: "app.log.2.gz",
                lines: 3,
                age_hours: 192,
                gzip: true,
            },
            File {
                path: "app.log.3.gz",
                lines: 3,
                age_hours: 288,
                gzip: true,
            },
        ],
        &[Run(true)],
    ),
    // logrotate compares the mtime with now - N * 86400 s: a rotation 30
    // hours old is past `maxage 1` (it is one whole day old, not two).
    scenario(
        "maxage 1 with rotate -1 removes what is older than 24 hours",
        "{D}/app.log {\n rotate -1\n maxage 1\n}\n",
        &[
            f("app.log", 30),
            File {
                path: "app.log.1",
                lines: 3,
                age_hours: 20,
                gzip: false,
            },
            File {
                path: "app.log.2",
                lines: 3,
                age_hours: 30,
                gzip: false,
            },
            File {
                path: "app.log.3",
                lines: 3,
                age_hours: 47,
                gzip: false,
            },
        ],
        &[Run(true)],
    ),
    scenario(
        "copy leaves the log",
        "{D}/app.log {\n rotate 2\n copy\n}\n",
        &[f("app.log", 30)],
        &[Run(true), Run(true)],
    ),
    scenario(
        "globals, several blocks and an include dir",
        "rotate 2\ncompress\ninclude {D}/conf.d\n{D}/a.log {\n daily\n}\n",
        &[f("a.log", 10), f("b.log", 10), f("c.log", 10)],
        &[Run(false), Hours(DAY), Run(false)],
    ),
    scenario(
        "quoted path with a space",
        "\"{D}/my app.log\" {\n rotate 2\n create\n}\n",
        &[f("my app.log", 5)],
        &[Run(true)],
    ),
    scenario(
        "delaycompress without compress",
        "{D}/app.log {\n rotate 3\n delaycompress\n}\n",
        &[f("app.log", 5)],
        &[Run(true), Append("app.log", 2), Run(true)],
    ),
    scenario(
        "copytruncate, rotate 1, compress, twice",
        "{D}/app.log {\n rotate 1\n copytruncate\n compress\n}\n",
        &[f("app.log", 40)],
        &[Run(true), Append("app.log", 9), Run(true)],
    ),
    scenario(
        "a glob matching rotated names (the trap)",
        "{D}/t/* {\n rotate 2\n}\n",
        &[f("t/a.log", 5), f("t/a.log.1", 3)],
        &[Run(true)],
    ),
    scenario(
        "a removed log stays in the state",
        "{D}/*.log {\n daily\n rotate 2\n missingok\n}\n",
        &[f("a.log", 5), f("b.log", 5)],
        &[Run(false), Remove("b.log"), Hours(DAY), Run(false)],
    ),
    scenario(
        "a whole block on one line is an error",
        "{D}/app.log { rotate 1 }\n{D}/b.log {\n rotate 1\n}\n",
        &[f("app.log", 5), f("b.log", 5)],
        &[Run(true), Run(true)],
    ),
    Scenario {
        setup: Some(symlinked),
        ..scenario(
            "a symlinked log is refused",
            "{D}/link.log {\n rotate 2\n}\n{D}/real.log {\n rotate 2\n}\n",
            &[f("real.log", 5)],
            &[Run(true)],
        )
    },
    Scenario {
        setup: Some(hardlinked),
        ..scenario(
            "a log with two hard links is refused",
            "{D}/one.log {\n rotate 2\n}\n",
            &[f("one.log", 5)],
            &[Run(true)],
        )
    },
    Scenario {
        setup: Some(open_dir),
        ..scenario(
            "an insecure directory without su",
            "{D}/open/app.log {\n rotate 2\n}\n",
            &[f("open/app.log", 5)],
            &[Run(true)],
        )
    },
    Scenario {
        setup: Some(open_dir),
        ..scenario(
            "an insecure directory with su",
            "{D}/open/app.log {\n rotate 2\n su root root\n}\n",
            &[f("open/app.log", 5)],
            &[Run(true)],
        )
    },
    Scenario {
        state: &[("a.log", 30)],
        ..scenario(
            "state entries decide",
            "{D}/*.log {\n daily\n rotate 2\n}\n",
            &[f("a.log", 5), f("b.log", 5)],
            &[Run(false)],
        )
    },
    Scenario {
        setup: Some(nobodys_dir),
        ..scenario(
            "su to the directory's owner",
            "{D}/nb/app.log {\n rotate 2\n su nobody nogroup\n compress\n create\n}\n",
            &[f("nb/app.log", 5)],
            &[Run(true), Append("nb/app.log", 2), Run(true)],
        )
    },
    Scenario {
        setup: Some(nobodys_dir),
        ..scenario(
            "su to a user who may not write there",
            "{D}/app.log {\n rotate 2\n su nobody nogroup\n}\n",
            &[f("app.log", 5), f("nb/x", 1)],
            &[Run(true)],
        )
    },
    // #20 item 4: logrotate 3.21's 19 default taboo extensions, and
    // tabooext/taboopat extending or replacing the one list.
    Scenario {
        setup: Some(taboo_dir),
        ..scenario(
            "an include dir skips the 19 taboo extensions",
            "include {D}/conf.d\n",
            TABOO_LOGS,
            &[Run(true)],
        )
    },
    Scenario {
        setup: Some(taboo_dir),
        ..scenario(
            "tabooext + extends the taboo list",
            "tabooext + .conf, .old\ninclude {D}/conf.d\n",
            TABOO_LOGS,
            &[Run(true)],
        )
    },
    Scenario {
        setup: Some(taboo_dir),
        ..scenario(
            "taboopat without + replaces the whole list",
            "taboopat c.old\ninclude {D}/conf.d\n",
            TABOO_LOGS,
            &[Run(true)],
        )
    },
    // #20 item 5: a version 1 state file is read (and written back as 2).
    Scenario {
        state: &[("a.log", 5), ("b.log", 30)],
        setup: Some(state_v1),
        ..scenario(
            "a version 1 state file",
            "{D}/*.log {\n daily\n rotate 2\n}\n",
            &[f("a.log", 5), f("b.log", 5)],
            &[Run(false)],
        )
    },
    // #20 item 6: a failed shared prerotate counts as the rotation.
    scenario(
        "a failing shared prerotate stamps the logs",
        "{D}/*.log {\n daily\n rotate 2\n sharedscripts\n prerotate\n  exit 1\n endscript\n}\n",
        &[f("a.log", 5), f("b.log", 5)],
        &[Run(false), Hours(DAY), Run(false), Hours(2), Run(false)],
    ),
    // #20 item 8: a missing olddir drops its block, and the rest of its
    // file, when the config is read: nothing of it is recorded.
    scenario(
        "a missing olddir drops its block and the rest of the file",
        "{D}/b.log {\n rotate 2\n}\n{D}/app.log {\n rotate 2\n olddir {D}/nope\n}\n{D}/c.log {\n rotate 2\n}\n",
        &[f("app.log", 5), f("b.log", 5), f("c.log", 5)],
        &[Run(true), Run(false)],
    ),
];

/// The logs of the taboo scenarios, one per config file in conf.d.
const TABOO_LOGS: &[File] = &[
    f("l-bak.log", 2),
    f("l-dpkg-tmp.log", 2),
    f("l-ucf-dist.log", 2),
    f("l-ucf-new.log", 2),
    f("l-ucf-old.log", 2),
    f("l-swp.log", 2),
    f("l-conf.log", 2),
    f("l-old.log", 2),
];

/// conf.d with one config file per extension, each rotating its own log.
fn taboo_dir(d: &std::path::Path) {
    let conf = d.join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    for ext in [
        "bak", "dpkg-tmp", "ucf-dist", "ucf-new", "ucf-old", "swp", "conf", "old",
    ] {
        let text = format!("{}/l-{ext}.log {{\n rotate 1\n}}\n", d.display());
        std::fs::write(conf.join(format!("c.{ext}")), text).unwrap();
    }
}

/// The twin's state file, its header made version 1.
fn state_v1(d: &std::path::Path) {
    let name = d.file_name().unwrap().to_string_lossy();
    let state = d.with_file_name(format!("{name}-conf")).join("status");
    let text = std::fs::read_to_string(&state).unwrap();
    let text = text.replacen("version 2", "version 1", 1);
    std::fs::write(&state, text).unwrap();
}

/// A directory owned by nobody, reachable by nobody.
fn nobodys_dir(d: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for p in [d.parent().unwrap(), d] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for e in std::fs::read_dir(d.join("nb")).unwrap().flatten() {
        std::os::unix::fs::chown(e.path(), Some(65534), Some(65534)).unwrap();
    }
    std::os::unix::fs::chown(d.join("nb"), Some(65534), Some(65534)).unwrap();
}

fn symlinked(d: &std::path::Path) {
    std::os::unix::fs::symlink(d.join("real.log"), d.join("link.log")).unwrap();
}

fn hardlinked(d: &std::path::Path) {
    std::fs::hard_link(d.join("one.log"), d.join("two.log")).unwrap();
}

fn open_dir(d: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// The one deliberate difference: logrotate ignores an unknown directive's
/// line and rotates the block anyway, exiting 0; logrotate-lite skips the
/// block (a typo in `su` or `olddir` must not rotate logs the wrong way)
/// and exits 1, rotating the other blocks as logrotate does.
#[test]
fn unknown_directive_deliberately_skips_its_block() {
    const S: Scenario = scenario(
        "unknown directive",
        "{D}/a.log {\n rotate 2\n frobnicate\n}\n{D}/b.log {\n rotate 2\n}\n",
        &[f("a.log", 5), f("b.log", 5)],
        &[Run(true)],
    );
    let err = compare(&S, &lite()).unwrap_err();
    assert!(err.contains("a.log: only logrotate-lite has it"), "{err}");
    assert!(err.contains("a.log.1: only logrotate has it"), "{err}");
    assert!(
        err.contains("exit codes: logrotate [0] vs lite [1]"),
        "{err}"
    );
    assert!(!err.contains("\n  b.log"), "the other block differs: {err}");
}

#[test]
fn differential_against_logrotate() {
    assert!(SCENARIOS.len() >= 30);
    twin::assert_all_match(SCENARIOS, &lite());
}
