//! Stack Exchange data dumps: per site `Posts.xml` (+ `PostLinks.xml`), `<row .../>` elements
//! read as a stream with quick-xml. Three datasets, as upstream made them:
//! - `stackexchange_title_body`: (title, body) of questions (PostTypeId 1) with title >= 20
//!   chars, body 20..=4096 chars and Score >= 0;
//! - `stackexchange_title_answer`: (title, best answer) for the same questions, the best answer
//!   being the highest-Score answer (the first in file order on a tie), not the accepted one;
//! - `stackexchange_duplicates`: (title, title) for PostLinks with LinkTypeId 3 (PostId is the
//!   duplicate, RelatedPostId the original); no length or score filter (upstream documents none).
//!
//! Text: XML attribute escapes undone, then tags removed with upstream's `<.*?>` semantics, then
//! HTML entities decoded, then trimmed; lengths are counted in characters of that final text.
//!
//! Memory, per site, never the posts themselves: pass 1 over PostLinks keeps the duplicate links
//! and the set of ids they name; pass 1 over Posts keeps, per answered question, the best answer's
//! id and score (bounded by the number of questions: ~40 bytes each); pass 2 writes title-body
//! rows as it goes and keeps only the titles of kept questions whose best answer is still ahead
//! (answers follow their question in dumps, so this stays small), the rare best answer met before
//! its question, and the titles of posts named by duplicate links.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use quick_xml::events::{BytesStart, Event};
use schemas::{Arity, PairRecord};

use crate::input::{base_name, read_error};
use crate::text::{decode_entities, strip_tags};
use crate::{IngestError, IngestOptions, Location, Result, Sink, Source};

pub struct StackExchange;

const TITLE_BODY: usize = 0;
const TITLE_ANSWER: usize = 1;
const DUPLICATES: usize = 2;

const MIN_TITLE: usize = 20;
const MIN_BODY: usize = 20;
const MAX_BODY: usize = 4096;

/// One site's files, found by name in the same folder (`Posts.xml`, or `<site>-Posts.xml`).
struct Site {
    name: String,
    posts: Option<PathBuf>,
    links: Option<PathBuf>,
}

fn role(path: &Path) -> Option<(&'static str, String)> {
    let name = base_name(path);
    for kind in ["PostLinks.xml", "Posts.xml"] {
        if let Some(prefix) = name.strip_suffix(kind) {
            return Some((kind, prefix.trim_end_matches(['-', '_', '.']).to_owned()));
        }
    }
    None
}

fn sites(inputs: &[PathBuf]) -> Result<Vec<Site>> {
    let mut sites: Vec<(PathBuf, String, Site)> = Vec::new();
    for path in inputs {
        let Some((kind, prefix)) = role(path) else {
            return Err(IngestError::Input(format!(
                "{}: not a Stack Exchange Posts.xml or PostLinks.xml (plain or .gz)",
                path.display()
            )));
        };
        let mut dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut prefix = prefix;
        // Stack Overflow ships its files as separate archives, unpacked to
        // `stackoverflow.com-Posts/Posts.xml` and `stackoverflow.com-PostLinks/PostLinks.xml`:
        // one site, keyed by the folder name without the file-kind suffix.
        if prefix.is_empty() {
            let folder = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let kind_suffix = format!("-{}", kind.trim_end_matches(".xml"));
            if let Some(site) = folder.strip_suffix(&kind_suffix).filter(|s| !s.is_empty()) {
                prefix = site.to_owned();
                dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
            }
        }
        let index = match sites.iter().position(|(d, p, _)| *d == dir && *p == prefix) {
            Some(i) => i,
            None => {
                let name = if prefix.is_empty() {
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    prefix.clone()
                };
                sites.push((
                    dir.clone(),
                    prefix.clone(),
                    Site {
                        name,
                        posts: None,
                        links: None,
                    },
                ));
                sites.len() - 1
            }
        };
        let site = &mut sites[index].2;
        let slot = if kind == "Posts.xml" {
            &mut site.posts
        } else {
            &mut site.links
        };
        if let Some(other) = slot.replace(path.clone()) {
            return Err(IngestError::Input(format!(
                "two {kind} files for one site: {} and {}",
                other.display(),
                path.display()
            )));
        }
    }
    Ok(sites.into_iter().map(|(_, _, site)| site).collect())
}

