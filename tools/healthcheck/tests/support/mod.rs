//! A misbehaving web server for healthcheck's tests: plain or TLS, with a
//! path for each fault an endpoint can have, and a webhook that records
//! what it is sent.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn healthcheck() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_healthcheck"));
    c.env_remove("OPSKIT_LOG")
        .env_remove("DATABASE_URL")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY");
    c
}

#[derive(Default)]
pub struct Stats {
    /// Bytes the server wrote (the huge body stops when the client goes).
    pub written: AtomicU64,
    /// Requests per path.
    pub hits: Mutex<Vec<String>>,
    /// Bodies POSTed to /hook.
    pub posts: Mutex<Vec<String>>,
    /// What /flaky answers: 500 while this is above zero (then counts down).
    pub failures_left: AtomicUsize,
}

pub struct Server {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }
    pub fn https(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
    pub fn posts(&self) -> Vec<String> {
        self.stats.posts.lock().unwrap().clone()
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Start a plain HTTP server.
pub fn serve() -> Server {
    start(None)
}

/// Start an HTTPS server presenting `chain` (leaf first) with `key`.
pub fn serve_tls(chain: Vec<Vec<u8>>, key: Vec<u8>) -> Server {
    let certs = chain
        .into_iter()
        .map(rustls::pki_types::CertificateDer::from)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    start(Some(Arc::new(cfg)))
}

fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let st = Arc::clone(&stats);
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let st = Arc::clone(&st);
            let tls = tls.clone();
            std::thread::spawn(move || {
                let stream: Box<dyn Stream> = match tls {
                    None => Box::new(sock),
                    Some(cfg) => match rustls::ServerConnection::new(cfg) {
                        Ok(conn) => Box::new(rustls::StreamOwned::new(conn, sock)),
                        Err(_) => return,
                    },
                };
                let _ = handle(stream, &st);
            });
        }
    });
    Server { addr, stats }
}

fn handle(stream: Box<dyn Stream>, st: &Stats) -> std::io::Result<()> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut len = 0usize;
    let mut headers = vec![];
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        headers.push(h.trim().to_string());
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    st.hits.lock().unwrap().push(path.clone());
    let mut s = r.into_inner();
    let send = |s: &mut Box<dyn Stream>, status: &str, extra: &str, body: &str| {
        let msg = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        );
        st.written.fetch_add(msg.len() as u64, Ordering::Relaxed);
        s.write_all(msg.as_bytes()).and_then(|()| s.flush())
    };
    let json = "Content-Type: application/json\r\n";
    match path.as_str() {
        "/ok" => send(
            &mut s,
            "200 OK",
            json,
            r#"{"status":"healthy","db":{"latency_ms":12},"checks":[{"name":"redis","ok":true}]}"#,
        ),
        "/degraded" => send(&mut s, "200 OK", json, r#"{"status":"degraded"}"#),
        "/headers" => send(&mut s, "200 OK", "", &headers.join("\n")),
        "/teapot" => send(&mut s, "418 I'm a teapot", "", "short and stout"),
        "/down" => send(&mut s, "503 Service Unavailable", "", "maintenance"),
        "/flaky" => {
            let left = st.failures_left.load(Ordering::SeqCst);
            if left > 0 {
                st.failures_left.store(left - 1, Ordering::SeqCst);
                send(&mut s, "500 Internal Server Error", "", "not yet")
            } else {
                send(&mut s, "200 OK", "", "ok")
            }
        }
        "/hang" => {
            std::thread::sleep(Duration::from_secs(120));
            Ok(())
        }
        p if p.starts_with("/slow/") => {
            let ms: u64 = p[6..].parse().unwrap_or(0);
            std::thread::sleep(Duration::from_millis(ms));
            send(&mut s, "200 OK", "", "ok")
        }
        "/huge" => {
            let head =
                "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nContent-Type: text/plain\r\n\r\n";
            s.write_all(head.as_bytes())?;
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..(1 << 14) {
                s.write_all(&chunk)?;
                st.written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        }
        "/garbage" => s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02 not http at all\r\n\r\n"),
        "/loop" => send(&mut s, "302 Found", "Location: /loop\r\n", ""),
        "/moved" => send(&mut s, "301 Moved Permanently", "Location: /ok\r\n", ""),
        "/midbody" => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"status\":\"hea")?;
            s.flush()
        }
        "/hook" => {
            st.posts
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            send(&mut s, "200 OK", "", "ok")
        }
        "/hook-broken" => send(&mut s, "500 Internal Server Error", "", "no"),
        _ => send(&mut s, "404 Not Found", "", "no such path"),
    }
}
