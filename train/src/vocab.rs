//! A small model folder built from texts alone: an uncased WordPiece tokenizer trained on them
//! and a tiny BERT config. `prep demo` trains from it when no `--model` is given.

use std::path::Path;

use encoder::tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use std::collections::{BTreeMap, BTreeSet};

use encoder::tokenizers::models::wordpiece::WordPiece;
use encoder::tokenizers::normalizers::bert::BertNormalizer;
use encoder::tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use encoder::tokenizers::processors::bert::BertProcessing;
use encoder::tokenizers::{AddedToken, Tokenizer};
use encoder::tokenizers::{
    NormalizedString, Normalizer, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
};
use encoder::BertConfig;
use serde_json::json;

use crate::error::{Result, TrainError};

/// BERT's special tokens, in the id order they get (`[PAD]` = 0 as in BERT).
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// A tiny BERT for demos: 2 layers, hidden 128, 4 heads, FFN 512.
pub fn tiny_config(vocab_size: usize, max_positions: usize) -> BertConfig {
    BertConfig {
        vocab_size,
        hidden_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 512,
        max_position_embeddings: max_positions,
        ..BertConfig::minilm_l6()
    }
}

/// Builds an uncased WordPiece tokenizer of at most `vocab_size` entries from `texts` and writes a
/// model folder without weights (`tokenizer.json`, `vocab.txt`, tokenizer configs, `config.json`
/// from `config_for(actual_vocab_size)`). Deterministic for the same texts.
pub fn build_model_folder(
    texts: &[String],
    vocab_size: usize,
    dir: &Path,
    config_for: impl FnOnce(usize) -> BertConfig,
) -> Result<()> {
    let bad = |e: Box<dyn std::error::Error + Send + Sync>| {
        TrainError::invalid(dir, format!("building the WordPiece vocab: {e}"))
    };
    let normalizer = BertNormalizer::new(true, true, None, true);
    // The vocab, chosen deterministically (the tokenizers trainer iterates hash maps, so its
    // vocab varies between runs): the special tokens, every character seen as a word start and
    // as a `##` continuation (so any word splits into pieces, never [UNK]), then the most
    // frequent whole words (count, then text, as the tie-break).
    let mut words: BTreeMap<String, u64> = BTreeMap::new();
    // Printable ASCII always, so common text outside the samples still avoids [UNK].
    let mut chars: BTreeSet<char> = (b'!'..=b'~')
        .map(char::from)
        .filter(|c| !c.is_ascii_uppercase())
        .collect();
    for t in texts {
        let mut n = NormalizedString::from(t.as_str());
        normalizer.normalize(&mut n).map_err(bad)?;
        let mut pts = PreTokenizedString::from(n);
        BertPreTokenizer.pre_tokenize(&mut pts).map_err(bad)?;
        for (w, _, _) in pts.get_splits(OffsetReferential::Normalized, OffsetType::Char) {
            chars.extend(w.chars());
            *words.entry(w.to_owned()).or_default() += 1;
        }
    }
    let mut vocab: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    let mut seen: BTreeSet<String> = vocab.iter().cloned().collect();
    let mut push = |t: String, vocab: &mut Vec<String>| {
        if seen.insert(t.clone()) {
            vocab.push(t);
        }
    };
    for c in &chars {
        push(c.to_string(), &mut vocab);
        push(format!("##{c}"), &mut vocab);
    }
    let mut ranked: Vec<(&String, &u64)> = words
        .iter()
        .filter(|(w, n)| **n >= 2 && w.chars().count() > 1)
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (w, _) in ranked {
        if vocab.len() >= vocab_size {
            break;
        }
        push(w.clone(), &mut vocab);
    }
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut text = String::new();
    for t in &vocab {
        text.push_str(t);
        text.push('\n');
    }
    write(dir, "vocab.txt", text.as_bytes())?;
    let vocab_txt = dir.join("vocab.txt");
    let model = WordPiece::from_file(&vocab_txt.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .map_err(bad)?;
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(normalizer)).map_err(bad)?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.add_special_tokens(
        SPECIAL_TOKENS
            .iter()
            .map(|t| AddedToken::from(*t, true))
            .collect::<Vec<_>>(),
    )
    .map_err(bad)?;
    let id = |t: &str| {
        tok.token_to_id(t)
            .ok_or_else(|| TrainError::invalid(dir, format!("no {t} in the vocab")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tok.with_decoder(Some(WordPieceDecoder::default()));

    let tj = dir.join("tokenizer.json");
    tok.save(&tj, false).map_err(bad)?;
    let json_file =
        |name: &str, v: serde_json::Value| write(dir, name, format!("{v:#}\n").as_bytes());
    json_file(
        "tokenizer_config.json",
        json!({
            "tokenizer_class": "BertTokenizer", "do_lower_case": true, "model_max_length": 512,
            "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
            "mask_token": "[MASK]"
        }),
    )?;
    json_file(
        "special_tokens_map.json",
        json!({"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}),
    )?;
    let cfg = config_for(vocab.len());
    let cfg_json = serde_json::to_value(&cfg).expect("plain config");
    json_file("config.json", cfg_json)?;
    Ok(())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    schemas::AtomicFile::write_all(dir.join(name), bytes)?;
    Ok(())
}
