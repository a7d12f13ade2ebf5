//! A specialised, exact BERT WordPiece tokenizer: the fast path for `tokenizer.json` files whose
//! pipeline is exactly `BertNormalizer` + `BertPreTokenizer` + `WordPiece` + a `[CLS] A [SEP]`
//! post-processor (`TemplateProcessing` or `BertProcessing`), with non-normalized added tokens.
//!
//! It reproduces the HF `tokenizers` crate (0.23) step by step, with the same Unicode tables
//! (`unicode_categories`, `unicode-normalization-alignments`: Unicode 9 data, where the newer
//! `unicode-normalization` would disagree on recently assigned characters) and std's
//! `char::to_lowercase`/`char::is_whitespace`:
//! 1. added tokens are matched on the raw text, leftmost-longest, and split it into segments;
//! 2. per segment, `BertNormalizer`: drop NUL, U+FFFD and `Other` chars (bar `\t\n\r`),
//!    whitespace to ' ', pad CJK ideographs with spaces, NFD then drop `Mn`, lowercase;
//! 3. `BertPreTokenizer`: split on whitespace (removed) and punctuation (isolated);
//! 4. `WordPiece`: greedy longest match, `##` continuations, `[UNK]` for a word over
//!    `max_input_chars_per_word` chars or with an unmatched piece;
//! 5. truncation of the content to `max_len - specials`, then the specials around it.
//!
//! What makes it fast: ASCII goes through a byte table (no Unicode lookups); NFD only runs on
//! runs of non-ASCII chars (an ASCII char is a starter, so canonical reordering never crosses
//! it); vocab lookups hash `&str` slices (continuations in their own map, so no `"##"+piece`
//! string is built); buffers are reused per thread; and words past the truncation length are
//! never looked at.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::path::Path;

use rustc_hash::FxHasher;
use serde_json::Value;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

type Map = HashMap<Box<str>, u32, BuildHasherDefault<FxHasher>>;

/// Why a `tokenizer.json` cannot take the fast path (the caller then uses HF `tokenizers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an ASCII byte is after `BertNormalizer` and to `BertPreTokenizer`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ascii {
    /// Part of a word, as this (lowercased) byte.
    Word(u8),
    /// Whitespace: ends a word.
    Space,
    /// Punctuation: a word of its own.
    Punct,
    /// Removed by `clean_text`.
    Drop,
}

pub struct BertWordPiece {
    vocab: Map,
    /// Tokens that start with the continuing-subword prefix, keyed without it.
    cont: Map,
    /// Longest key (bytes) in `vocab` and in `cont`: longer slices cannot match.
    max_key: usize,
    max_cont_key: usize,
    unk: u32,
    max_chars: usize,
    clean_text: bool,
    chinese: bool,
    strip_accents: bool,
    lowercase: bool,
    ascii: [Ascii; 128],
    /// Id of each ASCII punctuation char as a word of its own.
    ascii_punct_id: [u32; 128],
    /// Added tokens (content, id), longest first, and which bytes can start one.
    added: Vec<(Box<str>, u32)>,
    added_first: [bool; 256],
    prefix: Vec<u32>,
    suffix: Vec<u32>,
}

