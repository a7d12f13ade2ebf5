//! The WordPiece fast path gives exactly the ids of the HF `tokenizers` crate for the real
//! all-MiniLM-L6-v2 tokenizer: on the bench corpus, the reference sentences, every fixture
//! text, hand-written edge cases and seeded random strings, at several max lengths.

use std::path::Path;

use mixer::wordpiece::BertWordPiece;
use mixer::MixTokenizer;
use rand::{Rng, SeedableRng};
use testdata::{fixture_dir, reference_dir, shared_dir, test_model_dir};
use tokenizers::{Tokenizer, TruncationParams};

fn hf(path: &Path, max: Option<usize>) -> Tokenizer {
    let mut t = Tokenizer::from_file(path).unwrap();
    t.with_padding(None);
    t.with_truncation(max.map(|max_length| TruncationParams {
        max_length,
        ..Default::default()
    }))
    .unwrap();
    t
}

/// Asserts ours == HF on every text at every max length; returns the number of texts checked.
fn check(tok_json: &Path, texts: &[String], maxes: &[Option<usize>], what: &str) -> usize {
    let ours = BertWordPiece::from_file(tok_json).unwrap().unwrap();
    for &max in maxes {
        let theirs = hf(tok_json, max);
        for (i, text) in texts.iter().enumerate() {
            let want = theirs.encode_fast(text.as_str(), true).unwrap();
            let got = ours.encode(text, max);
            assert_eq!(
                got,
                want.get_ids(),
                "{what} text {i} at max {max:?}: {text:?}"
            );
        }
    }
    texts.len()
}

fn model_json() -> Option<std::path::PathBuf> {
    Some(test_model_dir()?.join("tokenizer.json"))
}

#[test]
fn minilm_takes_the_fast_path_and_matches_the_reference() {
    let (Some(model), Some(reference)) = (test_model_dir(), reference_dir()) else {
        return;
    };
    let parity: serde_json::Value =
        serde_json::from_slice(&std::fs::read(reference.join("minilm_parity.json")).unwrap())
            .unwrap();
    let sentences: Vec<String> = serde_json::from_value(parity["sentences"].clone()).unwrap();
    let ours = BertWordPiece::from_file(&model.join("tokenizer.json"))
        .unwrap()
        .unwrap();
    assert_eq!(ours.num_special_tokens(), 2);
    for (key, max) in [("input_ids_max256", 256), ("input_ids_max128", 128)] {
        let want: Vec<Vec<u32>> = serde_json::from_value(parity[key].clone()).unwrap();
        let got: Vec<Vec<u32>> = sentences
            .iter()
            .map(|s| ours.encode(s, Some(max)))
            .collect();
        assert_eq!(got, want, "{key}");
        // And through the mixer's tokenizer, which must have chosen this engine.
        let mt = MixTokenizer::open(&model, max, max).unwrap();
        assert_eq!(mt.engine(), "prep-wordpiece");
        let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
        assert_eq!(
            mt.encode_many(&texts, true).unwrap(),
            want,
            "{key} via MixTokenizer"
        );
    }
    check(
        &model.join("tokenizer.json"),
        &sentences,
        &[Some(256), Some(128), None],
        "minilm_parity",
    );
}

#[test]
fn bench_corpus_lines_match_hf() {
    let (Some(json), Some(shared)) = (model_json(), shared_dir()) else {
        return;
    };
    let text = std::fs::read_to_string(shared.join("bench/corpus.txt")).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = check(&json, &lines, &[Some(64), Some(250), None], "corpus.txt");
    assert!(n > 1000, "{n} corpus lines");
}

fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

#[test]
fn fixture_texts_match_hf() {
    let Some(json) = model_json() else { return };
    let mut texts = Vec::new();
    let mut files = 0;
    for source in [
        "squad2",
        "amazon_qa",
        "eli5",
        "yahoo_answers",
        "stackexchange",
        "natural_questions",
        "searchqa",
        "triviaqa",
        "gooaq",
        "msmarco",
        "quora",
    ] {
        let Some(dir) = fixture_dir(source) else {
            return;
        };
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.extension().is_some_and(|e| e == "gz") || !path.is_file() {
                continue;
            }
            let Ok(body) = std::fs::read_to_string(&path) else {
                continue;
            };
            files += 1;
            // Raw lines (markup, escapes and all), and the decoded strings of JSON files.
            texts.extend(body.lines().map(str::to_owned));
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                json_strings(&v, &mut texts);
            } else {
                for line in body.lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                        json_strings(&v, &mut texts);
                    }
                }
            }
        }
    }
    let n = check(&json, &texts, &[Some(250), Some(64)], "fixtures");
    assert!(files >= 11 && n > 5000, "{files} files, {n} texts");
}

