//! The training side: a mirror folder fetches shards on demand, verified by the index's sha256,
//! re-verifies cached copies, refuses damaged objects, and stays under its size cap.

use store::{publish_dir, Mirror, StoreError};

use crate::common::{moto, remote, settings, write_shards, BUCKET};

#[test]
fn shards_are_fetched_verified_and_cached_copies_rechecked() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&moto.endpoint(), &tmp.path().join("cache"));
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local).unwrap();
    let index = write_shards(&local, 2, 3, 16, 5);
    let url = format!("s3://{BUCKET}/m/shards");
    publish_dir(&local, &remote(&url, &s)).unwrap();

    let m = Mirror::open_with(&url, &s).unwrap();
    assert_eq!(
        std::fs::read(m.dir().join("index.json")).unwrap(),
        std::fs::read(local.join("index.json")).unwrap()
    );
    let e = &index.shards[0];
    let path = m.fetch(&e.file, &e.sha256).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(local.join(&e.file)).unwrap()
    );

    // A cached copy damaged on disk is not trusted: it is fetched again.
    std::fs::write(&path, b"not a shard").unwrap();
    let again = m.fetch(&e.file, &e.sha256).unwrap();
    assert_eq!(schemas::sha256_file(&again).unwrap(), e.sha256);
}

#[test]
fn a_damaged_object_is_refused_by_sha256_and_leaves_nothing() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let s = settings(&moto.endpoint(), &tmp.path().join("cache"));
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local).unwrap();
    let index = write_shards(&local, 2, 2, 16, 9);
    let url = format!("s3://{BUCKET}/d/shards");
    let r = remote(&url, &s);
    publish_dir(&local, &r).unwrap();
    // Flip one byte in the middle of the stored shard.
    let key = "d/shards/shard-00001.parquet";
    let mut bytes = r.get("shard-00001.parquet").unwrap().unwrap().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    r.put("shard-00001.parquet", bytes.into()).unwrap();

    let m = Mirror::open_with(&url, &s).unwrap();
    let e = &index.shards[1];
    match m.fetch(&e.file, &e.sha256) {
        Err(StoreError::Damaged { url, expected, .. }) => {
            assert!(url.ends_with(key), "{url}");
            assert_eq!(expected, e.sha256);
        }
        other => panic!("expected a sha256 refusal, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(m.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("shard-00001"))
        .collect();
    assert!(left.is_empty(), "damaged bytes left behind: {left:?}");
}

#[test]
fn the_cache_stays_under_its_cap_evicting_the_least_recently_used() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut s = settings(&moto.endpoint(), &tmp.path().join("cache"));
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local).unwrap();
    let index = write_shards(&local, 8, 1, 64, 11);
    let url = format!("s3://{BUCKET}/c/shards");
    publish_dir(&local, &remote(&url, &s)).unwrap();
    let one = std::fs::metadata(local.join(&index.shards[0].file))
        .unwrap()
        .len();
    // Room for about five shards; four are always pinned (being read and two read ahead, + 1).
    s.cache_bytes = one * 5 + one / 2;
    let m = Mirror::open_with(&url, &s).unwrap();
    for e in &index.shards {
        m.fetch(&e.file, &e.sha256).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held: Vec<String> = std::fs::read_dir(m.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert!(held.len() <= 5, "{held:?}");
    assert!(held.contains(&"shard-00007.parquet".to_owned()), "{held:?}");
    assert!(
        !held.contains(&"shard-00000.parquet".to_owned()),
        "{held:?}"
    );
}
