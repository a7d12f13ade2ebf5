//! Archives (`.tar.gz`, `.7z`) served by a real HTTP server on 127.0.0.1, downloaded, verified and
//! unpacked by `download_source`, and returned unpacked by `cached_inputs`.

use crate::common;

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;
use std::time::Duration;

use common::{payload, sha256_hex, Route, Server};
use fetch::{
    cached_inputs, download_source, unpack, unpack::unpacking_path, ArchiveFormat, Cap,
    DownloadConfig, Downloader, FetchError, NoMultiProgress, SourceFile,
};
use schemas::{NoProgress, OutputLock};

fn quick() -> Downloader {
    Downloader::new(DownloadConfig {
        retries: 0,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        jobs: 2,
        proxy_from_env: false,
        ..DownloadConfig::default()
    })
}

/// A .tar.gz of `(name, bytes)` files; a name ending in `/` is a folder, `link -> target` a
/// symlink. Names are written into the header raw, so hostile ones (`../x`) can be built too.
fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        if let Some((link, target)) = name.split_once(" -> ") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_link_name(target).unwrap();
            h.set_path(link).unwrap();
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            continue;
        }
        let raw = &mut h.as_gnu_mut().unwrap().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A .7z (LZMA2, the writer's default) of `(name, bytes)` files; a name ending in `/` is a folder.
fn seven_z(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = sevenz_rust2::ArchiveWriter::new(Cursor::new(Vec::new())).unwrap();
    for (name, data) in entries {
        if let Some(dir) = name.strip_suffix('/') {
            w.push_archive_entry::<&[u8]>(sevenz_rust2::ArchiveEntry::new_directory(dir), None)
                .unwrap();
        } else {
            w.push_archive_entry(sevenz_rust2::ArchiveEntry::new_file(name), Some(*data))
                .unwrap();
        }
    }
    w.finish().unwrap().into_inner()
}

fn serve(
    server: &Server,
    path: &str,
    body: &[u8],
    name: &str,
    format: ArchiveFormat,
) -> SourceFile {
    server.route(path, Route::ok(body.to_vec()));
    SourceFile {
        name: name.into(),
        url: server.url(path),
        size: Some(body.len() as u64),
        sha256: Some(sha256_hex(body)),
        unpack: Some(format),
    }
}

/// Every path under `dir`, relative, sorted; folders end in `/`.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let name = p.file_name().unwrap().to_string_lossy();
            if name.starts_with('.') && name.ends_with(".lock") {
                // The destinations' lock files stay by design.
                continue;
            }
            if p.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &p, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn tar_gz_and_7z_are_unpacked_and_returned_as_folders() {
    let server = Server::start();
    // Incompressible bodies over 1 MiB, so the readers cross their buffer boundaries.
    let collection = payload(1_300_000, 21);
    let queries = payload(40_000, 22);
    let posts = payload(1_100_000, 23);
    let links = b"<postlinks>\n</postlinks>\n".to_vec();
    let tgz = tar_gz(&[
        ("collection.tsv", &collection),
        ("queries/", b""),
        ("queries/queries.train.tsv", &queries),
        ("./empty.tsv", b""),
    ]);
    let sz = seven_z(&[
        ("Posts.xml", &posts),
        ("meta/", b""),
        ("meta/PostLinks.xml", &links),
    ]);
    let plain = payload(5_000, 24);
    server.route("/plain.tsv", Route::ok(plain.clone()));
    let files = vec![
        serve(
            &server,
            "/c.tar.gz",
            &tgz,
            "collection.tar.gz",
            ArchiveFormat::TarGz,
        ),
        SourceFile {
            name: "qrels.train.tsv".into(),
            url: server.url("/plain.tsv"),
            ..SourceFile::default()
        },
        serve(
            &server,
            "/s.7z",
            &sz,
            "sites/askubuntu.com.7z",
            ArchiveFormat::SevenZip,
        ),
    ];
    let dest = tempfile::tempdir().unwrap();
    let src = dest.path().join("mix");
    let record = download_source("mix", &files, dest.path(), &quick(), &NoMultiProgress).unwrap();
    assert_eq!(record.files[0].unpacked.as_deref(), Some("collection"));
    assert_eq!(record.files[1].unpacked, None);
    assert_eq!(
        record.files[2].unpacked.as_deref(),
        Some("sites/askubuntu.com")
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(src.join(fetch::COMPLETE_FILE)).unwrap()).unwrap();
    assert_eq!(
        json["files"][2]["unpacked"], "sites/askubuntu.com",
        "{json}"
    );
    assert!(json["files"][1].get("unpacked").is_none(), "{json}");

    let inputs = cached_inputs("mix", dest.path()).unwrap();
    assert_eq!(
        inputs,
        vec![
            src.join("collection"),
            src.join("qrels.train.tsv"),
            src.join("sites/askubuntu.com")
        ]
    );
    assert_eq!(
        tree(&inputs[0]),
        vec![
            "collection.tsv",
            "empty.tsv",
            "queries/",
            "queries/queries.train.tsv"
        ]
    );
    assert_eq!(
        fs::read(inputs[0].join("collection.tsv")).unwrap(),
        collection
    );
    assert_eq!(
        fs::read(inputs[0].join("queries/queries.train.tsv")).unwrap(),
        queries
    );
    assert_eq!(fs::read(&inputs[1]).unwrap(), plain);
    assert_eq!(
        tree(&inputs[2]),
        vec!["Posts.xml", "meta/", "meta/PostLinks.xml"]
    );
    assert_eq!(fs::read(inputs[2].join("Posts.xml")).unwrap(), posts);
    assert_eq!(
        fs::read(inputs[2].join("meta/PostLinks.xml")).unwrap(),
        links
    );
    // No temporary folder is left beside the results.
    assert!(
        !tree(&src).iter().any(|p| p.contains(".unpacking")),
        "{:?}",
        tree(&src)
    );

    // A rerun fetches nothing and does not unpack again (a file added to the folder survives).
    let before = server.requests().len();
    fs::write(inputs[0].join("marker"), b"x").unwrap();
    let again = download_source("mix", &files, dest.path(), &quick(), &NoMultiProgress).unwrap();
    assert_eq!(again, record);
    assert_eq!(server.requests().len(), before);
    assert!(inputs[0].join("marker").exists());

    // Archives deleted after unpacking are neither fetched nor needed again.
    fs::remove_file(src.join("collection.tar.gz")).unwrap();
    fs::remove_file(src.join("sites/askubuntu.com.7z")).unwrap();
    let again = download_source("mix", &files, dest.path(), &quick(), &NoMultiProgress).unwrap();
    assert_eq!(again, record);
    assert_eq!(server.requests().len(), before);
    assert_eq!(cached_inputs("mix", dest.path()).unwrap(), inputs);

    // A missing unpacked folder sends the user back to `prep download`, which unpacks again.
    fs::remove_dir_all(&inputs[2]).unwrap();
    let err = cached_inputs("mix", dest.path()).unwrap_err().to_string();
    assert!(
        err.contains("sites/askubuntu.com/") && err.contains("prep download --source mix"),
        "{err}"
    );
    download_source("mix", &files, dest.path(), &quick(), &NoMultiProgress).unwrap();
    assert_eq!(fs::read(inputs[2].join("Posts.xml")).unwrap(), posts);
}

#[test]
fn traversal_entries_are_rejected() {
    let good = b"fine".as_slice();
    let evil = b"owned".as_slice();
    let cases: Vec<(&str, Vec<u8>, ArchiveFormat)> = vec![
        (
            "up.tar.gz",
            tar_gz(&[("ok.txt", good), ("../escaped.txt", evil)]),
            ArchiveFormat::TarGz,
        ),
        (
            "abs.tar.gz",
            tar_gz(&[("ok.txt", good), ("/tmp/escaped.txt", evil)]),
            ArchiveFormat::TarGz,
        ),
        (
            "deep.tar.gz",
            tar_gz(&[("a/../../escaped.txt", evil)]),
            ArchiveFormat::TarGz,
        ),
        (
            "link.tar.gz",
            tar_gz(&[("escape -> /tmp", b""), ("escape/escaped.txt", evil)]),
            ArchiveFormat::TarGz,
        ),
        (
            "up.7z",
            seven_z(&[("ok.txt", good), ("../escaped.txt", evil)]),
            ArchiveFormat::SevenZip,
        ),
        (
            "back.7z",
            seven_z(&[("..\\escaped.txt", evil)]),
            ArchiveFormat::SevenZip,
        ),
    ];
    let server = Server::start();
    for (name, body, format) in cases {
        let dest = tempfile::tempdir().unwrap();
        let files = vec![serve(&server, &format!("/{name}"), &body, name, format)];
        let err =
            download_source("s", &files, dest.path(), &quick(), &NoMultiProgress).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::Corrupt { .. }), "{name}: {err:?}");
        assert!(
            msg.contains(name)
                && msg.contains("escape")
                && (msg.contains("outside") || msg.contains("links")),
            "{name}: {msg}"
        );
        let src = dest.path().join("s");
        // Only the verified archive is there: no unpacked or temporary folder, no record,
        // nothing written outside.
        assert_eq!(tree(&src), vec![name.to_owned()], "{name}");
        assert_eq!(
            tree(dest.path()),
            vec!["s/".to_owned(), format!("s/{name}")]
        );
        assert!(!Path::new("/tmp/escaped.txt").exists());
        assert!(matches!(
            cached_inputs("s", dest.path()).unwrap_err(),
            FetchError::NotCached { .. }
        ));
    }
}

