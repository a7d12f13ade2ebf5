//! Renders facts of the made-up world into each source's raw format, as its ingestor reads it
//! (field names, quoting and layout follow the real releases; see `ingest/src/sources/*.rs`).

use std::fmt::Write as _;

use rand::seq::IndexedRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::world::Fact;

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// A Python `repr` of a string, as the Amazon QA dumps were written (single quotes unless the
/// text holds one and no double quote).
fn py(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::from(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

fn date(rng: &mut ChaCha8Rng) -> (u32, u32, u32) {
    (
        rng.random_range(2009..2016),
        rng.random_range(1..13),
        rng.random_range(1..29),
    )
}

const CHATTER: &[&str] = &[
    "Hope this helps!",
    "I looked this up last week.",
    "Good question, by the way.",
    "My neighbour told me the same thing.",
    "That is what the guidebook says.",
];

/// An answer with, half the time, a bit of chatter that says nothing about the fact.
fn chatty(f: &Fact, rng: &mut ChaCha8Rng) -> String {
    let a = f.answer(rng);
    if rng.random_bool(0.5) {
        format!("{a} {}", CHATTER.choose(rng).expect("chatter"))
    } else {
        a
    }
}

pub fn gooaq(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for f in facts {
        let id = rng.random_range(100_000..5_000_000);
        let q = f.question(rng).to_lowercase();
        let slug = f.entity.to_lowercase().replace(' ', "-");
        writeln!(
            out,
            "{{\"id\": {id}, \"question\": {}, \"short_answer\": null, \"answer\": {}, \
             \"answer_type\": \"feat_snip\", \"answer_url\": {}}}",
            js(&q),
            js(&f.answer(rng)),
            js(&format!("https://www.example.org/{slug}"))
        )
        .expect("string");
    }
    out
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\"").replace('\n', "\\n"))
}

pub fn yahoo(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for f in facts {
        let class = rng.random_range(1..11);
        let answer = chatty(f, rng).replace(". ", ".\n");
        let answer = if rng.random_bool(0.3) {
            answer.replace('\n', "<br />\n")
        } else {
            answer
        };
        writeln!(
            out,
            "{},{},{},{}",
            csv_field(&class.to_string()),
            csv_field(&f.question(rng)),
            csv_field(&f.detail(rng)),
            csv_field(&answer)
        )
        .expect("string");
    }
    out
}

pub fn quora(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::from("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n");
    let firsts: Vec<(u32, String, u32, String)> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let q = f.questions(rng, 2);
            let qid = 1000 + 2 * i as u32;
            (qid, q[0].clone(), qid + 1, q[1].clone())
        })
        .collect();
    let mut id = 5000;
    for (i, (q1, t1, q2, t2)) in firsts.iter().enumerate() {
        writeln!(out, "{id}\t{q1}\t{q2}\t{t1}\t{t2}\t1").expect("string");
        // A non-duplicate row pairing this question with the next one: the ingestor's hard negative.
        let (n1, nt, _, _) = &firsts[(i + 1) % firsts.len()];
        writeln!(out, "{}\t{q1}\t{n1}\t{t1}\t{nt}\t0", id + 1).expect("string");
        id += 2;
    }
    out
}

pub fn amazon(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for f in facts {
        let asin = format!("B00{:07}", rng.random_range(0..10_000_000u32));
        let (y, m, d) = date(rng);
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ][m as usize - 1];
        let unix = 1_230_000_000 + rng.random_range(0..200_000_000u32);
        writeln!(
            out,
            "{{'questionType': 'open-ended', 'asin': {}, 'answerTime': '{month} {d}, {y}', \
             'unixTime': {unix}, 'question': {}, 'answerType': '?', 'answer': {}}}",
            py(&asin),
            py(&f.question(rng)),
            py(&chatty(f, rng))
        )
        .expect("string");
    }
    out
}

