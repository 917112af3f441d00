//! Inputs that must not hang the tool or grow it without bound: a FIFO,
//! a device or a huge file given as a config or included, an include
//! directory holding such things, an include loop. Each is one line naming
//! the file (and the bound), under a deadline and, for memory, a cap on
//! the address space.

mod hostile;

use std::path::Path;

use hostile::{BIN, lite, run};

/// The address space the tool gets where memory is the point: reading a
/// bounded config needs far less.
const ADDRESS_SPACE: &str = "--as=209715200";

fn mkfifo(p: &Path) {
    let st = std::process::Command::new("mkfifo")
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `--check` on `conf` under [`ADDRESS_SPACE`] and the deadline.
fn check_capped(conf: &Path) -> hostile::Ran {
    run(std::process::Command::new("prlimit")
        .arg(ADDRESS_SPACE)
        .arg("--")
        .arg(BIN)
        .arg("--check")
        .arg(conf)
        .env_remove("OPSKIT_LOG"))
}

/// The one line of stderr naming `what`, asserting there is exactly one
/// error record.
fn one_error_naming(ran: &hostile::Ran, what: &str) -> String {
    let errors = ran.errors();
    assert_eq!(errors.len(), 1, "{errors:?}\n{}", ran.stderr);
    assert!(errors[0].contains(what), "{errors:?}");
    errors[0].clone()
}

#[test]
fn include_of_a_device_is_refused_in_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let conf = d.path().join("c.conf");
    std::fs::write(&conf, "include /dev/zero\n").unwrap();
    let ran = check_capped(&conf);
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    let line = one_error_naming(&ran, "/dev/zero");
    assert!(line.contains("a device, not a regular file"), "{line}");
    // Given on the command line, the same.
    let ran = check_capped(Path::new("/dev/zero"));
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    one_error_naming(&ran, "/dev/zero");
}

#[test]
fn a_config_or_a_line_over_the_bound_is_refused_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let big = d.path().join("big.conf");
    let mut text = String::new();
    while text.len() <= 2 << 20 {
        text.push_str("# a comment line of a config file that is far too big\n");
    }
    std::fs::write(&big, &text).unwrap();
    let ran = check_capped(&big);
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    let line = one_error_naming(&ran, &big.display().to_string());
    assert!(line.contains("larger than 1"), "{line}");

    let long = d.path().join("long.conf");
    let text = format!(
        "/var/log/a.log {{\n rotate 1\n}}\n# {}\n",
        "x".repeat(100_000)
    );
    std::fs::write(&long, text).unwrap();
    let ran = check_capped(&long);
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    let line = one_error_naming(&ran, &format!("{}:4", long.display()));
    assert!(line.contains("longer than"), "{line}");
}

#[test]
fn a_fifo_as_config_or_include_is_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo.conf");
    mkfifo(&fifo);
    let ran = run(lite().arg("--check").arg(&fifo));
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    let line = one_error_naming(&ran, &fifo.display().to_string());
    assert!(line.contains("a FIFO, not a regular file"), "{line}");

    let conf = d.path().join("c.conf");
    std::fs::write(&conf, format!("include {}\n", fifo.display())).unwrap();
    let ran = run(lite().arg("--check").arg(&conf));
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    one_error_naming(&ran, &fifo.display().to_string());
}

#[test]
fn an_include_directory_skips_what_is_not_a_regular_file_and_says_so() {
    let d = tempfile::tempdir().unwrap();
    let inc = d.path().join("conf.d");
    std::fs::create_dir(&inc).unwrap();
    mkfifo(&inc.join("b-fifo"));
    std::fs::create_dir(inc.join("c-subdir")).unwrap();
    std::fs::write(inc.join("a.conf"), "/var/log/a.log {\n rotate 1\n}\n").unwrap();
    std::fs::write(inc.join("d.conf"), "/var/log/d.log {\n rotate 1\n}\n").unwrap();
    let conf = d.path().join("c.conf");
    std::fs::write(&conf, format!("include {}\n", inc.display())).unwrap();
    let ran = run(lite().arg("--check").arg(&conf));
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert_eq!(ran.summary()["blocks"], 2, "{}", ran.stdout);
    let fifo = inc.join("b-fifo").display().to_string();
    assert!(
        ran.stderr
            .lines()
            .any(|l| l.contains(&fifo) && l.contains("a FIFO")),
        "{}",
        ran.stderr
    );
}

#[test]
fn an_include_loop_is_reported_once() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.log"), "a\n").unwrap();
    std::fs::write(d.path().join("b.log"), "b\n").unwrap();
    let main = d.path().join("main.conf");
    let other = d.path().join("other.conf");
    std::fs::write(
        &main,
        format!(
            "include {}\n{}/a.log {{\n rotate 1\n}}\n",
            other.display(),
            d.path().display()
        ),
    )
    .unwrap();
    std::fs::write(
        &other,
        format!(
            "{}/b.log {{\n rotate 1\n}}\ninclude {}\n",
            d.path().display(),
            main.display()
        ),
    )
    .unwrap();
    let ran = run(lite().arg("--check").arg(&main));
    assert_eq!(ran.code, Some(64), "{}", ran.stderr);
    let line = one_error_naming(&ran, &format!("{}:4", other.display()));
    assert!(line.contains("include loop"), "{line}");
    assert!(line.contains(&main.display().to_string()), "{line}");
    assert_eq!(ran.summary()["blocks"], 2, "{}", ran.stdout);

    // A file that includes itself, the same.
    std::fs::write(&main, format!("include {}\n", main.display())).unwrap();
    let ran = run(lite().arg("--check").arg(&main));
    let line = one_error_naming(&ran, &format!("{}:1", main.display()));
    assert!(line.contains("include loop"), "{line}");
}