#[test]
fn edge_cases_match_hf() {
    let Some(json) = model_json() else { return };
    let long_word = "a".repeat(150);
    let mut texts: Vec<String> = [
        "",
        " ",
        "   \t\n\r  ",
        "\u{a0}\u{2003}\u{3000}\u{2028}",
        "Café au lait, naïve façade, résumé, Ångström, Crème Brûlée",
        "ÀÉÎÕÜ àéîõü ÇÑ çñ ß ẞ Ø ø Æ æ Œ œ ı İstanbul",
        "e\u{301}\u{316} o\u{308}\u{323} a\u{20dd} x\u{903}y",
        "ΑΘΗΝΑ Ελληνικά ΟΔΥΣΣΕΥΣ σοφία ς",
        "МОСКВА Москва ПРИВЕТ мир Ёлка ёжик",
        "日本語のテキスト 中文文本 한국어 텍스트 野口里佳 Noguchi Rika 𠀀𪜀",
        "emoji 😀👍🏽 👨‍👩‍👧 ❤️ 🇯🇵 ⭐",
        "control\u{0}chars\u{1}\u{7}\u{b}\u{c}\u{1b}[0m\u{7f}\u{85}x",
        "zero\u{200b}width\u{200c}join\u{200d}ers\u{feff}bom\u{2060}",
        "replacement \u{fffd} char and private \u{e000} use",
        "Kelvin \u{212a} Ohm \u{2126} Angstrom \u{212b} greek question \u{37e} varia \u{1fef}",
        "ﬁ ﬂ ﬀ ligatures, ① ² ½ fullwidth ＡＢＣ １２３",
        "punctuation!?.,;:'\"()[]{}<>@#$%^&*-_=+|\\/~` «»“”‘’—–…¿¡",
        "[CLS] [SEP] [MASK] [PAD] [UNK]",
        "text with [MASK] inside and [MASK][MASK] adjacent[SEP]glued",
        "lowercase [mask] and [ MASK ] and [MASK and MASK] and [[MASK]]",
        "[CL\u{0}S] [MA\u{200b}SK] é[MASK]é 中[SEP]中",
        "unaffable unbelievably antidisestablishmentarianism supercalifragilistic",
        "don't won't it's 3.14 1,000,000 e-mail foo@bar.com https://x.y/z?a=1&b=2",
        "##suffix ## #hash tag",
        "İ \u{130}\u{307} ǅ ǈ ǋ ῼ",
        "a\u{301}\u{301}\u{301}\u{301}\u{301}",
        "\u{1d165}\u{1d16d}\u{1d166} mc marks \u{0f39}",
        "Hangul jamo \u{1100}\u{1161}\u{11a8} composed 각",
        "tabs\tand\nnewlines\r\nand\u{b}vt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    texts.push(long_word.clone());
    texts.push(format!("short {long_word} words"));
    texts.push(format!("{}é", "b".repeat(100)));
    texts.push("b".repeat(100));
    texts.push(format!("{} tail", "word ".repeat(400)));
    texts.push("supercalifragilisticexpialidocious ".repeat(50));
    let maxes = [
        None,
        Some(2),
        Some(3),
        Some(5),
        Some(64),
        Some(250),
        Some(512),
    ];
    check(&json, &texts, &maxes, "edge cases");
}

#[test]
fn every_vocab_token_and_random_strings_match_hf() {
    let Some(json) = model_json() else { return };
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let mut texts: Vec<String> = v["model"]["vocab"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    texts.sort();
    // Every vocab token, alone and uppercased, in chunks of 50 joined by spaces and glued.
    let joined: Vec<String> = texts
        .chunks(50)
        .flat_map(|c| [c.join(" "), c.join("").to_uppercase()])
        .collect();
    texts.extend(joined);

    // Seeded random strings over a palette of troublesome chars plus any scalar value.
    let palette: Vec<char> = "aZz09 \t\n.,![]#é\u{301}\u{316}\u{323}\u{903}中日한😀\u{200d}\u{200b}\u{0}\u{85}\u{a0}\u{fffd}\u{212a}\u{37e}\u{130}ΣσςДßﬁ①"
        .chars()
        .collect();
    let pieces = [
        "[MASK]",
        "[SEP]",
        "[CLS",
        "MASK]",
        "##",
        "un",
        "able",
        "the",
        "Ünïcödé",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    for _ in 0..3000 {
        let len = rng.random_range(0..60);
        let mut s = String::new();
        for _ in 0..len {
            match rng.random_range(0..10) {
                0..=5 => s.push(palette[rng.random_range(0..palette.len())]),
                6 | 7 => s.push_str(pieces[rng.random_range(0..pieces.len())]),
                _ => {
                    if let Some(c) = char::from_u32(rng.random_range(0..0x3_0000)) {
                        s.push(c)
                    }
                }
            }
        }
        texts.push(s);
    }
    check(&json, &texts, &[None, Some(16)], "vocab + random");
}
