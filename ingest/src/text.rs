//! Text clean-up shared by sources: HTML tag stripping as upstream did it, entity decoding,
//! whitespace normalisation, and Python string-list literals (GooAQ collections).

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

/// Decodes HTML character references: numeric (`&#39;`, `&#x27;`) and the named ones that occur
/// in Q&A dumps. Unknown names are left as written.
pub fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find(';').filter(|&e| e <= 10);
        let decoded = end.and_then(|e| decode_one(&after[..e]).map(|c| (c, e)));
        match decoded {
            Some((c, e)) => {
                out.push(c);
                rest = &after[e + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_one(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "times" => '×',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "middot" => '·',
        "bull" => '•',
        _ => return None,
    })
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