/// SQuAD 2.0 layout: articles by kind, one paragraph per fact, its question and answer span.
pub fn squad(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut articles: Vec<(&str, Vec<String>)> = Vec::new();
    for (i, f) in facts.iter().enumerate() {
        let context = format!(
            "{} {}",
            f.answer(rng),
            f.fill("Little else about {e} is recorded in the old town archives.")
        );
        let start = context
            .find(&f.value)
            .map(|b| context[..b].chars().count())
            .expect("answers state their value");
        let paragraph = format!(
            "{{\"qas\": [{{\"question\": {}, \"id\": \"5a{i:06x}e{:08x}\", \"answers\": [{{\"text\": {}, \
             \"answer_start\": {start}}}], \"is_impossible\": false}}], \"context\": {}}}",
            js(&f.question(rng)),
            rng.random::<u32>(),
            js(&f.value),
            js(&context)
        );
        match articles.iter_mut().find(|(k, _)| *k == f.kind) {
            Some((_, ps)) => ps.push(paragraph),
            None => articles.push((f.kind, vec![paragraph])),
        }
    }
    let data: Vec<String> = articles
        .iter()
        .map(|(kind, ps)| {
            format!(
                "{{\"title\": {}, \"paragraphs\": [{}]}}",
                js(&format!("Notes_on_{kind}s")),
                ps.join(", ")
            )
        })
        .collect();
    format!(
        "{{\"version\": \"v2.0\", \"data\": [{}]}}\n",
        data.join(", ")
    )
}

fn se_row(attrs: &[(&str, String)]) -> String {
    let a: Vec<String> = attrs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", crate::bench::ingest::xml_escape(v)))
        .collect();
    format!("  <row {} />\n", a.join(" "))
}

/// (Posts.xml, PostLinks.xml): per fact a question with a best and a weaker answer; the last
/// `dups` facts' questions are asked again as duplicates (no answers) linked with LinkTypeId 3.
pub fn stackexchange(facts: &[Fact], dups: usize, rng: &mut ChaCha8Rng) -> (String, String) {
    let head = "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";
    let mut posts = format!("{head}<posts>\n");
    let mut links = format!("{head}<postlinks>\n");
    let mut id = 1;
    let mut originals = Vec::new();
    for f in facts {
        let (y, m, d) = date(rng);
        let when = format!("{y}-{m:02}-{d:02}T10:{:02}:00.000", rng.random_range(0..60));
        let q = f.questions(rng, 2);
        let title = format!(
            "{} (looking for a reliable source)",
            q[0].trim_end_matches('?')
        );
        let body = format!("<p>{}</p>\n\n<p>{}</p>\n", f.detail(rng), q[0]);
        let (qid, best, other) = (id, id + 1, id + 2);
        posts += &se_row(&[
            ("Id", qid.to_string()),
            ("PostTypeId", "1".into()),
            ("AcceptedAnswerId", other.to_string()),
            ("CreationDate", when.clone()),
            ("Score", rng.random_range(0..30).to_string()),
            ("ViewCount", rng.random_range(20..3000).to_string()),
            ("Body", body),
            ("OwnerUserId", rng.random_range(2..900).to_string()),
            ("LastActivityDate", when.clone()),
            ("Title", title),
            ("Tags", format!("<{}>", f.kind)),
            ("AnswerCount", "2".into()),
            ("CommentCount", "0".into()),
        ]);
        // The accepted answer is the weaker one: upstream keeps the highest-scored.
        for (aid, score, text) in [
            (best, 40, format!("<p>{}</p>\n", chatty(f, rng))),
            (
                other,
                1,
                "<p>Have you tried asking at the local library?</p>\n".to_owned(),
            ),
        ] {
            posts += &se_row(&[
                ("Id", aid.to_string()),
                ("PostTypeId", "2".into()),
                ("ParentId", qid.to_string()),
                ("CreationDate", when.clone()),
                ("Score", score.to_string()),
                ("Body", text),
                ("OwnerUserId", rng.random_range(2..900).to_string()),
                ("LastActivityDate", when.clone()),
                ("CommentCount", "0".into()),
            ]);
        }
        originals.push((qid, q[1].clone(), when));
        id += 3;
    }
    let dup_from = originals.len().saturating_sub(dups);
    for (link, (orig, question, when)) in originals[dup_from..].iter().enumerate() {
        posts += &se_row(&[
            ("Id", id.to_string()),
            ("PostTypeId", "1".into()),
            ("CreationDate", when.clone()),
            ("Score", "0".into()),
            ("ViewCount", "12".into()),
            (
                "Body",
                format!("<p>{question} Sorry if this was asked before.</p>\n"),
            ),
            ("Title", format!("{question} Any pointers welcome")),
            ("AnswerCount", "0".into()),
            ("ClosedDate", when.clone()),
        ]);
        links += &se_row(&[
            ("Id", (link + 1).to_string()),
            ("CreationDate", when.clone()),
            ("PostId", id.to_string()),
            ("RelatedPostId", orig.to_string()),
            ("LinkTypeId", "3".into()),
        ]);
        id += 1;
    }
    (posts + "</posts>\n", links + "</postlinks>\n")
}

