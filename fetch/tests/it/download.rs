//! The download engine against a real HTTP server on 127.0.0.1.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{payload, sha256_hex, Route, Server};
use fetch::{
    cached_inputs, download_source, part_path, validator_path, DownloadConfig, Downloader,
    FetchError, FileSpec, NoMultiProgress, SourceFile, MAX_REDIRECTS,
};
use schemas::{NoProgress, OutputLock};

fn quick(jobs: usize, retries: u32) -> Downloader {
    Downloader::new(DownloadConfig {
        retries,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        jobs,
        proxy_from_env: false,
        ..DownloadConfig::default()
    })
}

fn spec(server: &Server, path: &str, dest: &Path, body: &[u8]) -> FileSpec {
    FileSpec {
        size: Some(body.len() as u64),
        sha256: Some(sha256_hex(body)),
        ..FileSpec::new(server.url(path), dest)
    }
}

fn ranges(server: &Server, path: &str) -> Vec<Option<String>> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == path && r.method == "GET")
        .map(|r| r.range)
        .collect()
}

/// The names in `dir`, without the destinations' lock files (`.<name>.lock`, kept by design).
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !(n.starts_with('.') && n.ends_with(".lock")))
        .collect();
    v.sort();
    v
}

#[test]
fn full_download_is_verified_and_renamed() {
    let server = Server::start();
    let body = payload(1_000_003, 1);
    server.route("/data/train.json", Route::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub/train.json");
    let got = quick(1, 0)
        .fetch(
            &spec(&server, "/data/train.json", &dest, &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), body);
    assert_eq!(got.size, body.len() as u64);
    assert_eq!(got.sha256.as_deref(), Some(sha256_hex(&body).as_str()));
    assert!(got.fetched);
    assert_eq!(names_in(&dir.path().join("sub")), vec!["train.json"]);
    assert_eq!(ranges(&server, "/data/train.json"), vec![None]);

    // A second run finds the finished file and sends nothing.
    let again = quick(1, 0)
        .fetch(
            &spec(&server, "/data/train.json", &dest, &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap();
    assert!(!again.fetched);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn dropped_connections_resume_with_range_byte_identical() {
    let server = Server::start();
    let body = payload(900_000, 2);
    server.route(
        "/big.bin",
        Route {
            drop_after: Some(300_000),
            drops: 2,
            ..Route::ok(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let got = quick(1, 3)
        .fetch(
            &spec(&server, "/big.bin", &dest, &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), body, "resumed file differs");
    assert_eq!(got.sha256.as_deref(), Some(sha256_hex(&body).as_str()));
    assert_eq!(
        ranges(&server, "/big.bin"),
        vec![
            None,
            Some("bytes=300000-".to_owned()),
            Some("bytes=600000-".to_owned())
        ]
    );
    assert!(!part_path(&dest).exists());
}

#[test]
fn a_stalled_connection_times_out_and_resumes() {
    let server = Server::start();
    let body = payload(200_000, 13);
    server.route(
        "/stall",
        Route {
            stall: Some((50_000, Duration::from_secs(3))),
            ..Route::ok(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("stall");
    let dl = Downloader::new(DownloadConfig {
        read_timeout: Duration::from_millis(300),
        ..quick(1, 2).config().clone()
    });
    let t = std::time::Instant::now();
    dl.fetch(
        &spec(&server, "/stall", &dest, &body),
        &NoProgress,
        &NoProgress,
    )
    .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "waited out the stall: {:?}",
        t.elapsed()
    );
    assert_eq!(fs::read(&dest).unwrap(), body);
    assert_eq!(
        ranges(&server, "/stall"),
        vec![None, Some("bytes=50000-".to_owned())]
    );
}

#[test]
fn a_part_left_by_an_earlier_run_is_resumed_not_refetched() {
    let server = Server::start();
    let body = payload(500_000, 3);
    server.route(
        "/f.gz",
        Route {
            drop_after: Some(123_456),
            drops: 1,
            ..Route::ok(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.gz");
    let s = spec(&server, "/f.gz", &dest, &body);
    // The earlier run: cut off, no retries left.
    quick(1, 0).fetch(&s, &NoProgress, &NoProgress).unwrap_err();
    assert_eq!(fs::read(part_path(&dest)).unwrap(), &body[..123_456]);
    assert!(!dest.exists(), "a .part is never the finished name");
    assert!(validator_path(&dest).exists(), "its version is recorded");
    quick(1, 0).fetch(&s, &NoProgress, &NoProgress).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), body);
    assert_eq!(
        ranges(&server, "/f.gz"),
        vec![None, Some("bytes=123456-".to_owned())]
    );
    assert_eq!(
        names_in(dir.path()),
        vec!["f.gz"],
        "part and its record gone"
    );
}

#[test]
fn a_server_ignoring_range_restarts_cleanly() {
    let server = Server::start();
    let body = payload(400_000, 4);
    server.route(
        "/norange",
        Route {
            ignore_range: true,
            drop_after: Some(100_000),
            drops: 1,
            ..Route::ok(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("norange");
    // The first attempt leaves a prefix that must not end up in front of the full body.
    let got = quick(1, 1)
        .fetch(
            &spec(&server, "/norange", &dest, &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), body);
    assert_eq!(got.size, 400_000);
    assert_eq!(
        ranges(&server, "/norange"),
        vec![None, Some("bytes=100000-".to_owned())]
    );
}

#[test]
fn not_found_is_a_clear_error_and_leaves_no_file() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("gone.tsv");
    fs::write(part_path(&dest), b"stale").unwrap();
    let err = quick(1, 3)
        .fetch(
            &FileSpec::new(server.url("/gone.tsv"), &dest),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("/gone.tsv") && msg.contains("404"), "{msg}");
    assert!(
        names_in(dir.path()).is_empty(),
        "left {:?}",
        names_in(dir.path())
    );
    assert_eq!(server.requests().len(), 1, "404 is not retried");
}

#[test]
fn forbidden_is_not_retried() {
    let server = Server::start();
    server.route("/private", Route::status(403));
    let dir = tempfile::tempdir().unwrap();
    let err = quick(1, 3)
        .fetch(
            &FileSpec::new(server.url("/private"), dir.path().join("p")),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Denied { status: 403, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests().len(), 1);
    assert!(!dir.path().join("p").exists());
}

#[test]
fn checksum_mismatch_rejects_the_file() {
    let server = Server::start();
    let body = payload(200_000, 5);
    server.route("/c", Route::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c");
    let mut s = spec(&server, "/c", &dest, &body);
    s.sha256 = Some(sha256_hex(b"something else"));
    let err = quick(1, 0).fetch(&s, &NoProgress, &NoProgress).unwrap_err();
    match &err {
        FetchError::ChecksumMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &sha256_hex(b"something else"));
            assert_eq!(actual, &sha256_hex(&body));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        names_in(dir.path()).is_empty(),
        "kept {:?}",
        names_in(dir.path())
    );
}

#[test]
fn size_mismatch_is_caught_from_the_headers() {
    let server = Server::start();
    let body = payload(10_000, 6);
    server.route("/s", Route::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("s");
    let mut s = FileSpec::new(server.url("/s"), &dest);
    s.size = Some(9_999);
    let err = quick(1, 0).fetch(&s, &NoProgress, &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            FetchError::SizeMismatch {
                expected: 9_999,
                actual: 10_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn server_errors_are_retried_then_reported() {
    let server = Server::start();
    let body = payload(5_000, 7);
    server.route(
        "/flaky",
        Route {
            fail_first: 2,
            ..Route::ok(body.clone())
        },
    );
    server.route(
        "/down",
        Route {
            fail_first: 1000,
            ..Route::ok(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dl = quick(1, 2);
    dl.fetch(
        &spec(&server, "/flaky", &dir.path().join("flaky"), &body),
        &NoProgress,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(fs::read(dir.path().join("flaky")).unwrap(), body);
    let err = dl
        .fetch(
            &spec(&server, "/down", &dir.path().join("down"), &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    match &err {
        FetchError::Network {
            attempts, message, ..
        } => {
            assert_eq!(*attempts, 3);
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ranges(&server, "/down").len(), 3);
}

#[test]
fn connection_refused_is_retried_then_reported() {
    // A port with nothing listening.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let err = quick(1, 1)
        .fetch(
            &FileSpec::new(format!("http://127.0.0.1:{port}/x"), dir.path().join("x")),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Network { attempts: 2, .. }),
        "{err:?}"
    );
}

#[test]
fn concurrent_downloads_are_bounded_by_jobs() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let mut specs = Vec::new();
    for i in 0..6 {
        let body = payload(50_000 + i, i as u64);
        let path = format!("/part-{i:05}.gz");
        server.route(
            &path,
            Route {
                delay: Duration::from_millis(150),
                ..Route::ok(body.clone())
            },
        );
        specs.push(spec(&server, &path, &dir.path().join(&path[1..]), &body));
    }
    let done = quick(2, 0).fetch_all(&specs, &NoMultiProgress).unwrap();
    assert_eq!(done.len(), 6);
    for (s, d) in specs.iter().zip(&done) {
        assert_eq!(d.path, s.dest, "results keep the input order");
    }
    assert_eq!(
        server.max_active(),
        2,
        "at most --jobs connections, and really in parallel"
    );
}

#[test]
fn one_failure_does_not_stop_the_others() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let body = payload(1000, 9);
    server.route("/a", Route::ok(body.clone()));
    let specs = vec![
        FileSpec::new(server.url("/missing"), dir.path().join("missing")),
        spec(&server, "/a", &dir.path().join("a"), &body),
    ];
    let err = quick(2, 0).fetch_all(&specs, &NoMultiProgress).unwrap_err();
    assert!(matches!(err, FetchError::NotFound { .. }), "{err:?}");
    assert_eq!(fs::read(dir.path().join("a")).unwrap(), body);
}

#[test]
fn source_cache_records_completion_for_ingest() {
    let server = Server::start();
    let a = payload(70_000, 10);
    let b = payload(30_000, 11);
    server.route("/q/collection.tsv", Route::ok(a.clone()));
    server.route("/q/queries.tsv", Route::ok(b.clone()));
    let dest = tempfile::tempdir().unwrap();
    let files = vec![
        SourceFile {
            name: "collection.tsv".into(),
            url: server.url("/q/collection.tsv"),
            size: Some(a.len() as u64),
            sha256: Some(sha256_hex(&a)),
            unpack: None,
        },
        SourceFile {
            name: "sub/queries.tsv".into(),
            url: server.url("/q/queries.tsv"),
            size: None,
            sha256: None,
            unpack: None,
        },
    ];

    let err = cached_inputs("msmarco", dest.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("prep download --source msmarco --dest"),
        "{err}"
    );

    let dl = quick(2, 0);
    let record = download_source("msmarco", &files, dest.path(), &dl, &NoMultiProgress).unwrap();
    assert_eq!(
        record.files[1].sha256,
        sha256_hex(&b),
        "hash computed when not published"
    );
    let inputs = cached_inputs("msmarco", dest.path()).unwrap();
    let src = dest.path().join("msmarco");
    assert_eq!(
        inputs,
        vec![src.join("collection.tsv"), src.join("sub/queries.tsv")]
    );
    assert_eq!(fs::read(&inputs[1]).unwrap(), b);

    // A rerun keeps finished files (no request) and the recorded hashes.
    let before = server.requests().len();
    let again = download_source("msmarco", &files, dest.path(), &dl, &NoMultiProgress).unwrap();
    assert_eq!(again, record);
    assert_eq!(server.requests().len(), before);

    // A file changed or removed after download sends the user back to `prep download`.
    fs::write(src.join("sub/queries.tsv"), b"truncated").unwrap();
    let err = cached_inputs("msmarco", dest.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sub/queries.tsv") && err.contains("prep download --source msmarco"),
        "{err}"
    );
}

#[test]
fn an_interrupted_source_is_not_complete() {
    let server = Server::start();
    let a = payload(10_000, 12);
    server.route("/ok", Route::ok(a.clone()));
    let dest = tempfile::tempdir().unwrap();
    let files = vec![
        SourceFile {
            name: "ok".into(),
            url: server.url("/ok"),
            size: None,
            sha256: None,
            unpack: None,
        },
        SourceFile {
            name: "later".into(),
            url: server.url("/not-yet"),
            size: None,
            sha256: None,
            unpack: None,
        },
    ];
    assert!(download_source("x", &files, dest.path(), &quick(1, 0), &NoMultiProgress).is_err());
    assert!(dest.path().join("x/ok").exists());
    let err = cached_inputs("x", dest.path()).unwrap_err();
    assert!(matches!(err, FetchError::NotCached { .. }), "{err:?}");
}

/// The (Range, If-Range) pairs of the GETs for `path`.
fn resumes(server: &Server, path: &str) -> Vec<(Option<String>, Option<String>)> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path == path && r.method == "GET")
        .map(|r| (r.range, r.if_range))
        .collect()
}

/// A first run cut off after `cut` bytes of `old`; then the server's file becomes `new` (same
/// length, so only the version tells them apart) and a second run must store exactly `new`.
/// No sha256 and no size are given, as for catalogue files without published ones.
fn changed_between_runs(
    old: Route,
    new: Route,
    cut: usize,
) -> (Server, Vec<u8>, tempfile::TempDir) {
    let server = Server::start();
    server.route(
        "/v",
        Route {
            drop_after: Some(cut),
            drops: 1,
            ..old
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v.json");
    let s = FileSpec::new(server.url("/v"), &dest);
    quick(1, 0).fetch(&s, &NoProgress, &NoProgress).unwrap_err();
    assert_eq!(fs::metadata(part_path(&dest)).unwrap().len(), cut as u64);
    let body = new.body.clone();
    server.route("/v", new);
    let got = quick(1, 0).fetch(&s, &NoProgress, &NoProgress).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), body, "two versions were joined");
    assert_eq!(got.sha256.as_deref(), Some(sha256_hex(&body).as_str()));
    assert_eq!(names_in(dir.path()), vec!["v.json"]);
    (server, body, dir)
}

#[test]
fn a_file_changed_on_the_server_between_runs_restarts_by_etag() {
    let (old, new) = (payload(300_000, 40), payload(300_000, 41));
    let (server, _, _dir) = changed_between_runs(Route::ok(old), Route::ok(new), 100_000);
    let etag_of_old = format!("\"{}\"", &sha256_hex(&payload(300_000, 40))[..16]);
    assert_eq!(
        resumes(&server, "/v"),
        vec![
            (None, None),
            (Some("bytes=100000-".into()), Some(etag_of_old))
        ],
        "the resume names the version it continues"
    );
}

#[test]
fn a_file_changed_on_the_server_between_runs_restarts_by_last_modified() {
    let lm = |day: u32| format!("Tue, {day:02} Dec 2026 10:00:00 GMT");
    let old = Route::ok(payload(200_000, 42)).header("Last-Modified", &lm(1));
    let new = Route::ok(payload(200_000, 43)).header("Last-Modified", &lm(2));
    let (server, _, _dir) = changed_between_runs(old, new, 50_000);
    assert_eq!(
        resumes(&server, "/v")[1],
        (Some("bytes=50000-".into()), Some(lm(1)))
    );
}

#[test]
fn a_part_of_unknown_version_restarts_instead_of_appending() {
    let old = Route {
        no_validator: true,
        ..Route::ok(payload(200_000, 44))
    };
    let new = Route {
        no_validator: true,
        ..Route::ok(payload(200_000, 45))
    };
    let (server, _, _dir) = changed_between_runs(old, new, 70_000);
    assert_eq!(
        resumes(&server, "/v")[1],
        (None, None),
        "no Range without a version"
    );
}

#[test]
fn an_unchanged_file_still_resumes_across_runs() {
    let body = payload(250_000, 46);
    let (server, _, _dir) = changed_between_runs(Route::ok(body.clone()), Route::ok(body), 90_000);
    let got = resumes(&server, "/v");
    assert_eq!(got[1].0.as_deref(), Some("bytes=90000-"));
    assert_eq!(got.len(), 2, "one resume, no restart");
}

#[test]
fn a_destination_in_use_by_another_run_fails_at_once() {
    let server = Server::start();
    let body = payload(10_000, 47);
    server.route("/busy", Route::ok(body.clone()));
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("busy.tsv");
    fs::write(part_path(&dest), &body[..1000]).unwrap();
    let held = OutputLock::acquire(&dest).unwrap();
    let err = quick(1, 3)
        .fetch(
            &spec(&server, "/busy", &dest, &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(err, FetchError::InUse(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("in use by pid {}", std::process::id())) && msg.contains("busy.tsv"),
        "{msg}"
    );
    assert!(server.requests().is_empty(), "nothing was requested");
    assert_eq!(
        fs::read(part_path(&dest)).unwrap(),
        &body[..1000],
        "part untouched"
    );
    drop(held);
    quick(1, 0)
        .fetch(
            &spec(&server, "/busy", &dest, &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(fs::read(&dest).unwrap(), body);
}

#[test]
fn a_redirect_loop_says_too_many_redirects() {
    let server = Server::start();
    server.route("/loop", Route::status(302).header("Location", "/loop"));
    let dir = tempfile::tempdir().unwrap();
    let url = server.url("/loop");
    let err = quick(1, 3)
        .fetch(
            &FileSpec::new(&url, dir.path().join("l")),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "too many redirects ({MAX_REDIRECTS}) fetching {url}"
        )),
        "{msg}"
    );
    assert!(names_in(dir.path()).is_empty());
}

#[test]
fn statuses_and_stalls_are_named_in_errors() {
    let server = Server::start();
    server.route("/bad", Route::status(400));
    let body = payload(100_000, 48);
    server.route(
        "/stall",
        Route {
            stall: Some((10_000, Duration::from_secs(2))),
            ..Route::ok(body.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let err = quick(1, 0)
        .fetch(
            &FileSpec::new(server.url("/bad"), dir.path().join("b")),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    assert!(err.to_string().ends_with("HTTP 400 Bad Request"), "{err}");
    let dl = Downloader::new(DownloadConfig {
        read_timeout: Duration::from_millis(300),
        ..quick(1, 0).config().clone()
    });
    let err = dl
        .fetch(
            &spec(&server, "/stall", &dir.path().join("s"), &body),
            &NoProgress,
            &NoProgress,
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("stalled after 10000 bytes: no data for 0.3s"),
        "{msg}"
    );
}
