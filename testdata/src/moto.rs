//! A real S3 protocol server for tests: `moto_server` (PyPI's moto, run as a server) on
//! 127.0.0.1, and a small fault-injecting HTTP proxy in front of it.
//!
//! `.ci/run` installs moto into a venv under `~/.cache/prep` and exports `PREP_MOTO_SERVER`;
//! without it a test skips with a message, and under `CI=true` fails loudly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `$PREP_MOTO_SERVER`, else `~/.cache/prep/moto-venv/bin/moto_server`, if it exists.
pub fn moto_server_path() -> Option<PathBuf> {
    let candidate = std::env::var_os("PREP_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/prep/moto-venv/bin/moto_server")
        });
    if candidate.is_file() {
        return Some(candidate);
    }
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!(
            "CI=true but moto_server is missing at {} (.ci/run installs it; set PREP_MOTO_SERVER)",
            candidate.display()
        );
    }
    eprintln!(
        "skipping: moto_server not found at {} (pip install \"moto[server]\" into a venv; set PREP_MOTO_SERVER)",
        candidate.display()
    );
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running moto server, killed on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers; None (skip) when not installed.
    pub fn start() -> Option<Moto> {
        let exe = moto_server_path()?;
        let port = free_port();
        let child = Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting moto_server");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while request(port, "GET", "/", &[]).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates a bucket (S3's CreateBucket; moto does not check signatures).
    pub fn create_bucket(&self, bucket: &str) {
        let (status, body) = request(self.port, "PUT", &format!("/{bucket}"), &[]).unwrap();
        assert!(status == 200, "create bucket {bucket}: {status} {body}");
    }

    /// Every object key in `bucket` (ListObjectsV2, first 1000).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let (_, body) = request(self.port, "GET", &format!("/{bucket}?list-type=2"), &[]).unwrap();
        body.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; the status and the body.
fn request(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if len == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + len]);
        b = &b[eol + 4 + len..];
    }
    out
}

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it to moto.
    Forward,
    /// Answer 503 SlowDown without forwarding.
    Throttle,
    /// Forward the headers and half the body, then hang until the test ends (a stalled upload).
    Stall,
}

/// An HTTP proxy on 127.0.0.1 in front of moto that applies `rule(n, method, path)` to the n-th
/// request (counted from 0). One request per connection: it closes after each response.
pub struct Proxy {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
    pub faults: Arc<AtomicUsize>,
    /// Set when a `Stall` request is hanging.
    pub stalled: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(
        upstream: u16,
        rule: impl Fn(usize, &str, &str) -> Fault + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let faults = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(AtomicBool::new(false));
        let rule = Arc::new(rule);
        let (r, f, st) = (requests.clone(), faults.clone(), stalled.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (rule, r, f, st) = (rule.clone(), r.clone(), f.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &*rule, &r, &f, &st);
                });
            }
        });
        Proxy {
            port,
            requests,
            faults,
            stalled,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    rule: &(dyn Fn(usize, &str, &str) -> Fault + Send + Sync),
    requests: &AtomicUsize,
    faults: &AtomicUsize,
    stalled: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.push("Connection: close\r\n".to_owned());
            head.push(line);
            break;
        }
        head.push(line);
    }
    let mut body = vec![0u8; content_length];
    let first = head[0].clone();
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let n = requests.fetch_add(1, Ordering::SeqCst);
    let fault = rule(n, method, path);
    let mut out = conn;
    if fault == Fault::Throttle {
        reader.read_exact(&mut body)?;
        faults.fetch_add(1, Ordering::SeqCst);
        let msg = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        write!(
            out,
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{msg}",
            msg.len()
        )?;
        return Ok(());
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    up.write_all(head.concat().as_bytes())?;
    if fault == Fault::Stall {
        let half = content_length / 2;
        reader.read_exact(&mut body[..half])?;
        up.write_all(&body[..half])?;
        faults.fetch_add(1, Ordering::SeqCst);
        stalled.store(true, Ordering::SeqCst);
        // Hold both connections open, never finishing the body.
        std::thread::sleep(Duration::from_secs(3600));
        return Ok(());
    }
    reader.read_exact(&mut body)?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    out.write_all(&response)?;
    Ok(())
}