#[test]
fn a_corrupt_archive_leaves_no_unpacked_folder() {
    let big = payload(600_000, 31);
    let tgz = tar_gz(&[("a.tsv", &big), ("b.tsv", &big)]);
    // Cut off mid-stream: what a crash would leave if the archive itself were unpacked live.
    let truncated = tgz[..tgz.len() / 2].to_vec();
    let mut sz = seven_z(&[("Posts.xml", &big)]);
    // A flipped byte inside the packed data (the 7z header sits at the end).
    let mid = sz.len() / 2;
    sz[mid] ^= 0x5a;
    let server = Server::start();
    for (name, body, format) in [
        ("collection.tar.gz", truncated, ArchiveFormat::TarGz),
        ("site.7z", sz, ArchiveFormat::SevenZip),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let src = dest.path().join("s");
        let target = src.join(format.unpacked_name(name));
        // Leftovers of an unpack killed half-way are cleared, never taken for a result.
        let stale = unpacking_path(&target);
        fs::create_dir_all(&stale).unwrap();
        fs::File::create(stale.join("half.tsv"))
            .unwrap()
            .write_all(b"half")
            .unwrap();
        let files = vec![serve(&server, &format!("/{name}"), &body, name, format)];
        let err =
            download_source("s", &files, dest.path(), &quick(), &NoMultiProgress).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, FetchError::Corrupt { .. }), "{name}: {err:?}");
        assert!(
            msg.contains(&src.join(name).display().to_string()) && msg.contains("damaged archive"),
            "{name}: {msg}"
        );
        assert_eq!(tree(&src), vec![name.to_owned()], "{name}");
        let err = cached_inputs("s", dest.path()).unwrap_err().to_string();
        assert!(err.contains("prep download --source s"), "{err}");
    }
}

