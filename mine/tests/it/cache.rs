//! The embedding cache: a second run reads every vector instead of encoding it, bit for bit.

use mine::{curate, EmbedOptions, Embedder, Mode, NegativeOptions, SearchOptions};
use schemas::NoProgress;

use crate::common;
use encoder::Precision::{Bf16, F32};

#[test]
fn a_second_run_reads_every_vector_from_the_cache_and_mines_the_same() {
    let Some((fx, _)) = common::squad_and_model() else {
        return;
    };
    let enc = common::encoder().unwrap();
    let sha =
        schemas::sha256_file(&common::model_dir().unwrap().join("model.safetensors")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let mode = Mode::Negatives(NegativeOptions {
        num_negatives: 2,
        ..Default::default()
    });
    let run = || {
        let e = Embedder::new(enc, EmbedOptions::default())
            .with_cache(root.path(), &sha)
            .unwrap();
        curate(
            &e,
            &fx.records,
            None,
            &mode,
            SearchOptions::default(),
            &NoProgress,
        )
        .unwrap()
    };
    let first = run();
    let n = first.counts["distinct texts"];
    assert_eq!((first.embedded.encoded, first.embedded.cached), (n, 0));
    let second = run();
    assert_eq!((second.embedded.encoded, second.embedded.cached), (0, n));
    assert_eq!(
        second.records(&fx.records).unwrap(),
        first.records(&fx.records).unwrap()
    );
    assert_eq!(
        second.counts, first.counts,
        "what is written does not say where vectors came from"
    );

    // The cached vectors are the encoder's, bit for bit; a new text is the only one encoded.
    let mut texts: Vec<String> = fx
        .records
        .iter()
        .map(|r| r.anchor.clone())
        .take(5)
        .collect();
    texts.push("A text no fixture holds.".to_owned());
    let cached = Embedder::new(enc, EmbedOptions::default())
        .with_cache(root.path(), &sha)
        .unwrap();
    let (v, counts) = cached.embed_counted(&texts, &NoProgress).unwrap();
    assert_eq!((counts.encoded, counts.cached), (1, 5));
    let plain = Embedder::new(enc, EmbedOptions::default())
        .embed(&texts, &NoProgress)
        .unwrap();
    assert_eq!(v, plain);
}

#[test]
fn a_damaged_segment_is_named_and_other_lengths_keep_their_own_cache() {
    let Some(enc) = common::encoder() else { return };
    let root = tempfile::tempdir().unwrap();
    let texts = vec!["one text".to_owned(), "another text".to_owned()];
    let e = Embedder::new(enc, EmbedOptions::default())
        .with_cache(root.path(), "m")
        .unwrap();
    e.embed(&texts, &NoProgress).unwrap();
    let dir = root
        .path()
        .join("m")
        .join(format!("len-{}", enc.max_seq_length()));
    let npy: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "npy"))
        .collect();
    assert_eq!(npy.len(), 1, "one segment");
    let mut other = mine::EmbeddingCache::open(root.path(), "m", 16, F32, enc.dim()).unwrap();
    assert!(
        other.is_empty(),
        "another max_seq_length has its own (empty) cache"
    );
    other
        .store(
            &mine::cache::keys(&texts),
            &[vec![0.5; enc.dim()], vec![0.25; enc.dim()]],
        )
        .unwrap();
    assert_eq!(
        mine::EmbeddingCache::open(root.path(), "m", 16, F32, enc.dim())
            .unwrap()
            .len(),
        2
    );
    // Vectors of a reduced-precision encoder are other vectors: a cache of their own.
    let bf16 = mine::EmbeddingCache::open(root.path(), "m", 16, Bf16, enc.dim()).unwrap();
    assert!(bf16.is_empty(), "bf16 vectors never mix with f32 ones");
    assert!(root.path().join("m/len-16-bf16").is_dir());

    let bytes = std::fs::read(&npy[0]).unwrap();
    std::fs::write(&npy[0], &bytes[..bytes.len() - 4]).unwrap();
    let err = Embedder::new(enc, EmbedOptions::default())
        .with_cache(root.path(), "m")
        .err()
        .expect("a truncated segment is refused")
        .to_string();
    assert!(
        err.contains(&npy[0].display().to_string()) && err.contains("header says"),
        "{err}"
    );
}