#[derive(Default)]
struct Scratch {
    word: String,
    stage1: Vec<char>,
    stage2: Vec<char>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// HF `normalizers::bert::is_chinese_char`.
fn is_chinese_char(c: char) -> bool {
    matches!(
        c as usize,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

/// HF `pre_tokenizers::bert::is_bert_punc`.
fn is_bert_punc(c: char) -> bool {
    c.is_ascii_punctuation() || c.is_punctuation()
}

fn field<'a>(v: &'a Value, key: &str, what: &str) -> Result<&'a Value, Unsupported> {
    v.get(key)
        .ok_or_else(|| Unsupported(format!("{what} has no {key:?}")))
}

fn bool_field(v: &Value, key: &str, what: &str) -> Result<bool, Unsupported> {
    field(v, key, what)?
        .as_bool()
        .ok_or_else(|| Unsupported(format!("{what}.{key} is not a bool")))
}

fn type_of(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("")
}

impl BertWordPiece {
    /// Reads a `tokenizer.json`; `Ok(Err(..))` when its pipeline is not one this handles.
    pub fn from_file(path: &Path) -> std::io::Result<Result<Self, Unsupported>> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::from_json_str(&text))
    }

    pub fn from_json_str(text: &str) -> Result<Self, Unsupported> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Unsupported(format!("not JSON: {e}")))?;
        Self::from_json(&v)
    }

    pub fn from_json(v: &Value) -> Result<Self, Unsupported> {
        let norm = field(v, "normalizer", "tokenizer.json")?;
        if type_of(norm) != "BertNormalizer" {
            return Err(Unsupported(format!(
                "normalizer is {:?}, not BertNormalizer",
                type_of(norm)
            )));
        }
        let clean_text = bool_field(norm, "clean_text", "normalizer")?;
        let chinese = bool_field(norm, "handle_chinese_chars", "normalizer")?;
        let lowercase = bool_field(norm, "lowercase", "normalizer")?;
        // HF: strip_accents None follows lowercase.
        let strip_accents = match norm.get("strip_accents") {
            None | Some(Value::Null) => lowercase,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Unsupported("normalizer.strip_accents is not a bool".into())),
        };

        let pre = field(v, "pre_tokenizer", "tokenizer.json")?;
        if type_of(pre) != "BertPreTokenizer" {
            return Err(Unsupported(format!(
                "pre_tokenizer is {:?}, not BertPreTokenizer",
                type_of(pre)
            )));
        }

        let model = field(v, "model", "tokenizer.json")?;
        if type_of(model) != "WordPiece" {
            return Err(Unsupported(format!(
                "model is {:?}, not WordPiece",
                type_of(model)
            )));
        }
        let unk_token = field(model, "unk_token", "model")?
            .as_str()
            .ok_or_else(|| Unsupported("model.unk_token is not a string".into()))?;
        let prefix_str = field(model, "continuing_subword_prefix", "model")?
            .as_str()
            .ok_or_else(|| Unsupported("model.continuing_subword_prefix is not a string".into()))?;
        let max_chars = field(model, "max_input_chars_per_word", "model")?
            .as_u64()
            .ok_or_else(|| Unsupported("model.max_input_chars_per_word is not an integer".into()))?
            as usize;
        let vocab_json = field(model, "vocab", "model")?
            .as_object()
            .ok_or_else(|| Unsupported("model.vocab is not an object".into()))?;
        let mut vocab = Map::default();
        let mut cont = Map::default();
        for (token, id) in vocab_json {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| Unsupported(format!("vocab id of {token:?} is not a u32")))?;
            vocab.insert(token.as_str().into(), id);
            if let Some(rest) = token.strip_prefix(prefix_str) {
                cont.insert(rest.into(), id);
            }
        }
        let unk = *vocab
            .get(unk_token)
            .ok_or_else(|| Unsupported(format!("unk token {unk_token:?} not in the vocab")))?;
        let max_key = vocab.keys().map(|k| k.len()).max().unwrap_or(0);
        let max_cont_key = cont.keys().map(|k| k.len()).max().unwrap_or(0);

        let (prefix, suffix) = post_processor(field(v, "post_processor", "tokenizer.json")?)?;

        let mut added = Vec::new();
        let mut added_first = [false; 256];
        if let Some(list) = v.get("added_tokens").filter(|a| !a.is_null()) {
            let list = list
                .as_array()
                .ok_or_else(|| Unsupported("added_tokens is not a list".into()))?;
            for t in list {
                let content = field(t, "content", "added token")?
                    .as_str()
                    .ok_or_else(|| Unsupported("added token content is not a string".into()))?;
                for flag in ["normalized", "single_word", "lstrip", "rstrip"] {
                    if t.get(flag).and_then(Value::as_bool).unwrap_or(false) {
                        return Err(Unsupported(format!(
                            "added token {content:?} has {flag}: true"
                        )));
                    }
                }
                if content.is_empty() {
                    return Err(Unsupported("an added token is empty".into()));
                }
                let json_id = field(t, "id", "added token")?
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| Unsupported(format!("added token {content:?} has no u32 id")))?;
                // HF gives an added token the model's id when the vocab has it.
                let id = match vocab.get(content) {
                    Some(&vid) if vid != json_id => {
                        return Err(Unsupported(format!(
                            "added token {content:?} has id {json_id} but vocab id {vid}"
                        )))
                    }
                    Some(&vid) => vid,
                    None => json_id,
                };
                added_first[content.as_bytes()[0] as usize] = true;
                added.push((Box::<str>::from(content), id));
            }
        }
        // Longest first, so the first hit at a position is the leftmost-longest match.
        added.sort_by_key(|t| std::cmp::Reverse(t.0.len()));

        let mut ascii = [Ascii::Drop; 128];
        let mut ascii_punct_id = [unk; 128];
        for b in 0u8..128 {
            let c = b as char;
            ascii[b as usize] = if clean_text
                && (b == 0 || (c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r')))
            {
                // `Other` (Cc) chars, including \x0B and \x0C, go before whitespace mapping.
                Ascii::Drop
            } else if c.is_whitespace() {
                Ascii::Space
            } else if is_bert_punc(c) {
                ascii_punct_id[b as usize] = vocab.get(&*c.to_string()).copied().unwrap_or(unk);
                Ascii::Punct
            } else if lowercase {
                Ascii::Word(b.to_ascii_lowercase())
            } else {
                Ascii::Word(b)
            };
        }

        Ok(BertWordPiece {
            vocab,
            cont,
            max_key,
            max_cont_key,
            unk,
            max_chars,
            clean_text,
            chinese,
            strip_accents,
            lowercase,
            ascii,
            ascii_punct_id,
            added,
            added_first,
            prefix,
            suffix,
        })
    }

    /// Special tokens the post-processor adds to a single sequence.
    pub fn num_special_tokens(&self) -> usize {
        self.prefix.len() + self.suffix.len()
    }

    /// Ids of `text` with the specials, the content truncated to `max_len - specials` (HF's
    /// truncation with padding off); `max_len` below the number of specials acts as equal to it.
    pub fn encode(&self, text: &str, max_len: Option<usize>) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, max_len, &mut out);
        out
    }

    /// As [`encode`](Self::encode), into `out` (cleared first).
    pub fn encode_into(&self, text: &str, max_len: Option<usize>, out: &mut Vec<u32>) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        let base = out.len();
        let limit = max_len.map_or(usize::MAX, |m| m.saturating_sub(self.num_special_tokens()));
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            self.content(text, base, limit, &mut s, out);
        });
        out.truncate(base.saturating_add(limit));
        out.extend_from_slice(&self.suffix);
    }

    fn content(&self, text: &str, base: usize, limit: usize, s: &mut Scratch, out: &mut Vec<u32>) {
        let Scratch {
            word,
            stage1,
            stage2,
        } = s;
        word.clear();
        let mut nchars = 0usize;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if out.len() - base >= limit {
                return;
            }
            let b = bytes[i];
            if self.added_first[b as usize] {
                if let Some((len, id)) = self.match_added(&text[i..]) {
                    // An added token is a segment of its own: the word before it ends.
                    self.flush(word, &mut nchars, out);
                    out.push(id);
                    i += len;
                    continue;
                }
            }
            if b < 128 {
                match self.ascii[b as usize] {
                    Ascii::Word(l) => {
                        word.push(l as char);
                        nchars += 1;
                    }
                    Ascii::Space => self.flush(word, &mut nchars, out),
                    Ascii::Punct => {
                        self.flush(word, &mut nchars, out);
                        out.push(self.ascii_punct_id[b as usize]);
                    }
                    Ascii::Drop => {}
                }
                i += 1;
            } else {
                // A run of non-ASCII chars (continuation bytes never start an added token).
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] >= 128 && !self.added_first[bytes[i] as usize] {
                    i += 1;
                }
                self.non_ascii(&text[start..i], stage1, stage2, word, &mut nchars, out);
            }
        }
        self.flush(word, &mut nchars, out);
    }

    fn match_added(&self, rest: &str) -> Option<(usize, u32)> {
        self.added
            .iter()
            .find(|(c, _)| rest.starts_with(&**c))
            .map(|(c, id)| (c.len(), *id))
    }

    /// `BertNormalizer` then `BertPreTokenizer` on a run of non-ASCII chars.
    fn non_ascii(
        &self,
        run: &str,
        stage1: &mut Vec<char>,
        stage2: &mut Vec<char>,
        word: &mut String,
        nchars: &mut usize,
        out: &mut Vec<u32>,
    ) {
        stage1.clear();
        for c in run.chars() {
            let c = if self.clean_text {
                // NUL and \t\n\r are ASCII; everything else `Other` goes.
                if c == '\u{fffd}' || c.is_other() {
                    continue;
                }
                if c.is_whitespace() {
                    ' '
                } else {
                    c
                }
            } else {
                c
            };
            if self.chinese && is_chinese_char(c) {
                stage1.extend([' ', c, ' ']);
            } else {
                stage1.push(c);
            }
        }
        let chars: &[char] = if self.strip_accents {
            stage2.clear();
            stage2.extend(
                stage1
                    .iter()
                    .copied()
                    .nfd()
                    .map(|(c, _)| c)
                    .filter(|c| !c.is_mark_nonspacing()),
            );
            stage2
        } else {
            stage1
        };
        for &c in chars {
            if self.lowercase {
                for l in c.to_lowercase() {
                    self.feed(l, word, nchars, out);
                }
            } else {
                self.feed(c, word, nchars, out);
            }
        }
    }

    /// One normalized char into `BertPreTokenizer`.
    #[inline]
    fn feed(&self, c: char, word: &mut String, nchars: &mut usize, out: &mut Vec<u32>) {
        if c.is_whitespace() {
            self.flush(word, nchars, out);
        } else if is_bert_punc(c) {
            self.flush(word, nchars, out);
            word.push(c);
            *nchars = 1;
            self.flush(word, nchars, out);
        } else {
            word.push(c);
            *nchars += 1;
        }
    }

    #[inline]
    fn flush(&self, word: &mut String, nchars: &mut usize, out: &mut Vec<u32>) {
        if !word.is_empty() {
            self.word_ids(word, *nchars, out);
            word.clear();
            *nchars = 0;
        }
    }

    /// HF `WordPiece::tokenize` on one pre-tokenized word.
    fn word_ids(&self, w: &str, nchars: usize, out: &mut Vec<u32>) {
        if nchars > self.max_chars {
            out.push(self.unk);
            return;
        }
        if let Some(&id) = self.vocab.get(w) {
            out.push(id);
            return;
        }
        let mark = out.len();
        let mut start = 0;
        while start < w.len() {
            let (map, max) = if start == 0 {
                (&self.vocab, self.max_key)
            } else {
                (&self.cont, self.max_cont_key)
            };
            let mut end = w.len().min(start + max);
            while !w.is_char_boundary(end) {
                end -= 1;
            }
            let mut found = None;
            while end > start {
                if let Some(&id) = map.get(&w[start..end]) {
                    found = Some(id);
                    break;
                }
                end -= 1;
                while !w.is_char_boundary(end) {
                    end -= 1;
                }
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(mark);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }
}

/// Prefix and suffix ids of a single sequence, from `TemplateProcessing` or `BertProcessing`.
fn post_processor(p: &Value) -> Result<(Vec<u32>, Vec<u32>), Unsupported> {
    let id_of = |v: &Value| -> Result<u32, Unsupported> {
        v.as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| Unsupported(format!("post_processor id {v} is not a u32")))
    };
    match type_of(p) {
        "BertProcessing" => {
            let pair = |key: &str| -> Result<u32, Unsupported> {
                let v = field(p, key, "BertProcessing")?;
                id_of(v.get(1).unwrap_or(&Value::Null))
            };
            Ok((vec![pair("cls")?], vec![pair("sep")?]))
        }
        "TemplateProcessing" => {
            let single = field(p, "single", "TemplateProcessing")?
                .as_array()
                .ok_or_else(|| Unsupported("TemplateProcessing.single is not a list".into()))?;
            let specials = field(p, "special_tokens", "TemplateProcessing")?;
            let (mut prefix, mut suffix) = (Vec::new(), Vec::new());
            let mut seen_a = false;
            for piece in single {
                if let Some(seq) = piece.get("Sequence") {
                    if seen_a || seq.get("id").and_then(Value::as_str) != Some("A") {
                        return Err(Unsupported(
                            "TemplateProcessing.single is not one sequence A".into(),
                        ));
                    }
                    seen_a = true;
                } else if let Some(sp) = piece.get("SpecialToken") {
                    let name = sp.get("id").and_then(Value::as_str).ok_or_else(|| {
                        Unsupported("TemplateProcessing special token without id".into())
                    })?;
                    let ids = specials
                        .get(name)
                        .and_then(|s| s.get("ids"))
                        .and_then(Value::as_array)
                        .ok_or_else(|| {
                            Unsupported(format!("TemplateProcessing: no ids for {name:?}"))
                        })?;
                    let dest = if seen_a { &mut suffix } else { &mut prefix };
                    for id in ids {
                        dest.push(id_of(id)?);
                    }
                } else {
                    return Err(Unsupported(format!(
                        "TemplateProcessing piece {piece} not understood"
                    )));
                }
            }
            if !seen_a {
                return Err(Unsupported(
                    "TemplateProcessing.single has no sequence".into(),
                ));
            }
            Ok((prefix, suffix))
        }
        other => Err(Unsupported(format!(
            "post_processor is {other:?}, not TemplateProcessing or BertProcessing"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> BertWordPiece {
        let json = r###"{
            "added_tokens": [{"id": 1, "content": "[CLS]", "special": true, "normalized": false,
                              "single_word": false, "lstrip": false, "rstrip": false},
                             {"id": 2, "content": "[SEP]", "special": true, "normalized": false,
                              "single_word": false, "lstrip": false, "rstrip": false}],
            "normalizer": {"type": "BertNormalizer", "clean_text": true,
                           "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                      "max_input_chars_per_word": 10,
                      "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "un": 3, "##aff": 4,
                                "##able": 5, "cafe": 6, "!": 7, "中": 8}}
        }"###;
        BertWordPiece::from_json_str(json).unwrap()
    }

    #[test]
    fn greedy_pieces_accents_cjk_punct_and_truncation() {
        let t = tiny();
        assert_eq!(t.encode("Unaffable", None), vec![1, 3, 4, 5, 2]);
        assert_eq!(t.encode("CAFÉ!中", None), vec![1, 6, 7, 8, 2]);
        // Over max_input_chars_per_word (10), and an unmatched piece: one [UNK] each.
        assert_eq!(t.encode("cafecafecafe unx", None), vec![1, 0, 0, 2]);
        assert_eq!(t.encode("[SEP]un", Some(3)), vec![1, 2, 2]);
        assert_eq!(t.encode("", Some(3)), vec![1, 2]);
    }

    #[test]
    fn other_pipelines_are_refused() {
        let v = r#"{"normalizer": {"type": "NFC"}, "pre_tokenizer": null, "model": {}}"#;
        assert!(BertWordPiece::from_json_str(v).is_err());
    }
}
