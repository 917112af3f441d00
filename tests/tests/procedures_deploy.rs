//! Drills of the deployment procedures: a production migration that fails
//! half-way and is rolled back, and the blue/green switch through a real
//! nginx on loopback.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use opskit_testkit::procs::{Procs, dump, example_app, examples_dir};
use opskit_testkit::tools::run;
use opskit_testkit::{bin, cluster};

/// The migration log is the audit trail: it grows with every attempt.
const LOG: [&str; 2] = ["opskit_migrations_log", "opskit_migrations_log_id_seq"];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The example app, deployed from a migrations directory of its own.
fn deployed_app() -> (opskit_testkit::TestDb, Procs, std::path::PathBuf) {
    let c = cluster();
    let db = example_app(c);
    let mut p = Procs::new(c, &db.name);
    let dir = p.path("migrations");
    copy_dir(&examples_dir().join("migrations"), &dir);
    p.set("OPSKIT_MIGRATIONS_DIR", dir.to_str().unwrap());
    (db, p, dir)
}

#[test]
fn failed_migration_is_rolled_back_to_the_schema_and_data_before() {
    let c = cluster();
    let (db, p, dir) = deployed_app();
    copy_dir(&examples_dir().join("failing"), &dir);
    let before = dump(c, &db.name, &LOG);

    // Without --auto-rollback: the exact command to roll back is printed...
    let out = run(&mut p.script("migrate-production.sh"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("check constraint \"orders_paid_has_time\""),
        "{}",
        out.stderr
    );
    assert_ne!(
        dump(c, &db.name, &LOG),
        before,
        "the first migration of the deployment stayed applied"
    );
    let line = out
        .stderr
        .lines()
        .find_map(|l| l.split_once("to roll back, run: ").map(|x| x.1))
        .expect("no rollback command printed");
    // ...and it works as printed.
    let mut words = line.split(' ');
    let mut rb = Command::new(words.next().unwrap());
    rb.args(words);
    p.configure(&mut rb);
    run(&mut rb).ok();
    assert_eq!(dump(c, &db.name, &LOG), before);

    // With --auto-rollback the script undoes it by itself.
    let out = run(p.script("migrate-production.sh").arg("--auto-rollback"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("rolled back to 20261103090000"),
        "{}",
        out.stderr
    );
    assert_eq!(dump(c, &db.name, &LOG), before);

    // The pre-migration set it named exists and verifies.
    let set = out
        .stderr
        .lines()
        .find_map(|l| l.split_once("pre-migration set: ").map(|x| x.1.to_string()))
        .unwrap();
    let v = run(opskit_testkit::signing::command(bin("verify-backup"))
        .arg(&set)
        .args(["--pg-bindir"])
        .arg(c.bindir()));
    v.ok();
}

#[test]
fn migration_without_down_section_offers_the_pre_migration_set() {
    let c = cluster();
    let (db, p, dir) = deployed_app();
    std::fs::write(
        dir.join("20261120090000_one_way.sql"),
        "-- migrate:up\nALTER TABLE users ADD COLUMN nickname text;\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("20261121090000_broken.sql"),
        "-- migrate:up\nSELECT no_such_function();\n",
    )
    .unwrap();
    let before = dump(c, &db.name, &LOG);
    let out = run(p.script("migrate-production.sh").arg("--auto-rollback"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("no down section"), "{}", out.stderr);
    assert!(out.stderr.contains("to restore it, run:"), "{}", out.stderr);
    // The operator agrees: the pre-migration set is restored.
    let out = run(p.script("rollback-migration.sh").arg("--yes"));
    out.ok();
    assert_eq!(dump(c, &db.name, &LOG), before);
}

/// A stand-in application: answers /health with its color, healthy or not.
struct App {
    port: u16,
    healthy: Arc<AtomicBool>,
}

fn app(color: &'static str, healthy: bool) -> App {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let flag = Arc::new(AtomicBool::new(healthy));
    let h = Arc::clone(&flag);
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let (status, state) = if h.load(Ordering::SeqCst) {
                ("200 OK", "healthy")
            } else {
                ("503 Service Unavailable", "starting")
            };
            let body = format!("{{\"status\":\"{state}\",\"color\":\"{color}\"}}");
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    App {
        port,
        healthy: flag,
    }
}

/// nginx on loopback with its own prefix; stopped when dropped.
struct Nginx {
    cmd: String,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let mut words = self.cmd.split(' ');
        let _ = Command::new(words.next().unwrap())
            .args(words)
            .args(["-s", "stop"])
            .status();
    }
}

fn nginx(dir: &Path, upstream: &Path) -> Nginx {
    let exe = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("nginx is not installed (make test installs it: scripts/ensure-deps.sh)");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    for t in ["body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(t)).unwrap();
    }
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/body;\n proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n uwsgi_temp_path {d}/uwsgi;\n scgi_temp_path {d}/scgi;\n\
             include {};\n server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://app; }} }}\n}}\n",
            upstream.display()
        ),
    )
    .unwrap();
    let cmd = format!("{exe} -p {d} -c {d}/nginx.conf");
    let mut words = cmd.split(' ');
    let st = Command::new(words.next().unwrap())
        .args(words)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
    Nginx { cmd, port }
}

