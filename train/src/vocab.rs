//! A small model folder built from texts alone: an uncased WordPiece tokenizer trained on them
//! and a tiny BERT config. `prep demo` trains from it when no `--model` is given.

use std::path::Path;

use encoder::tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use encoder::tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use encoder::tokenizers::normalizers::bert::BertNormalizer;
use encoder::tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use encoder::tokenizers::processors::bert::BertProcessing;
use encoder::tokenizers::{AddedToken, Tokenizer};
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

/// Trains an uncased WordPiece tokenizer of at most `vocab_size` entries on `texts` and writes a
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
    let mut tok = Tokenizer::new(WordPiece::default());
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .map_err(bad)?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    let mut trainer: encoder::tokenizers::models::TrainerWrapper = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|t| AddedToken::from(*t, true))
                .collect(),
        )
        .build()
        .into();
    tok.train(&mut trainer, texts.iter()).map_err(bad)?;
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

    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let tj = dir.join("tokenizer.json");
    tok.save(&tj, false).map_err(bad)?;
    let mut vocab: Vec<(String, u32)> = tok.get_vocab(true).into_iter().collect();
    vocab.sort_by_key(|(_, i)| *i);
    let mut text = String::new();
    for (t, _) in &vocab {
        text.push_str(t);
        text.push('\n');
    }
    write(dir, "vocab.txt", text.as_bytes())?;
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