#[test]
fn an_archive_expanding_beyond_its_cap_stops_and_leaves_nothing() {
    // 3 MiB of zeros packs into a few KiB: a small decompression bomb for a 1 MiB cap.
    let zeros = vec![0u8; 3 << 20];
    let small = payload(1000, 32);
    let server = Server::start();
    for (name, body, format) in [
        (
            "bomb.tar.gz",
            tar_gz(&[("ok.tsv", &small), ("zeros.tsv", &zeros)]),
            ArchiveFormat::TarGz,
        ),
        (
            "bomb.7z",
            seven_z(&[("ok.xml", &small), ("zeros.xml", &zeros)]),
            ArchiveFormat::SevenZip,
        ),
    ] {
        assert!(body.len() < 64 << 10, "{name}: {} bytes", body.len());
        let dest = tempfile::tempdir().unwrap();
        let src = dest.path().join("s");
        let files = vec![serve(&server, &format!("/{name}"), &body, name, format)];
        let dl = Downloader::new(DownloadConfig {
            max_unpacked: Some(1 << 20),
            ..quick().config().clone()
        });
        let err = download_source("s", &files, dest.path(), &dl, &NoMultiProgress).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, FetchError::UnpackTooLarge { limit: 1048576, .. }),
            "{name}: {err:?}"
        );
        assert!(
            msg.contains(name) && msg.contains("beyond the cap of 1048576 bytes"),
            "{name}: {msg}"
        );
        // The verified archive stays; no folder, no temporary folder, no completion record.
        assert_eq!(tree(&src), vec![name.to_owned()], "{name}");
        assert!(!unpacking_path(&src.join(format.unpacked_name(name))).exists());
        assert!(cached_inputs("s", dest.path()).is_err());

        // The same archive under a cap it fits in unpacks whole.
        let target = dest.path().join("out");
        unpack(
            &src.join(name),
            format,
            &target,
            &Cap::given(4 << 20),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(tree(&target).len(), 2, "{name}");
    }
}

#[test]
fn the_default_cap_follows_the_archive_size() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tar.gz");
    fs::write(&archive, tar_gz(&[("x", b"y")])).unwrap();
    let cap = Cap::default_for(&archive).unwrap();
    assert_eq!(
        cap.bytes,
        fetch::unpack::DEFAULT_FLOOR,
        "small archives get the floor"
    );
    assert!(cap.origin.contains("--max-unpacked-gib"), "{}", cap.origin);
    assert_eq!(fetch::default_cap(1 << 30), 32 << 30);
}

#[test]
fn an_unpack_target_in_use_fails_at_once_and_stale_temps_are_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("c.tar.gz");
    fs::write(&archive, tar_gz(&[("a.tsv", b"1\t2\n")])).unwrap();
    let target = dir.path().join("c");
    let held = OutputLock::acquire(&target).unwrap();
    let err = unpack(
        &archive,
        ArchiveFormat::TarGz,
        &target,
        &Cap::given(1 << 20),
        &NoProgress,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("in use by pid {}", std::process::id())),
        "{err}"
    );
    assert!(!target.exists());
    drop(held);
    // A killed unpack's temporary folder is removed by the next one.
    let stale = unpacking_path(&target);
    fs::create_dir_all(&stale).unwrap();
    fs::write(stale.join("half.tsv"), b"half").unwrap();
    unpack(
        &archive,
        ArchiveFormat::TarGz,
        &target,
        &Cap::given(1 << 20),
        &NoProgress,
    )
    .unwrap();
    assert!(!stale.exists());
    assert_eq!(tree(&target), vec!["a.tsv".to_owned()]);
}