/// Text triplets (query, positive, negative); the negative is the next fact's positive.
pub fn msmarco(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let answers: Vec<String> = facts.iter().map(|f| f.answer(rng)).collect();
    let mut out = String::new();
    for (i, f) in facts.iter().enumerate() {
        let neg = &answers[(i + 1) % answers.len()];
        writeln!(out, "{}\t{}\t{neg}", f.keywords(rng), answers[i]).expect("string");
    }
    out
}

pub fn wikianswers(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for f in facts {
        let n = if rng.random_bool(0.3) { 4 } else { 2 };
        let mut items: Vec<String> = f
            .questions(rng, n)
            .iter()
            .map(|q| format!("q:{}", q.to_lowercase()))
            .collect();
        items.push(format!("a:{}", f.answer(rng)));
        writeln!(out, "{}", items.join("\t")).expect("string");
    }
    out
}

/// (PAQ.metadata.jsonl, psgs_w100.tsv): one DPR-style passage per fact.
pub fn paq(facts: &[Fact], rng: &mut ChaCha8Rng) -> (String, String) {
    let mut meta = String::new();
    let mut passages = String::from("id\ttext\ttitle\n");
    for (i, f) in facts.iter().enumerate() {
        let pid = 3_000_000 + 97 * i;
        let text = format!(
            "{} {}",
            f.answer(rng),
            f.fill("The {e} entry was last revised in spring.")
        );
        let text = if text.contains('"') {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text
        };
        writeln!(passages, "{pid}\t{text}\t{}", f.entity).expect("string");
        let q = f.question(rng).to_lowercase();
        let q = q.trim_end_matches('?');
        writeln!(
            meta,
            "{{\"question\": {}, \"subsets\": [\"L1\"], \"answer\": [{}], \"answers\": [{{\"passage_id\": \"{pid}\", \
             \"offset\": 0, \"text\": {}, \"extractor\": \"synthetic\", \"score\": -0.5}}]}}",
            js(q),
            js(&f.value),
            js(&f.value)
        )
        .expect("string");
    }
    (meta, passages)
}

/// Simplified NQ: a tokenised page whose long answer is the fact's paragraph.
pub fn natural_questions(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for f in facts {
        let title: Vec<String> = f.entity.split(' ').map(str::to_owned).collect();
        let mut tokens: Vec<String> = title.clone();
        tokens.extend(["-", "Wikipedia", "<H1>"].map(String::from));
        tokens.extend(title.iter().cloned());
        tokens.push("</H1>".into());
        let start = tokens.len();
        tokens.push("<P>".into());
        tokens.extend(f.answer(rng).split(' ').map(str::to_owned));
        tokens.push("</P>".into());
        let end = tokens.len();
        tokens.extend(
            "<P> This article is a stub . </P>"
                .split(' ')
                .map(str::to_owned),
        );
        let id: u64 = rng.random_range(1_000_000_000..9_000_000_000);
        writeln!(
            out,
            "{{\"document_text\": {}, \"long_answer_candidates\": [{{\"start_token\": {start}, \"top_level\": true, \
             \"end_token\": {end}}}], \"question_text\": {}, \"annotations\": [{{\"yes_no_answer\": \"NONE\", \
             \"long_answer\": {{\"start_token\": {start}, \"candidate_index\": 0, \"end_token\": {end}}}, \
             \"short_answers\": [], \"annotation_id\": {id}}}], \"document_url\": {}, \"example_id\": {id}}}",
            js(&tokens.join(" ")),
            js(f.question(rng).to_lowercase().trim_end_matches('?')),
            js(&format!("https://en.example.org/w/index.php?title={}", title.join("_")))
        )
        .expect("string");
    }
    out
}

