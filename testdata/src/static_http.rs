//! A read-only web server for tests: files under a folder served over plain HTTP/1.1 on
//! 127.0.0.1 (GET and HEAD, single byte ranges, 404 for anything missing), as a static host or
//! a CDN serves a published shard set. No listing and no uploads: what `https://` locations are.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

pub struct StaticServer {
    pub port: u16,
    /// Requests answered so far, by method and path (`"GET /shards/index.json"`).
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl StaticServer {
    /// Serves `root` on a free port until the process ends.
    pub fn start(root: &Path) -> StaticServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (root, log) = (root.to_owned(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (root, log) = (root.clone(), log.clone());
                std::thread::spawn(move || {
                    if let Ok(line) = answer(conn, &root) {
                        log.lock().unwrap().push(line);
                    }
                });
            }
        });
        StaticServer { port, requests }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The file a request path names under `root`, refusing `..` and absolute tricks.
fn file_of(root: &Path, path: &str) -> Option<PathBuf> {
    let rel = Path::new(path.split('?').next()?.trim_start_matches('/'));
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    let file = root.join(rel);
    (plain && file.is_file()).then_some(file)
}

/// `bytes=a-b` / `bytes=a-` of a body of `len` bytes, as an inclusive range.
fn range_of(header: Option<&str>, len: usize) -> Option<(usize, usize)> {
    let spec = header?.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b = if b.is_empty() {
        len.checked_sub(1)?
    } else {
        b.parse::<usize>().ok()?.min(len.checked_sub(1)?)
    };
    (a <= b).then_some((a, b))
}

/// Answers one request (then closes); the request line, for the log.
fn answer(conn: TcpStream, root: &Path) -> std::io::Result<String> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range:") {
            range = Some(v.trim().to_owned());
        }
    }
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = conn;
    let fixed = "Last-Modified: Sun, 06 Dec 2026 00:00:00 GMT\r\nConnection: close\r\n";
    let body = match (method, file_of(root, path)) {
        ("GET" | "HEAD", Some(file)) => std::fs::read(file)?,
        ("GET" | "HEAD", None) => {
            write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n{fixed}\r\n"
            )?;
            return Ok(format!("{method} {path}"));
        }
        _ => {
            write!(
                out,
                "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n{fixed}\r\n"
            )?;
            return Ok(format!("{method} {path}"));
        }
    };
    let etag = format!("ETag: \"{}\"\r\n", body.len());
    let (status, part, extra) = match range_of(range.as_deref(), body.len()) {
        Some((a, b)) => (
            "206 Partial Content",
            &body[a..=b],
            format!("Content-Range: bytes {a}-{b}/{}\r\n", body.len()),
        ),
        None => ("200 OK", &body[..], String::new()),
    };
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{etag}{extra}{fixed}\r\n",
        part.len()
    )?;
    if method == "GET" {
        out.write_all(part)?;
    }
    Ok(format!("{method} {path}"))
}