/// Which color answers through nginx.
fn live(n: &Nginx) -> String {
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", n.port)) {
            let _ = write!(s, "GET /health HTTP/1.0\r\nHost: x\r\n\r\n");
            let mut r = String::new();
            let _ = s.read_to_string(&mut r);
            for c in ["blue", "green"] {
                if r.contains(&format!("\"color\":\"{c}\"")) {
                    return c.into();
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("nothing answers through nginx");
}

#[test]
fn blue_green_switch_only_to_a_healthy_color() {
    let c = cluster();
    let db = c.create_db();
    let mut p = Procs::new(c, &db.name);
    let blue = app("blue", true);
    let green = app("green", false);
    let upstream = p.path("upstream.conf");
    std::fs::write(
        &upstream,
        format!(
            "# opskit-color: blue\nupstream app {{ server 127.0.0.1:{}; }}\n",
            blue.port
        ),
    )
    .unwrap();
    let n = nginx(&p.path("nginx"), &upstream);
    p.set("OPSKIT_NGINX", &n.cmd);
    p.set("OPSKIT_NGINX_UPSTREAM_FILE", upstream.to_str().unwrap());
    p.set(
        "OPSKIT_BLUE_URL",
        &format!("http://127.0.0.1:{}/health", blue.port),
    );
    p.set(
        "OPSKIT_GREEN_URL",
        &format!("http://127.0.0.1:{}/health", green.port),
    );
    p.set("OPSKIT_BLUE_UPSTREAM", &format!("127.0.0.1:{}", blue.port));
    p.set(
        "OPSKIT_GREEN_UPSTREAM",
        &format!("127.0.0.1:{}", green.port),
    );
    p.set("OPSKIT_HEALTH_WAIT", "2s");
    p.set("OPSKIT_HEALTH_EXPECT", "json.status == healthy");
    assert_eq!(live(&n), "blue");

    // An unhealthy green is not switched to.
    let out = run(p.script("switch-traffic.sh").arg("green"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("traffic stays on blue"),
        "{}",
        out.stderr
    );
    assert_eq!(live(&n), "blue");

    // A healthy one is.
    green.healthy.store(true, Ordering::SeqCst);
    run(&mut p.script("health-check.sh")).ok();
    run(p.script("switch-traffic.sh").arg("green")).ok();
    // A reload hands over to new workers within moments; until the old
    // ones have gone, a new connection may still reach one of them, so
    // wait for ten answers in a row from green.
    let t = std::time::Instant::now();
    let mut in_a_row = 0;
    while in_a_row < 10 {
        in_a_row = if live(&n) == "green" { in_a_row + 1 } else { 0 };
        assert!(t.elapsed().as_secs() < 10, "traffic never settled on green");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // A config nginx -t rejects is put back; traffic stays.
    p.set("OPSKIT_BLUE_UPSTREAM", "127.0.0.1:1 bogus_parameter");
    let out = run(p.script("switch-traffic.sh").arg("blue"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("nginx -t failed"), "{}", out.stderr);
    assert_eq!(live(&n), "green");
    assert!(
        std::fs::read_to_string(&upstream)
            .unwrap()
            .contains("opskit-color: green")
    );

    // An upstream file in a directory others can write: refused before
    // anything is written (root's `cp -p` of the file to its `.prev`
    // went through a link planted there, onto any file).
    p.set("OPSKIT_BLUE_UPSTREAM", &format!("127.0.0.1:{}", blue.port));
    let shared = p.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = shared.join("upstream.conf");
    std::fs::write(&planted, "# opskit-color: green\n").unwrap();
    let victim = p.path("victim");
    std::fs::write(&victim, "root's own file\n").unwrap();
    std::os::unix::fs::symlink(&victim, shared.join("upstream.conf.prev")).unwrap();
    p.set("OPSKIT_NGINX_UPSTREAM_FILE", planted.to_str().unwrap());
    let out = run(p.script("switch-traffic.sh").arg("blue"));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("writable by"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "root's own file\n"
    );
    assert_eq!(live(&n), "green");
}