type OnRow<'f> = dyn FnMut(&mut Sink, u64, &BytesStart) -> Result<()> + 'f;

/// Calls `f(row_number, element)` for every `<row>` of an XML dump file; `row_number` is 1-based.
/// `tracked`: read through the sink (hashed, counted in progress); Posts.xml is read twice and
/// only its second read is tracked, so progress ends at 100%.
fn for_each_row(sink: &mut Sink, path: &Path, tracked: bool, f: &mut OnRow) -> Result<()> {
    let input = if tracked {
        sink.open(path)?
    } else {
        crate::input::open(path)?
    };
    let mut reader = quick_xml::Reader::from_reader(input.reader);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut rows = 0u64;
    let mut depth = 0u32;
    let mut elements = 0u64;
    loop {
        buf.clear();
        let event = match reader.read_event_into(&mut buf) {
            Ok(e) => e,
            Err(quick_xml::Error::Io(e)) => {
                let e = std::sync::Arc::try_unwrap(e)
                    .unwrap_or_else(|e| std::io::Error::new(e.kind(), e.to_string()));
                return Err(read_error(path, e));
            }
            Err(e) => {
                return Err(IngestError::Malformed {
                    location: Location {
                        path: path.to_path_buf(),
                        record: rows + 1,
                        unit: "row",
                    },
                    message: format!(
                        "XML error at byte {}: {e}; the rest of the file cannot be read",
                        reader.error_position()
                    ),
                })
            }
        };
        if matches!(event, Event::Start(_) | Event::Empty(_)) {
            elements += 1;
        }
        match event {
            Event::Empty(e) if e.name().as_ref() == b"row" => {
                rows += 1;
                f(sink, rows, &e)?;
                if rows.is_multiple_of(16_384) {
                    sink.report();
                }
            }
            Event::Start(e) => {
                depth += 1;
                if e.name().as_ref() == b"row" {
                    rows += 1;
                    f(sink, rows, &e)?;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => {
                if elements == 0 {
                    return Err(IngestError::Input(format!(
                        "{}: no XML document (the file is empty or holds no element)",
                        path.display()
                    )));
                }
                if depth > 0 {
                    return Err(IngestError::Malformed {
                        location: Location {
                            path: path.to_path_buf(),
                            record: rows,
                            unit: "row",
                        },
                        message: "the file ends inside the document (truncated?)".into(),
                    });
                }
                return Ok(());
            }
            _ => {}
        }
    }
}

/// The raw values of the wanted attributes, in the order of `keys`.
fn attrs<'a, const N: usize>(
    e: &'a BytesStart<'a>,
    keys: [&[u8]; N],
) -> std::result::Result<[Option<Cow<'a, [u8]>>; N], String> {
    let mut out: [Option<Cow<'a, [u8]>>; N] = std::array::from_fn(|_| None);
    for attr in e.attributes().with_checks(false) {
        let attr = attr.map_err(|e| format!("bad attribute: {e}"))?;
        if let Some(i) = keys.iter().position(|k| *k == attr.key.as_ref()) {
            out[i] = Some(attr.value);
        }
    }
    Ok(out)
}

fn int(v: &Option<Cow<[u8]>>) -> Option<i64> {
    std::str::from_utf8(v.as_deref()?).ok()?.trim().parse().ok()
}

/// An attribute's text as a reader sees it: XML escapes, then tags, then HTML entities undone.
fn clean(v: &[u8]) -> std::result::Result<String, String> {
    let raw = std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let unescaped = quick_xml::escape::unescape(raw).map_err(|e| format!("bad escape: {e}"))?;
    Ok(decode_entities(&strip_tags(&unescaped)).trim().to_owned())
}

fn row_location(path: &Path, row: u64) -> Location {
    Location {
        path: path.to_path_buf(),
        record: row,
        unit: "row",
    }
}

/// Pass 1 over PostLinks: the duplicate links, in file order.
fn read_links(sink: &mut Sink, path: &Path) -> Result<Vec<(u64, u64)>> {
    let mut links = Vec::new();
    for_each_row(sink, path, true, &mut |sink, row, e| {
        let [post, related, kind] = match attrs(e, [b"PostId", b"RelatedPostId", b"LinkTypeId"]) {
            Ok(a) => a,
            Err(msg) => return sink.malformed(row_location(path, row), "invalid XML row", msg),
        };
        match (int(&post), int(&related), int(&kind)) {
            (Some(p), Some(r), Some(3)) if p >= 0 && r >= 0 => links.push((p as u64, r as u64)),
            (Some(_), Some(_), Some(_)) => {}
            _ => {
                return sink.malformed(
                    row_location(path, row),
                    "missing attribute",
                    "a PostLinks row needs numeric PostId, RelatedPostId and LinkTypeId",
                )
            }
        }
        Ok(())
    })?;
    Ok(links)
}

#[derive(Clone, Copy)]
struct Best {
    score: i64,
    answer: u64,
}

/// What pass 1 checks, so that pass 2 can skip bad rows without counting them twice.
struct Post<'a> {
    id: u64,
    kind: i64,
    parent: Option<u64>,
    score: i64,
    title: Option<Cow<'a, [u8]>>,
    body: Option<Cow<'a, [u8]>>,
}

fn post_keys<'a>(e: &'a BytesStart<'a>) -> std::result::Result<Post<'a>, String> {
    let [id, kind, parent, score, title, body] = attrs(
        e,
        [
            b"Id",
            b"PostTypeId",
            b"ParentId",
            b"Score",
            b"Title",
            b"Body",
        ],
    )?;
    let (Some(id), Some(kind)) = (int(&id), int(&kind)) else {
        return Err("a Posts row needs numeric Id and PostTypeId".into());
    };
    let post = Post {
        id: id as u64,
        kind,
        parent: int(&parent).map(|p| p as u64),
        score: int(&score).unwrap_or(0),
        title,
        body,
    };
    match kind {
        1 if int(&score).is_none() || post.title.is_none() || post.body.is_none() => {
            Err(format!("question {id} lacks Score, Title or Body"))
        }
        2 if int(&score).is_none() || post.parent.is_none() => {
            Err(format!("answer {id} lacks Score or ParentId"))
        }
        _ => Ok(post),
    }
}

/// Pass 1 over Posts: the best answer of every answered question.
fn read_best(sink: &mut Sink, path: &Path) -> Result<HashMap<u64, Best>> {
    let mut best: HashMap<u64, Best> = HashMap::new();
    for_each_row(sink, path, false, &mut |sink, row, e| {
        let post = match post_keys(e) {
            Ok(post) => post,
            Err(msg) => return sink.malformed(row_location(path, row), "invalid Posts row", msg),
        };
        if post.kind == 2 {
            let parent = post.parent.expect("checked");
            let entry = best.entry(parent).or_insert(Best {
                score: post.score,
                answer: post.id,
            });
            // Strictly greater: the first answer in file order wins a tie, as upstream.
            if post.score > entry.score {
                *entry = Best {
                    score: post.score,
                    answer: post.id,
                };
            }
        }
        Ok(())
    })?;
    Ok(best)
}

/// The upstream filter on a question: `None` when kept, else the reason.
fn question_filter(title: &str, body: &str, score: i64) -> Option<&'static str> {
    let body_len = body.chars().count();
    if title.chars().count() < MIN_TITLE {
        Some("title shorter than 20 chars")
    } else if body_len < MIN_BODY {
        Some("body shorter than 20 chars")
    } else if body_len > MAX_BODY {
        Some("body longer than 4096 chars")
    } else if score < 0 {
        Some("negative score")
    } else {
        None
    }
}

