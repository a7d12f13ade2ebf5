//! The store misbehaving: throttling and 5xx are retried with backoff; an upload that dies
//! half-way leaves no object under its final name.

use std::sync::atomic::Ordering;
use std::time::Duration;

use store::publish_dir;
use testdata::moto::{Fault, Proxy};

use crate::common::{files, moto, remote, settings, write_shards, BUCKET};

#[test]
fn throttling_and_5xx_are_retried_and_the_result_is_whole() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Every third request is answered 503 SlowDown.
    let proxy = Proxy::start(moto.port, |n, _, _| {
        if n % 3 == 1 {
            Fault::Throttle
        } else {
            Fault::Forward
        }
    });
    let s = settings(&proxy.endpoint(), &tmp.path().join("cache"));
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local).unwrap();
    write_shards(&local, 4, 2, 16, 3);
    let r = remote(&format!("s3://{BUCKET}/t/shards"), &s);
    publish_dir(&local, &r).unwrap();
    let back = tmp.path().join("back");
    store::pull_dir(&r, &back, "index.json").unwrap();
    assert_eq!(files(&back), files(&local));
    let throttled = proxy.faults.load(Ordering::SeqCst);
    assert!(throttled >= 3, "only {throttled} requests were throttled");
}

#[test]
fn an_upload_cut_off_half_way_leaves_no_object_under_its_name() {
    let Some(moto) = moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Every PUT of a shard stalls half-way through its body; the client times out.
    let proxy = Proxy::start(moto.port, |_, method, path| {
        if method == "PUT" && path.contains("shard-") {
            Fault::Stall
        } else {
            Fault::Forward
        }
    });
    let mut s = settings(&proxy.endpoint(), &tmp.path().join("cache"));
    s.options.push(("timeout".into(), "2s".into()));
    s.attempts = 1;
    let local = tmp.path().join("shards");
    std::fs::create_dir_all(&local).unwrap();
    write_shards(&local, 2, 2, 16, 4);
    let r = remote(&format!("s3://{BUCKET}/k/shards"), &s);
    let err = publish_dir(&local, &r).unwrap_err();
    assert!(
        proxy.stalled.load(Ordering::SeqCst),
        "no upload reached the stall: {err}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let keys = moto.keys(BUCKET);
    assert!(
        keys.is_empty(),
        "objects under final names after a cut upload: {keys:?}"
    );
}
