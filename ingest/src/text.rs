//! Text clean-up shared by sources, under one policy ([`POLICY`]): HTML tag stripping as upstream
//! did it, HTML5 entity decoding, whitespace normalisation, and Python string-list literals
//! (GooAQ collections).

/// Trims; `None` when nothing is left (such texts never become rows).
pub fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// Collapses every run of whitespace (including newlines) into one space and trims.
pub fn normalize_space(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Removes tags the way upstream's `re.sub('<.*?>', '', text)` did: the shortest `<...>` span on
/// one line; a `<` with no `>` before the line ends is kept.
pub fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('<') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('>');
        let newline = after.find('\n');
        match close {
            Some(c) if newline.is_none_or(|n| c < n) => rest = &after[c + 1..],
            _ => {
                out.push('<');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes HTML character references with a complete HTML5 decoder (`htmlize`): every named
/// entity of the HTML5 table (`&beta;`, `&plusmn;`, `&frac12;`, ...), decimal and hex references,
/// and the legacy names HTML5 reads without `;`. Unknown names are left as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    htmlize::unescape(s).into_owned()
}

/// How one source's raw text is normalised: the one policy every source follows, listed in
/// `prep ingest --help` ([`policy_help`]). Sources whose dumps are HTML-escaped decode entities
/// through [`decode_entities`]; none of the others do, so a literal `&amp;` in plain-text data
/// survives.
pub struct TextPolicy {
    pub source: &'static str,
    /// Whether HTML entities are decoded (the raw text is HTML-escaped).
    pub unescape: bool,
    /// What happens to HTML tags.
    pub tags: &'static str,
    /// What happens to whitespace.
    pub whitespace: &'static str,
}

const TRIM: &str = "trimmed";

/// The text-normalisation policy, per source.
pub const POLICY: &[TextPolicy] = &[
    TextPolicy {
        source: "stackexchange",
        unescape: true,
        tags: "stripped as upstream's <.*?> (after XML escapes, before entities)",
        whitespace: "trimmed; paragraphs kept",
    },
    TextPolicy {
        source: "eli5",
        unescape: true,
        tags: "kept (Reddit markdown, not HTML)",
        whitespace: "title collapsed to single spaces; answer trimmed, paragraphs kept",
    },
    TextPolicy {
        source: "yahoo_answers",
        unescape: true,
        tags: "<br /> turned into newlines",
        whitespace: "literal \\n turned into newlines; trimmed",
    },
    TextPolicy {
        source: "amazon_qa",
        unescape: true,
        tags: "kept (none in the data)",
        whitespace: TRIM,
    },
    TextPolicy {
        source: "natural_questions",
        unescape: false,
        tags: "HTML tag tokens dropped (the simplified layout's <P>, </Td>, ...)",
        whitespace: "collapsed to single spaces",
    },
    TextPolicy {
        source: "triviaqa, searchqa, wikianswers",
        unescape: false,
        tags: "kept",
        whitespace: "collapsed to single spaces (questions; TriviaQA/SearchQA contexts)",
    },
    TextPolicy {
        source: "gooaq, quora, squad, msmarco, paq, jsonl, table",
        unescape: false,
        tags: "kept",
        whitespace: TRIM,
    },
];

/// Whether `source` decodes HTML entities under [`POLICY`].
pub fn unescapes(source: &str) -> bool {
    POLICY
        .iter()
        .any(|p| p.unescape && p.source.split(", ").any(|s| s == source))
}

/// [`POLICY`] as the `--help` text lists it.
pub fn policy_help() -> String {
    let mut s = String::from(
        "Text normalisation (one policy; entities decoded with a complete HTML5 decoder only \
         where the raw text is HTML-escaped; every text is trimmed, and empty texts are skipped):\n",
    );
    for p in POLICY {
        s.push_str(&format!(
            "\n  {}\n      entities: {}; tags: {}; whitespace: {}\n",
            p.source,
            if p.unescape {
                "decoded"
            } else {
                "kept as written"
            },
            p.tags,
            p.whitespace
        ));
    }
    s
}

/// Parses a Python list of string literals (`['a', "b's"]`), as GooAQ stores collection answers.
/// `None` when the text is not such a list.
pub fn python_str_list(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('[')?.strip_suffix(']')?;
    let mut items = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let Some(quote) = chars.next() else { break };
        if quote != '\'' && quote != '"' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => item.push('\n'),
                    't' => item.push('\t'),
                    c => item.push(c),
                },
                c if c == quote => break,
                c => item.push(c),
            }
        }
        items.push(item);
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_like_upstream_regex() {
        assert_eq!(strip_tags("<p>Hi <b>there</b></p>"), "Hi there");
        assert_eq!(
            strip_tags("a < b and c > d"),
            "a  d",
            "upstream's regex eats this too"
        );
        assert_eq!(
            strip_tags("x <\ny> z"),
            "x <\ny> z",
            "`.` does not cross lines"
        );
    }

    #[test]
    fn decodes_entities() {
        assert_eq!(
            decode_entities("a &amp; b &lt;c&gt; &#39;d&#x27; &bogus; & e"),
            "a & b <c> 'd' &bogus; & e"
        );
        // Beyond any short table: the whole HTML5 list, numeric and hex references.
        assert_eq!(
            decode_entities(
                "&beta; &plusmn;1 caf&eacute; &frac12; &rarr; &#946; &#x3B2; &NotSubset;"
            ),
            "\u{3b2} \u{b1}1 caf\u{e9} \u{bd} \u{2192} \u{3b2} \u{3b2} \u{2282}\u{20d2}"
        );
    }

    #[test]
    fn policy_names_every_source_once() {
        let mut named: Vec<&str> = POLICY.iter().flat_map(|p| p.source.split(", ")).collect();
        named.sort();
        let mut all: Vec<&str> = crate::sources().iter().map(|s| s.name()).collect();
        all.sort();
        assert_eq!(named, all);
        assert!(unescapes("amazon_qa") && unescapes("stackexchange") && !unescapes("squad"));
        assert!(policy_help().contains("yahoo_answers"));
    }

    #[test]
    fn parses_python_lists() {
        assert_eq!(
            python_str_list(r#"['a b', "it's", 'q\'s']"#).unwrap(),
            vec!["a b", "it's", "q's"]
        );
        assert_eq!(python_str_list("plain answer"), None);
    }
}