fn emit_answer(
    sink: &mut Sink,
    site: &str,
    qid: u64,
    aid: u64,
    title: String,
    answer: String,
) -> Result<()> {
    if answer.is_empty() {
        sink.skip(TITLE_ANSWER, "empty answer");
        return Ok(());
    }
    sink.emit(
        TITLE_ANSWER,
        PairRecord::pair(title, answer).with_id(format!("{site}:{qid}/{aid}")),
    )
}

/// What pass 1 of a site keeps for pass 2.
struct Pass1 {
    links: Vec<(u64, u64)>,
    best: HashMap<u64, Best>,
}

/// Pass 1 of a site. Its failures are the site's alone (a missing or unreadable file), so the
/// caller can go on with the other sites: nothing of the site has been written yet.
fn read_site(sink: &mut Sink, site: &Site) -> Result<Pass1> {
    let Some(posts) = &site.posts else {
        return Err(IngestError::Input(match &site.links {
            Some(links) => format!(
                "{}: PostLinks.xml without the site's Posts.xml beside it",
                links.display()
            ),
            None => "no Posts.xml".to_owned(),
        }));
    };
    let links = match &site.links {
        Some(path) => read_links(sink, path)?,
        None => Vec::new(),
    };
    let best = read_best(sink, posts)?;
    Ok(Pass1 { links, best })
}