pub fn triviaqa(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let data: Vec<String> = facts
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let v = &f.value;
            let lower = v.to_lowercase();
            format!(
                "{{\"Answer\": {{\"Aliases\": [{}], \"MatchedWikiEntityName\": {}, \"NormalizedAliases\": [{}], \
                 \"NormalizedValue\": {}, \"Type\": \"WikipediaEntity\", \"Value\": {}}}, \"EntityPages\": [], \
                 \"Question\": {}, \"QuestionId\": \"tc_{i}\", \"QuestionSource\": \"http://www.example.com/quiz/\", \
                 \"SearchResults\": [{{\"Description\": {}, \"Filename\": \"{i}/{i}_0.txt\", \"Rank\": 0, \
                 \"Title\": {}, \"Url\": \"http://www.example.com/{i}\"}}]}}",
                js(v),
                js(v),
                js(&lower),
                js(&lower),
                js(v),
                js(&f.question(rng)),
                js(&format!("{} ...", f.answer(rng))),
                js(&f.entity)
            )
        })
        .collect();
    format!(
        "{{\"Data\": [\n{}\n], \"Domain\": \"Web\", \"Split\": \"train\", \"VerifiedEval\": false, \"Version\": 1.0}}\n",
        data.join(",\n")
    )
}

/// One SearchQA record (one file each): the fact's snippet among two that say nothing of it.
pub fn searchqa(f: &Fact, id: usize, rng: &mut ChaCha8Rng) -> String {
    let snippets = [
        format!("{} ...", f.answer(rng)),
        f.fill("Quiz night questions and answers about {e} ..."),
        "Flashcards for the show, sorted by round and value.".to_owned(),
    ];
    let results: Vec<String> = snippets
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "{{\"url\": \"/url?q=http://www.example.com/{id}/{i}\", \"snippet\": {}, \"related_links\": null, \
                 \"title\": {}}}",
                js(s),
                js(&f.entity)
            )
        })
        .collect();
    let (y, m, d) = date(rng);
    format!(
        "{{\"category\": {}, \"search_results\": [{}], \"air_date\": \"{y}-{m:02}-{d:02}\", \"question\": {}, \
         \"value\": \"$800\", \"id\": {id}, \"answer\": {}, \"round\": \"Jeopardy!\", \"show_number\": \"4680\"}}\n",
        js(&format!("{}S", f.kind.to_uppercase())),
        results.join(", "),
        js(&f.question(rng)),
        js(&f.value)
    )
}

/// ELI5-Category layout: one JSON array; the best answer scores highest.
pub fn eli5(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let records: Vec<String> = facts
        .iter()
        .map(|f| {
            let qid: String = (0..6)
                .map(|_| *b"abcdefghijklmnopqrstuvwxyz0123456789".choose(rng).expect("chars") as char)
                .collect();
            format!(
                "{{\"q_id\": \"{qid}\", \"category\": \"Other\", \"title\": {}, \"title_urls\": {{\"url\": []}}, \
                 \"selftext\": {}, \"selftext_urls\": {{\"url\": []}}, \"subreddit\": \"explainlikeimfive\", \
                 \"answers\": {{\"a_id\": [\"{qid}a\", \"{qid}b\"], \"text\": [{}, \"Honestly I was wondering the same \
                 thing &gt; following.\"], \"text_urls\": [[], []], \"score\": [{}, 2]}}}}",
                js(&format!("ELI5: {}", f.question(rng))),
                js(&f.detail(rng)),
                js(&chatty(f, rng)),
                rng.random_range(5..400)
            )
        })
        .collect();
    format!("[{}]\n", records.join(", "))
}

/// Normalized 1B-pairs lines `["query", "answer"]`.
pub fn normalized(facts: &[Fact], rng: &mut ChaCha8Rng) -> String {
    let mut out = String::new();
    for f in facts {
        writeln!(out, "[{}, {}]", js(&f.question(rng)), js(&f.answer(rng))).expect("string");
    }
    out
}
