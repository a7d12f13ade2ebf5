//! Publishing a folder to the store and pulling it back: whole objects, listing last, byte for
//! byte; reruns upload nothing; a replaced set never shows a listing of changed files.

use std::sync::{Arc, Mutex};

use store::{publish_dir, pull_dir, DirPublisher};
use testdata::moto::{Fault, Proxy};

use crate::common::{files, moto, remote, settings, write_shards, BUCKET};

#[test]
fn a_published_shard_set_pulls_back_byte_for_byte_and_a_rerun_uploads_nothing() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&moto.endpoint(), &tmp.path().join("cache"));
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local).unwrap();
    let index = write_shards(&local, 3, 4, 32, 7);
    let r = remote(&format!("s3://{BUCKET}/runs/a/shards"), &s);

    let first = publish_dir(&local, &r).unwrap();
    assert_eq!(first.uploaded.len(), 3);
    assert!(first.listing_written);
    let mut keys = moto.keys(BUCKET);
    keys.sort();
    assert_eq!(
        keys,
        [
            "runs/a/shards/index.json",
            "runs/a/shards/shard-00000.parquet",
            "runs/a/shards/shard-00001.parquet",
            "runs/a/shards/shard-00002.parquet"
        ]
    );

    let again = publish_dir(&local, &r).unwrap();
    assert!(
        again.uploaded.is_empty() && !again.listing_written,
        "{again:?}"
    );
    assert_eq!(again.kept.len(), 3);

    let back = tmp.path().join("back");
    assert_eq!(
        pull_dir(&r, &back, "index.json").unwrap(),
        Some("index.json")
    );
    assert_eq!(files(&back), files(&local));
    assert_eq!(index.shards.len(), 3);
}

#[test]
fn a_changed_set_removes_the_old_listing_before_replacing_files_and_drops_stale_shards() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&moto.endpoint(), &tmp.path().join("cache"));
    let r = remote(&format!("s3://{BUCKET}/shards"), &s);
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    write_shards(&old, 3, 2, 16, 1);
    publish_dir(&old, &r).unwrap();

    // Another seed: same names, other bytes, one shard fewer.
    let new = tmp.path().join("new");
    std::fs::create_dir_all(&new).unwrap();
    write_shards(&new, 2, 2, 16, 2);
    let report = publish_dir(&new, &r).unwrap();
    assert_eq!(report.uploaded.len(), 2);
    assert_eq!(report.removed, ["shard-00002.parquet"]);
    let back = tmp.path().join("back");
    pull_dir(&r, &back, "index.json").unwrap();
    assert_eq!(files(&back), files(&new));
    assert_eq!(moto.keys(BUCKET).len(), 3);
}

#[test]
fn a_large_file_goes_up_in_parts_and_comes_back_whole() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&moto.endpoint(), &tmp.path().join("cache"));
    let r = remote(&format!("s3://{BUCKET}/big"), &s);
    let mut rng = crate::common::Rng::new(3);
    let len = store::MULTIPART_BYTES * 2 + 12345;
    let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let src = tmp.path().join("big.bin");
    std::fs::write(&src, &bytes).unwrap();
    r.upload("big.bin", &src).unwrap();
    assert_eq!(r.head("big.bin").unwrap(), Some(len as u64));
    let dest = tmp.path().join("down.bin");
    let sha = schemas::sha256_file(&src).unwrap();
    let (got, n) = r.download("big.bin", &dest, Some(&sha)).unwrap();
    assert_eq!((got, n), (sha, len as u64));
    assert!(std::fs::read(&dest).unwrap() == bytes);
}

#[test]
fn a_growing_set_published_again_and_again_lists_the_store_once() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Every request the publisher makes, as "METHOD path".
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let proxy = Proxy::start(moto.port, move |_, method, path| {
        log.lock().unwrap().push(format!("{method} {path}"));
        Fault::Forward
    });
    let s = settings(&proxy.endpoint(), &tmp.path().join("cache"));
    let r = remote(&format!("s3://{BUCKET}/grow/shards"), &s);
    let all = tmp.path().join("all");
    std::fs::create_dir_all(&all).unwrap();
    let full = write_shards(&all, 4, 2, 16, 9);
    // A mix lays the set out one shard at a time; one publisher goes after each.
    let dir = tmp.path().join("staging");
    std::fs::create_dir_all(&dir).unwrap();
    let mut publisher = DirPublisher::default();
    for k in 1..=full.shards.len() {
        let file = &full.shards[k - 1].file;
        std::fs::copy(all.join(file), dir.join(file)).unwrap();
        let mut index = full.clone();
        index.shards.truncate(k);
        index.complete = k == full.shards.len();
        index.write(&dir).unwrap();
        seen.lock().unwrap().clear();
        let report = publisher.publish(&dir, &r).unwrap();
        assert_eq!(report.uploaded, std::slice::from_ref(file), "publish {k}");
        assert_eq!(report.kept.len(), k - 1);
        let requests = seen.lock().unwrap().clone();
        let lists = requests.iter().filter(|q| q.contains("list-type")).count();
        let reads = requests.iter().filter(|q| q.starts_with("GET")).count();
        let puts = requests.iter().filter(|q| q.starts_with("PUT")).count();
        // The first call reads the store's listing and lists the folder; later ones know.
        assert_eq!(
            (lists, reads),
            if k == 1 { (1, 2) } else { (0, 0) },
            "{requests:?}"
        );
        assert_eq!(puts, 2, "one shard and the listing: {requests:?}");
    }
    let back = tmp.path().join("back");
    pull_dir(&r, &back, "index.json").unwrap();
    assert_eq!(files(&back), files(&all));
}