/// Whether an error from [`read_site`] concerns that site only (its files), not the whole run.
fn site_error(e: &IngestError) -> bool {
    matches!(
        e,
        IngestError::Io { .. } | IngestError::Malformed { .. } | IngestError::Input(_)
    )
}

fn ingest_site(sink: &mut Sink, site: &Site, pass1: Pass1) -> Result<()> {
    let posts = site.posts.as_ref().expect("read_site checked");
    let Pass1 { links, mut best } = pass1;
    let linked: HashSet<u64> = links.iter().flat_map(|&(a, b)| [a, b]).collect();

    // Pass 2.
    let mut titles: HashMap<u64, String> = HashMap::new();
    // Best answer id -> (question id, title) of kept questions whose best answer is still ahead.
    let mut waiting: HashMap<u64, (u64, String)> = HashMap::new();
    // Question id -> (answer id, text): best answers met before their question.
    let mut early: HashMap<u64, (u64, String)> = HashMap::new();
    let name = site.name.as_str();
    for_each_row(sink, posts, true, &mut |sink, row, e| {
        // Rows pass 1 found bad were counted there.
        let Ok(post) = post_keys(e) else {
            return Ok(());
        };
        match post.kind {
            1 => {
                let cleaned = clean(post.title.as_deref().unwrap_or_default())
                    .and_then(|t| Ok((t, clean(post.body.as_deref().unwrap_or_default())?)));
                let (title, body) = match cleaned {
                    Ok(tb) => tb,
                    Err(msg) => {
                        best.remove(&post.id);
                        return sink.malformed(row_location(posts, row), "invalid text", msg);
                    }
                };
                if linked.contains(&post.id) {
                    titles.insert(post.id, title.clone());
                }
                let answer = best.remove(&post.id);
                if let Some(reason) = question_filter(&title, &body, post.score) {
                    sink.skip(TITLE_BODY, reason);
                    sink.skip(TITLE_ANSWER, reason);
                    early.remove(&post.id);
                    return Ok(());
                }
                let id = format!("{name}:{}", post.id);
                sink.emit(
                    TITLE_BODY,
                    PairRecord::pair(title.clone(), body).with_id(id),
                )?;
                match (answer, early.remove(&post.id)) {
                    (_, Some((aid, text))) => emit_answer(sink, name, post.id, aid, title, text)?,
                    (Some(b), None) => {
                        waiting.insert(b.answer, (post.id, title));
                    }
                    (None, None) => sink.skip(TITLE_ANSWER, "no answer"),
                }
            }
            2 => {
                let parent = post.parent.expect("checked in pass 1");
                let is_waited = waiting.contains_key(&post.id);
                let is_early = best.get(&parent).is_some_and(|b| b.answer == post.id);
                if !is_waited && !is_early {
                    return Ok(());
                }
                let text = match clean(post.body.as_deref().unwrap_or_default()) {
                    Ok(t) => t,
                    Err(msg) => {
                        return sink.malformed(row_location(posts, row), "invalid text", msg)
                    }
                };
                if let Some((qid, title)) = waiting.remove(&post.id) {
                    emit_answer(sink, name, qid, post.id, title, text)?;
                } else {
                    early.insert(parent, (post.id, text));
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    // Kept questions whose best answer could not be read in pass 2 (already counted malformed).
    for _ in waiting.drain() {
        sink.skip(TITLE_ANSWER, "best answer unreadable");
    }

    for (post, related) in links {
        match (titles.get(&post), titles.get(&related)) {
            (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => sink.emit(
                DUPLICATES,
                PairRecord::pair(a.clone(), b.clone()).with_id(format!("{name}:{post}/{related}")),
            )?,
            _ => sink.skip(DUPLICATES, "linked post is not a readable question"),
        }
    }
    sink.report();
    Ok(())
}

impl Source for StackExchange {
    fn name(&self) -> &'static str {
        "stackexchange"
    }
    fn datasets(&self) -> &'static [(&'static str, Arity)] {
        &[
            ("stackexchange_title_body", Arity::Pair),
            ("stackexchange_title_answer", Arity::Pair),
            ("stackexchange_duplicates", Arity::Pair),
        ]
    }
    fn about(&self) -> &'static str {
        "Stack Exchange dumps, extracted from their .7z: per site a folder with Posts.xml and \
         PostLinks.xml (plain or .gz; or files named <site>-Posts.xml); give site folders, a folder \
         of them, or the files. Writes stackexchange_title_body (questions with title >= 20 chars, \
         body 20-4096 chars, Score >= 0), stackexchange_title_answer (the same questions with their \
         highest-Score answer, not the accepted one) and stackexchange_duplicates (titles of \
         PostLinks LinkTypeId=3 pairs). HTML tags stripped as upstream's <.*?>, entities decoded. \
         A site that cannot be read (no Posts.xml, empty or broken XML) is skipped, named and \
         counted, and the other sites are ingested. \
         Streams the XML twice per site; holds per answered question its best answer's id and \
         score (memory grows with the site's question count, ~40 bytes each), plus the titles of \
         duplicate-linked posts."
    }
    fn accept(&self, path: &Path) -> bool {
        role(path).is_some()
    }
    fn ingest(&self, inputs: &[PathBuf], sink: &mut Sink, _opts: &IngestOptions) -> Result<()> {
        let sites = sites(inputs)?;
        let mut bad = Vec::new();
        for site in &sites {
            match read_site(sink, site) {
                Ok(pass1) => ingest_site(sink, site, pass1)?,
                Err(e) if site_error(&e) => bad.push(format!("{} ({e})", site.name)),
                Err(e) => return Err(e),
            }
        }
        if bad.len() == sites.len() {
            return Err(IngestError::Input(format!(
                "no readable Stack Exchange site: {}",
                bad.join("; ")
            )));
        }
        if !bad.is_empty() {
            sink.warn(format!(
                "{} of {} Stack Exchange sites skipped, unreadable: {}",
                bad.len(),
                sites.len(),
                bad.join("; ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_escaped_html() {
        assert_eq!(
            clean(b"&lt;p&gt;a &amp;amp; b&lt;/p&gt;&#xA;&lt;p&gt;c&amp;lt;d&lt;/p&gt;").unwrap(),
            "a & b\nc<d"
        );
        assert!(clean(b"bad &bogus; escape").is_err());
    }

    #[test]
    fn names_sites_by_folder_or_prefix() {
        assert_eq!(
            role(Path::new("/d/site/Posts.xml.gz")),
            Some(("Posts.xml", String::new()))
        );
        assert_eq!(
            role(Path::new("/d/so.com-PostLinks.xml")),
            Some(("PostLinks.xml", "so.com".to_owned()))
        );
        assert_eq!(role(Path::new("/d/Users.xml")), None);
    }
}
