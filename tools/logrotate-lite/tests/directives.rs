//! The directives of logrotate 3.21 that logrotate-lite used to refuse
//! (#20 item 3), each against Debian's logrotate on twin copies: the same
//! files (compressed by the same command, byte for byte), the same state.

mod twin;

use twin::Act::{Append, Hours, Run};
use twin::{File, Scenario, f, scenario};

fn lite() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_logrotate-lite"))
}

const fn aged(path: &'static str, lines: usize, age_days: u64) -> File {
    File {
        age_hours: age_days * 24,
        ..f(path, lines)
    }
}

const SCENARIOS: &[Scenario] = &[
    scenario(
        "compresscmd zstd, its extension inferred",
        "{D}/app.log {\n rotate 2\n compress\n compresscmd /usr/bin/zstd\n}\n",
        &[f("app.log", 200)],
        &[
            Run(true),
            Append("app.log", 50),
            Run(true),
            Append("app.log", 7),
            Run(true),
        ],
    ),
    scenario(
        "compresscmd xz with compressoptions and delaycompress",
        "{D}/app.log {\n rotate 3\n compress\n delaycompress\n compresscmd xz\n compressoptions -9 -T1\n}\n",
        &[f("app.log", 100)],
        &[
            Run(true),
            Append("app.log", 30),
            Run(true),
            Append("app.log", 3),
            Run(true),
        ],
    ),
    scenario(
        "compressoptions -1 for gzip",
        "{D}/app.log {\n rotate 2\n compress\n compressoptions -1\n}\n",
        &[f("app.log", 300)],
        &[Run(true), Append("app.log", 20), Run(true)],
    ),
    scenario(
        "compresscmd bzip2 with an explicit compressext",
        "{D}/app.log {\n rotate 2\n compress\n compresscmd /usr/bin/bzip2\n compressext .bzip\n}\n",
        &[f("app.log", 40)],
        &[Run(true), Append("app.log", 5), Run(true)],
    ),
    scenario(
        "start 0",
        "{D}/test.log {\n rotate 2\n start 0\n}\n",
        &[f("test.log", 5)],
        &[
            Run(true),
            Append("test.log", 2),
            Run(true),
            Append("test.log", 3),
            Run(true),
        ],
    ),
    scenario(
        "start 6, compressed",
        "{D}/test.log {\n rotate 2\n start 6\n compress\n}\n",
        &[f("test.log", 5)],
        &[
            Run(true),
            Append("test.log", 2),
            Run(true),
            Append("test.log", 3),
            Run(true),
        ],
    ),
    Scenario {
        state: &[("young.log", 30), ("old.log", 30)],
        ..scenario(
            "minage keeps young logs, -f overrides it",
            "{D}/*.log {\n daily\n rotate 2\n minage 2\n}\n",
            &[f("young.log", 5), aged("old.log", 5, 3)],
            &[Run(false), Hours(25), Run(false), Run(true)],
        )
    },
    Scenario {
        setup: Some(hardlinked),
        ..scenario(
            "allowhardlink rotates a log with two links",
            "{D}/one.log {\n rotate 2\n allowhardlink\n}\n",
            &[f("one.log", 5)],
            &[Run(true)],
        )
    },
    scenario(
        "dateext with dateyesterday",
        "{D}/app.log {\n daily\n rotate 2\n dateext\n dateyesterday\n}\n",
        &[f("app.log", 5)],
        &[Run(true)],
    ),
    scenario(
        "dateext with datehourago",
        "{D}/app.log {\n hourly\n rotate 2\n dateext\n datehourago\n}\n",
        &[f("app.log", 5)],
        &[Run(true)],
    ),
    Scenario {
        mail: true,
        ..scenario(
            "mail (maillast): the rotation that goes is mailed, uncompressed",
            "{D}/app.log {\n rotate 1\n compress\n mail ops@example.com\n}\n",
            &[f("app.log", 5)],
            &[
                Run(true),
                Append("app.log", 3),
                Run(true),
                Append("app.log", 2),
                Run(true),
            ],
        )
    },
    Scenario {
        mail: true,
        ..scenario(
            "mailfirst: the new rotation is mailed under the log's name",
            "{D}/app.log {\n rotate 2\n mail ops@example.com\n mailfirst\n compress\n}\n",
            &[f("app.log", 5)],
            &[Run(true), Append("app.log", 3), Run(true)],
        )
    },
    Scenario {
        mail: true,
        ..scenario(
            "nomail after mail in the globals",
            "mail ops@example.com\n{D}/app.log {\n rotate 1\n nomail\n}\n",
            &[f("app.log", 5)],
            &[Run(true), Append("app.log", 3), Run(true)],
        )
    },
    scenario(
        "shred with shredcycles",
        "{D}/app.log {\n rotate 1\n shred\n shredcycles 2\n}\n{D}/b.log {\n rotate 0\n shred\n}\n",
        &[f("app.log", 5), f("b.log", 4)],
        &[
            Run(true),
            Append("app.log", 3),
            Run(true),
            Append("app.log", 2),
            Run(true),
        ],
    ),
    scenario(
        "addextension moves or adds the extension",
        "{D}/a.log {D}/b {\n rotate 2\n addextension .log\n}\n",
        &[f("a.log", 5), f("b", 5)],
        &[Run(true), Append("a.log", 2), Append("b", 2), Run(true)],
    ),
    scenario(
        "addextension with compress",
        "{D}/a.log {\n rotate 2\n addextension .log\n compress\n}\n",
        &[f("a.log", 5)],
        &[Run(true), Append("a.log", 2), Run(true)],
    ),
    scenario(
        "renamecopy, with create and compress",
        "{D}/app.log {\n rotate 2\n renamecopy\n create\n compress\n}\n",
        &[f("app.log", 5)],
        &[Run(true), Append("app.log", 2), Run(true)],
    ),
    scenario(
        "a log in two blocks is a duplicate: the second block goes",
        "{D}/a.log {\n rotate 1\n}\n{D}/*.log {\n rotate 2\n}\n",
        &[f("a.log", 5), f("b.log", 5)],
        &[Run(true)],
    ),
    scenario(
        "ignoreduplicates in the first block",
        "{D}/a.log {\n rotate 1\n ignoreduplicates\n}\n{D}/*.log {\n rotate 2\n}\n",
        &[f("a.log", 5), f("b.log", 5)],
        &[Run(true), Append("a.log", 2), Append("b.log", 2), Run(true)],
    ),
    scenario(
        "ignoreduplicates in the globals",
        "ignoreduplicates\n{D}/a.log {\n rotate 1\n}\n{D}/*.log {\n rotate 2\n}\n",
        &[f("a.log", 5), f("b.log", 5)],
        &[Run(true)],
    ),
    scenario(
        "preremove runs with the path of each rotation removed",
        "{D}/app.log {\n rotate 1\n compress\n preremove\n  echo \"gone: $1\" >> {D}/removed.txt\n endscript\n}\n",
        &[f("app.log", 5)],
        &[
            Run(true),
            Append("app.log", 2),
            Run(true),
            Append("app.log", 2),
            Run(true),
        ],
    ),
    Scenario {
        mail: true,
        ..scenario(
            "maillast named, and noshred after shred",
            "shred\n{D}/app.log {\n rotate 1\n noshred\n mail ops@example.com\n mailfirst\n maillast\n noallowhardlink\n}\n",
            &[f("app.log", 5)],
            &[Run(true), Append("app.log", 3), Run(true)],
        )
    },
];

