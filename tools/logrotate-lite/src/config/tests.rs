//! The parser's cases.
use super::directive::size;
use super::*;

fn cfg(text: &str) -> Config {
    let mut c = Config::default();
    parse(
        text,
        "t.conf",
        Path::new("/etc"),
        &mut Opts::default(),
        &mut c,
        0,
    );
    c
}

#[test]
fn the_websys_example() {
    let c = cfg(
        "/var/log/websys/*.log {\n    daily\n    rotate 30\n    compress\n    delaycompress\n    missingok\n    notifempty\n    copytruncate\n}\n",
    );
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let b = &c.blocks[0];
    assert_eq!(b.patterns, ["/var/log/websys/*.log"]);
    assert_eq!(b.opts.freq, Freq::Daily);
    assert_eq!(b.opts.rotate, 30);
    assert!(
        b.opts.compress
            && b.opts.delaycompress
            && b.opts.missingok
            && !b.opts.ifempty
            && b.opts.copytruncate
    );
}

#[test]
fn globals_quotes_scripts_and_several_paths() {
    let c = cfg(
        "# top\nweekly\nrotate 4\ncompress\n\n\"/var/log/a b.log\" /var/log/c.log\n{\n  rotate 2\n  create 0640 www-data adm\n  sharedscripts\n  postrotate\n    kill -HUP $(cat /run/x.pid)\n  endscript\n}\n/var/log/d.log {\n nocompress\n}\n",
    );
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.blocks[0].patterns, ["/var/log/a b.log", "/var/log/c.log"]);
    assert_eq!(c.blocks[0].opts.rotate, 2);
    assert_eq!(c.blocks[0].opts.freq, Freq::Weekly(0));
    assert_eq!(
        c.blocks[0].opts.create,
        Some(Create {
            mode: Some(0o640),
            owner: Some("www-data".into()),
            group: Some("adm".into())
        })
    );
    assert_eq!(
        c.blocks[0].opts.postrotate.as_deref(),
        Some("    kill -HUP $(cat /run/x.pid)\n")
    );
    assert!(c.blocks[0].opts.compress);
    assert_eq!(c.blocks[1].opts.rotate, 4);
}

#[test]
fn unknown_directive_skips_its_block_only() {
    let c = cfg("/a.log {\n  daily\n  frobnicate 3\n}\n/b.log {\n  weekly\n}\nbogus\n");
    assert_eq!(c.blocks.len(), 1);
    assert_eq!(c.blocks[0].patterns, ["/b.log"]);
    assert_eq!(c.errors.len(), 2);
    assert_eq!(c.errors[0].at, "t.conf:3");
    assert!(c.errors[0].msg.contains("'frobnicate'"));
    assert_eq!(c.errors[1].at, "t.conf:8");
}

#[test]
fn bad_values_and_unclosed_blocks() {
    let c = cfg("/a.log {\n  rotate many\n}\n/b.log {\n  size 10X\n}\n/c.log {\n  daily\n");
    assert!(c.blocks.is_empty());
    assert!(c.errors[0].msg.contains("rotate: bad count 'many'"));
    assert!(c.errors[1].msg.contains("bad size"));
    assert!(c.errors[2].msg.contains("not closed"));
    assert_eq!(size("100k").unwrap(), 102_400);
    assert_eq!(size("2M").unwrap(), 2 << 20);
}
