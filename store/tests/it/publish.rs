//! Publishing a folder to the store and pulling it back: whole objects, listing last, byte for
//! byte; reruns upload nothing; a replaced set never shows a listing of changed files.

use store::{publish_dir, pull_dir};

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