fn hardlinked(d: &std::path::Path) {
    std::fs::hard_link(d.join("one.log"), d.join("two.log")).unwrap();
}

#[test]
fn the_directives_logrotate_lite_used_to_refuse_match_logrotate() {
    for tool in ["/usr/bin/zstd", "/usr/bin/xz", "/usr/bin/bzip2"] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} is needed (make test installs it)"
        );
    }
    twin::assert_all_match(SCENARIOS, &lite());
}

/// `shred` really overwrites: a second name (hard link) of the rotation
/// that goes keeps the inode, which shred has overwritten (and, with -u,
/// truncated) in place.
#[test]
fn shred_overwrites_what_it_removes() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("app.log");
    let conf = d.path().join("c.conf");
    std::fs::write(
        &conf,
        format!("{} {{\n rotate 1\n shred\n}}\n", log.display()),
    )
    .unwrap();
    let st = d.path().join("st");
    let secret = "card 4111-1111-1111-1111\n".repeat(100);
    std::fs::write(&log, &secret).unwrap();
    let run = || {
        let out = std::process::Command::new(lite())
            .args(["-f", "-s"])
            .arg(&st)
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run();
    let witness = d.path().join("witness");
    std::fs::hard_link(log.with_extension("log.1"), &witness).unwrap();
    std::fs::write(&log, "new\n").unwrap();
    let records = run();
    assert!(records.contains("app.log.2"), "{records}");
    assert!(!log.with_extension("log.2").exists());
    let left = std::fs::read(&witness).unwrap();
    assert!(
        !String::from_utf8_lossy(&left).contains("4111"),
        "not overwritten: {} bytes left",
        left.len()
    );
}
