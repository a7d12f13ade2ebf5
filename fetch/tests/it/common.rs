//! A small threaded HTTP/1.1 server on 127.0.0.1 for the download tests: serves fixed routes,
//! honours (or ignores) Range, can drop connections mid-body, fail with 5xx, and counts
//! concurrent requests. One connection per request (`Connection: close`) keeps it simple.
//! Like a real static-file server it names each body's version (an ETag derived from the bytes,
//! unless the route sets its own ETag / Last-Modified or none) and honours `If-Range`
//! (RFC 9110 §13.1.5: a Range whose If-Range does not match gets 200 and the whole body).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Route {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// Answer Range requests with the whole body and 200, like a server without Range support.
    pub ignore_range: bool,
    /// For the first `drops` GET requests, send this many body bytes and then cut the connection.
    pub drop_after: Option<usize>,
    pub drops: usize,
    /// The first `fail_first` requests get a 503.
    pub fail_first: usize,
    /// On the first GET, send this many body bytes, then go silent for the duration.
    pub stall: Option<(usize, Duration)>,
    /// Pause before sending the body (to hold connections open for the concurrency test).
    pub delay: Duration,
    /// Send no ETag or Last-Modified at all (a server that names no version).
    pub no_validator: bool,
    /// A gated file: only a request with this `Authorization` is served; the Hub answers 401
    /// without a token and 403 with another one, both with `X-Error-Code: GatedRepo`.
    pub gated: Option<String>,
}

impl Route {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Route {
            status: 200,
            body: body.into(),
            ..Route::default()
        }
    }
    pub fn status(status: u16) -> Self {
        Route {
            status,
            ..Route::default()
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    served: Mutex<HashMap<String, usize>>,
    log: Mutex<Vec<Request>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
    stop: AtomicBool,
}

pub struct Server {
    pub base: String,
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                thread::spawn(move || handle(conn, &s));
            }
        });
        Server {
            base: format!("http://{addr}"),
            shared,
            addr,
        }
    }

    pub fn route(&self, path: &str, route: Route) {
        self.shared
            .routes
            .lock()
            .unwrap()
            .insert(path.to_owned(), route);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn max_active(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Deterministic bytes that differ at every offset, so a misplaced resume cannot pass.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

fn handle(mut conn: TcpStream, s: &Shared) {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let now = s.active.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_active.fetch_max(now, Ordering::SeqCst);
    s.log.lock().unwrap().push(Request {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        if_range: headers.get("if-range").cloned(),
        authorization: headers.get("authorization").cloned(),
    });
    let route = s.routes.lock().unwrap().get(&path).cloned();
    let nth = {
        let mut served = s.served.lock().unwrap();
        let n = served.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let route = route.map(|r| match &r.gated {
        Some(want) if headers.get("authorization") != Some(want) => {
            let status = if headers.contains_key("authorization") {
                403
            } else {
                401
            };
            Route::status(status).header("X-Error-Code", "GatedRepo")
        }
        _ => r,
    });
    respond(&mut conn, &method, route, nth, &headers);
    s.active.fetch_sub(1, Ordering::SeqCst);
    let _ = conn.flush();
    let _ = conn.shutdown(Shutdown::Both);
}

fn respond(
    conn: &mut TcpStream,
    method: &str,
    route: Option<Route>,
    nth: usize,
    req: &HashMap<String, String>,
) {
    let Some(route) = route else {
        let _ = write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    };
    if nth <= route.fail_first {
        let _ = write!(
            conn,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let total = route.body.len();
    let mut status = route.status;
    let mut start = 0usize;
    let mut extra = route.headers.clone();
    let own = |name: &str| {
        extra
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (mut etag, last_modified) = (own("etag"), own("last-modified"));
    if etag.is_none() && last_modified.is_none() && !route.no_validator {
        let e = format!("\"{}\"", &sha256_hex(&route.body)[..16]);
        extra.push(("ETag".into(), e.clone()));
        etag = Some(e);
    }
    // A Range with a stale If-Range is served as if it had no Range (a strong comparison).
    let range = req.get("range").filter(|_| match req.get("if-range") {
        None => true,
        Some(v) => Some(v) == etag.as_ref() || Some(v) == last_modified.as_ref(),
    });
    if status == 200 && !route.ignore_range {
        if let Some(r) = range.and_then(|r| r.strip_prefix("bytes=")) {
            let from: usize = r.trim_end_matches('-').parse().unwrap_or(0);
            if from >= total {
                let _ = write!(
                    conn,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return;
            }
            status = 206;
            start = from;
            extra.push((
                "Content-Range".into(),
                format!("bytes {from}-{}/{total}", total - 1),
            ));
        }
    }
    let body = if status == 200 || status == 206 {
        &route.body[start..]
    } else {
        &route.body[..]
    };
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        404 => "Not Found",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in &extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if conn.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    thread::sleep(route.delay);
    if let Some((at, pause)) = route.stall.filter(|_| nth == 1) {
        let _ = conn.write_all(&body[..at.min(body.len())]);
        let _ = conn.flush();
        thread::sleep(pause);
        return;
    }
    let cut = route
        .drop_after
        .filter(|_| nth <= route.fail_first + route.drops);
    let send = cut.map(|c| c.min(body.len())).unwrap_or(body.len());
    let _ = conn.write_all(&body[..send]);
}
