//! The built-in download catalogue: each source's official file URLs, with sizes and sha256
//! where the publisher (or a well-known mirror of its checksums) states them. `prep download
//! --list` prints it; `prep download --source <name>` fetches a source's files into
//! `<dest>/<name>/`, where `prep ingest --source <name>` finds them.
//!
//! Depends on nothing but std and serde, so any crate can read it. Sizes and checksums are only
//! given where they were checked against published values; the download engine verifies the
//! server's announced size for every other file.

use serde::Serialize;

/// How a downloaded file is packed, i.e. what must happen before ingest can read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Packing {
    /// Read as it is.
    Plain,
    /// gzip: ingest reads it directly.
    Gzip,
    /// A tar archive (gzip-compressed) of the files ingest reads.
    TarGz,
    /// A 7-Zip archive (Stack Exchange dumps).
    SevenZip,
}

/// One file of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RemoteFile {
    /// Name inside the source's cache folder.
    pub name: &'static str,
    pub url: &'static str,
    /// Bytes, when published.
    pub size: Option<u64>,
    /// Lowercase hex sha256, when published.
    pub sha256: Option<&'static str>,
    pub packing: Packing,
}

/// One downloadable source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceFiles {
    /// The `--source` name for `prep download` and `prep ingest`.
    pub source: &'static str,
    /// The ingest source that reads these files (the same name, except for the upstream
    /// normalized release, which `--source jsonl` reads).
    pub ingest_with: &'static str,
    /// Dataset ids (UPSTREAM.md) the files feed.
    pub datasets: &'static [&'static str],
    pub description: &'static str,
    pub homepage: &'static str,
    pub files: &'static [RemoteFile],
    /// What has to be done by hand, for sources with no direct download.
    pub manual: Option<&'static str>,
}

impl SourceFiles {
    /// Sum of the published sizes, when every file has one.
    pub fn known_size(&self) -> Option<u64> {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A file without published size or checksum.
const fn f(name: &'static str, url: &'static str, packing: Packing) -> RemoteFile {
    RemoteFile {
        name,
        url,
        size: None,
        sha256: None,
        packing,
    }
}

/// Every source, in the order `prep download --list` shows them.
pub fn catalogue() -> &'static [SourceFiles] {
    CATALOGUE
}

/// Looks a source up by its `--source` name.
pub fn find(source: &str) -> Option<&'static SourceFiles> {
    CATALOGUE.iter().find(|s| s.source == source)
}

macro_rules! msmarco {
    ($file:literal) => {
        concat!(
            "https://msmarco.z22.web.core.windows.net/msmarcoranking/",
            $file
        )
    };
}

macro_rules! sbert {
    ($file:literal) => {
        concat!(
            "https://huggingface.co/datasets/sentence-transformers/embedding-training-data/resolve/main/",
            $file
        )
    };
}

static CATALOGUE: &[SourceFiles] = &[
    SourceFiles {
        source: "wikianswers",
        ingest_with: "wikianswers",
        datasets: &["wikianswers"],
        description: "WikiAnswers paraphrase clusters (Fader et al. 2014): 40 gzip parts, 8 GB",
        homepage: "https://github.com/afader/oqa#wikianswers-corpus",
        files: WIKIANSWERS,
        manual: None,
    },
    SourceFiles {
        source: "paq",
        ingest_with: "paq",
        datasets: &["paq"],
        description: "PAQ question metadata (16 GB) and the DPR Wikipedia passages it points into",
        homepage: "https://github.com/facebookresearch/PAQ",
        files: &[
            f(
                "PAQ.metadata.jsonl.gz",
                "https://dl.fbaipublicfiles.com/paq/v1/PAQ.metadata.jsonl.gz",
                Packing::Gzip,
            ),
            f(
                "psgs_w100.tsv.gz",
                "https://dl.fbaipublicfiles.com/dpr/wikipedia_split/psgs_w100.tsv.gz",
                Packing::Gzip,
            ),
        ],
        manual: None,
    },
    SourceFiles {
        source: "stackexchange",
        ingest_with: "stackexchange",
        datasets: &[
            "stackexchange_title_body",
            "stackexchange_title_answer",
            "stackexchange_duplicates",
        ],
        description: "Stack Exchange data dumps (Internet Archive), one .7z per site of the upstream mix plus Stack Overflow's Posts and PostLinks",
        homepage: "https://archive.org/details/stackexchange",
        files: STACKEXCHANGE,
        manual: None,
    },
    SourceFiles {
        source: "msmarco",
        ingest_with: "msmarco",
        datasets: &["msmarco"],
        description: "MS MARCO passage ranking: passages, queries, train qrels and the full train id triples",
        homepage: "https://microsoft.github.io/msmarco/",
        files: &[
            f("collection.tar.gz", msmarco!("collection.tar.gz"), Packing::TarGz),
            f("queries.tar.gz", msmarco!("queries.tar.gz"), Packing::TarGz),
            f("qrels.train.tsv", msmarco!("qrels.train.tsv"), Packing::Plain),
            f(
                "qidpidtriples.train.full.2.tsv.gz",
                msmarco!("qidpidtriples.train.full.2.tsv.gz"),
                Packing::Gzip,
            ),
        ],
        manual: None,
    },
    SourceFiles {
        source: "gooaq",
        ingest_with: "gooaq",
        datasets: &["gooaq"],
        description: "GooAQ question-answer pairs from Google autocomplete (jsonl)",
        homepage: "https://github.com/allenai/gooaq",
        files: &[f(
            "gooaq.jsonl",
            "https://github.com/allenai/gooaq/raw/main/data/gooaq.jsonl",
            Packing::Plain,
        )],
        manual: None,
    },
    SourceFiles {
        source: "amazon_qa",
        ingest_with: "amazon_qa",
        datasets: &["amazon_qa"],
        description: "Amazon product QA (McAuley & Yang 2016), the 21 single-answer category files",
        homepage: "https://cseweb.ucsd.edu/~jmcauley/datasets.html#amazon_qa",
        files: AMAZON_QA,
        manual: None,
    },
    SourceFiles {
        source: "yahoo",
        ingest_with: "yahoo",
        datasets: &[
            "yahoo_title_answer",
            "yahoo_title_question",
            "yahoo_question_answer",
        ],
        description: "Yahoo! Answers topic classification csv (Zhang et al. 2015), fast.ai mirror",
        homepage: "https://github.com/zhangxiangxiao/Crepe",
        files: &[f(
            "yahoo_answers_csv.tgz",
            "https://s3.amazonaws.com/fast-ai-nlp/yahoo_answers_csv.tgz",
            Packing::TarGz,
        )],
        manual: None,
    },
    SourceFiles {
        source: "searchqa",
        ingest_with: "searchqa",
        datasets: &["searchqa"],
        description: "SearchQA Jeopardy questions with search snippets",
        homepage: "https://github.com/nyu-dl/dl4ir-searchQA",
        files: &[],
        manual: Some(
            "the publisher shares SearchQA through Google Drive only: download `data_json` from the \
             homepage's link, unpack it, and pass the folder to `prep ingest --source searchqa --input`; \
             or use the upstream normalized file from `prep download --source sbert_normalized`",
        ),
    },
    SourceFiles {
        source: "eli5",
        ingest_with: "eli5",
        datasets: &["eli5"],
        description: "ELI5 (Fan et al. 2019), built from Reddit dumps by the publisher's scripts",
        homepage: "https://github.com/facebookresearch/ELI5",
        files: &[],
        manual: Some(
            "ELI5 has no direct download: build it with the homepage's scripts from the Reddit dumps \
             and pass the output to `prep ingest --source eli5 --input`; or use the upstream \
             normalized file from `prep download --source sbert_normalized`",
        ),
    },
    SourceFiles {
        source: "quora",
        ingest_with: "quora",
        datasets: &["quora"],
        description: "Quora question pairs (first Quora dataset release)",
        homepage: "https://quoradata.quora.com/First-Quora-Dataset-Release-Question-Pairs",
        files: &[f(
            "quora_duplicate_questions.tsv",
            "http://qim.fs.quoracdn.net/quora_duplicate_questions.tsv",
            Packing::Plain,
        )],
        manual: None,
    },
    SourceFiles {
        source: "natural_questions",
        ingest_with: "natural_questions",
        datasets: &["natural_questions"],
        description: "Natural Questions, simplified train set (question, document text, long-answer spans)",
        homepage: "https://ai.google.com/research/NaturalQuestions/download",
        files: &[f(
            "simplified-nq-train.jsonl.gz",
            "https://storage.googleapis.com/natural_questions/v1.0-simplified/simplified-nq-train.jsonl.gz",
            Packing::Gzip,
        )],
        manual: None,
    },
    SourceFiles {
        source: "squad",
        ingest_with: "squad",
        datasets: &["squad"],
        description: "SQuAD 1.1 train set (87,599 questions, the upstream squad_pairs)",
        homepage: "https://rajpurkar.github.io/SQuAD-explorer/",
        files: &[RemoteFile {
            name: "train-v1.1.json",
            url: "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json",
            size: Some(30_288_272),
            sha256: Some("3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955"),
            packing: Packing::Plain,
        }],
        manual: None,
    },
    SourceFiles {
        source: "triviaqa",
        ingest_with: "triviaqa",
        datasets: &["triviaqa"],
        description: "TriviaQA reading-comprehension release (questions, web and Wikipedia evidence), 2.5 GB",
        homepage: "https://nlp.cs.washington.edu/triviaqa/",
        files: &[f(
            "triviaqa-rc.tar.gz",
            "https://nlp.cs.washington.edu/triviaqa/data/triviaqa-rc.tar.gz",
            Packing::TarGz,
        )],
        manual: None,
    },
    SourceFiles {
        source: "sbert_normalized",
        ingest_with: "jsonl",
        datasets: &[
            "gooaq",
            "yahoo_title_answer",
            "yahoo_title_question",
            "yahoo_question_answer",
            "msmarco",
            "stackexchange_duplicates",
            "eli5",
            "squad",
            "natural_questions",
            "amazon_qa",
            "quora",
            "wikianswers",
            "searchqa",
            "paq",
            "triviaqa",
        ],
        description: "the upstream normalized jsonl.gz release (sentence-transformers/embedding-training-data); one dataset per file",
        homepage: "https://huggingface.co/datasets/sentence-transformers/embedding-training-data",
        files: &[
            f("gooaq_pairs.jsonl.gz", sbert!("gooaq_pairs.jsonl.gz"), Packing::Gzip),
            f(
                "yahoo_answers_title_answer.jsonl.gz",
                sbert!("yahoo_answers_title_answer.jsonl.gz"),
                Packing::Gzip,
            ),
            f(
                "yahoo_answers_title_question.jsonl.gz",
                sbert!("yahoo_answers_title_question.jsonl.gz"),
                Packing::Gzip,
            ),
            f(
                "yahoo_answers_question_answer.jsonl.gz",
                sbert!("yahoo_answers_question_answer.jsonl.gz"),
                Packing::Gzip,
            ),
            f(
                "msmarco-triplets.jsonl.gz",
                sbert!("msmarco-triplets.jsonl.gz"),
                Packing::Gzip,
            ),
            f(
                "stackexchange_duplicate_questions_title_title.jsonl.gz",
                sbert!("stackexchange_duplicate_questions_title_title.jsonl.gz"),
                Packing::Gzip,
            ),
            f(
                "eli5_question_answer.jsonl.gz",
                sbert!("eli5_question_answer.jsonl.gz"),
                Packing::Gzip,
            ),
            f("squad_pairs.jsonl.gz", sbert!("squad_pairs.jsonl.gz"), Packing::Gzip),
            f(
                "NQ-train_pairs.jsonl.gz",
                sbert!("NQ-train_pairs.jsonl.gz"),
                Packing::Gzip,
            ),
            f("amazon-qa.jsonl.gz", sbert!("amazon-qa.jsonl.gz"), Packing::Gzip),
            f(
                "quora_duplicates_triplets.jsonl.gz",
                sbert!("quora_duplicates_triplets.jsonl.gz"),
                Packing::Gzip,
            ),
            f("WikiAnswers.jsonl.gz", sbert!("WikiAnswers.jsonl.gz"), Packing::Gzip),
            f(
                "searchQA_top5_snippets.jsonl.gz",
                sbert!("searchQA_top5_snippets.jsonl.gz"),
                Packing::Gzip,
            ),
            f("PAQ_pairs.jsonl.gz", sbert!("PAQ_pairs.jsonl.gz"), Packing::Gzip),
            f(
                "TriviaQA_pairs.jsonl.gz",
                sbert!("TriviaQA_pairs.jsonl.gz"),
                Packing::Gzip,
            ),
        ],
        manual: None,
    },
];

const WIKIANSWERS: &[RemoteFile] = &[
    f(
        "part-00000.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00000.gz",
        Packing::Gzip,
    ),
    f(
        "part-00001.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00001.gz",
        Packing::Gzip,
    ),
    f(
        "part-00002.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00002.gz",
        Packing::Gzip,
    ),
    f(
        "part-00003.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00003.gz",
        Packing::Gzip,
    ),
    f(
        "part-00004.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00004.gz",
        Packing::Gzip,
    ),
    f(
        "part-00005.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00005.gz",
        Packing::Gzip,
    ),
    f(
        "part-00006.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00006.gz",
        Packing::Gzip,
    ),
    f(
        "part-00007.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00007.gz",
        Packing::Gzip,
    ),
    f(
        "part-00008.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00008.gz",
        Packing::Gzip,
    ),
    f(
        "part-00009.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00009.gz",
        Packing::Gzip,
    ),
    f(
        "part-00010.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00010.gz",
        Packing::Gzip,
    ),
    f(
        "part-00011.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00011.gz",
        Packing::Gzip,
    ),
    f(
        "part-00012.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00012.gz",
        Packing::Gzip,
    ),
    f(
        "part-00013.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00013.gz",
        Packing::Gzip,
    ),
    f(
        "part-00014.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00014.gz",
        Packing::Gzip,
    ),
    f(
        "part-00015.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00015.gz",
        Packing::Gzip,
    ),
    f(
        "part-00016.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00016.gz",
        Packing::Gzip,
    ),
    f(
        "part-00017.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00017.gz",
        Packing::Gzip,
    ),
    f(
        "part-00018.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00018.gz",
        Packing::Gzip,
    ),
    f(
        "part-00019.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00019.gz",
        Packing::Gzip,
    ),
    f(
        "part-00020.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00020.gz",
        Packing::Gzip,
    ),
    f(
        "part-00021.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00021.gz",
        Packing::Gzip,
    ),
    f(
        "part-00022.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00022.gz",
        Packing::Gzip,
    ),
    f(
        "part-00023.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00023.gz",
        Packing::Gzip,
    ),
    f(
        "part-00024.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00024.gz",
        Packing::Gzip,
    ),
    f(
        "part-00025.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00025.gz",
        Packing::Gzip,
    ),
    f(
        "part-00026.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00026.gz",
        Packing::Gzip,
    ),
    f(
        "part-00027.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00027.gz",
        Packing::Gzip,
    ),
    f(
        "part-00028.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00028.gz",
        Packing::Gzip,
    ),
    f(
        "part-00029.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00029.gz",
        Packing::Gzip,
    ),
    f(
        "part-00030.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00030.gz",
        Packing::Gzip,
    ),
    f(
        "part-00031.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00031.gz",
        Packing::Gzip,
    ),
    f(
        "part-00032.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00032.gz",
        Packing::Gzip,
    ),
    f(
        "part-00033.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00033.gz",
        Packing::Gzip,
    ),
    f(
        "part-00034.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00034.gz",
        Packing::Gzip,
    ),
    f(
        "part-00035.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00035.gz",
        Packing::Gzip,
    ),
    f(
        "part-00036.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00036.gz",
        Packing::Gzip,
    ),
    f(
        "part-00037.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00037.gz",
        Packing::Gzip,
    ),
    f(
        "part-00038.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00038.gz",
        Packing::Gzip,
    ),
    f(
        "part-00039.gz",
        "http://knowitall.cs.washington.edu/oqa/data/wikianswers/part-00039.gz",
        Packing::Gzip,
    ),
];

const STACKEXCHANGE: &[RemoteFile] = &[
    f(
        "academia.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/academia.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "android.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/android.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "anime.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/anime.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "apple.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/apple.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "arduino.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/arduino.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "askubuntu.com.7z",
        "https://archive.org/download/stackexchange/askubuntu.com.7z",
        Packing::SevenZip,
    ),
    f(
        "astronomy.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/astronomy.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "aviation.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/aviation.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "bicycles.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/bicycles.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "biology.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/biology.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "bitcoin.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/bitcoin.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "blender.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/blender.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "boardgames.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/boardgames.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "chemistry.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/chemistry.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "christianity.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/christianity.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "civicrm.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/civicrm.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "codereview.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/codereview.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "cooking.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/cooking.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "craftcms.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/craftcms.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "crypto.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/crypto.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "cs.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/cs.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "cstheory.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/cstheory.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "datascience.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/datascience.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "dba.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/dba.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "diy.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/diy.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "drupal.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/drupal.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "dsp.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/dsp.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "economics.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/economics.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "electronics.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/electronics.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "ell.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/ell.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "emacs.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/emacs.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "engineering.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/engineering.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "english.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/english.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "ethereum.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/ethereum.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "expressionengine.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/expressionengine.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "french.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/french.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "gamedev.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/gamedev.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "gaming.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/gaming.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "gardening.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/gardening.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "german.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/german.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "gis.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/gis.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "graphicdesign.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/graphicdesign.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "hinduism.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/hinduism.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "history.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/history.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "islam.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/islam.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "japanese.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/japanese.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "judaism.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/judaism.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "law.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/law.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "magento.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/magento.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "math.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/math.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "mathematica.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/mathematica.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "mathoverflow.net.7z",
        "https://archive.org/download/stackexchange/mathoverflow.net.7z",
        Packing::SevenZip,
    ),
    f(
        "mechanics.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/mechanics.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "meta.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/meta.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "meta.stackoverflow.com.7z",
        "https://archive.org/download/stackexchange/meta.stackoverflow.com.7z",
        Packing::SevenZip,
    ),
    f(
        "money.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/money.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "movies.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/movies.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "music.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/music.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "networkengineering.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/networkengineering.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "philosophy.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/philosophy.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "photo.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/photo.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "physics.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/physics.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "politics.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/politics.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "puzzling.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/puzzling.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "quant.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/quant.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "raspberrypi.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/raspberrypi.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "rpg.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/rpg.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "salesforce.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/salesforce.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "scifi.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/scifi.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "security.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/security.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "serverfault.com.7z",
        "https://archive.org/download/stackexchange/serverfault.com.7z",
        Packing::SevenZip,
    ),
    f(
        "sharepoint.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/sharepoint.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "skeptics.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/skeptics.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "softwareengineering.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/softwareengineering.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "softwarerecs.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/softwarerecs.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "space.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/space.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "stats.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/stats.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "superuser.com.7z",
        "https://archive.org/download/stackexchange/superuser.com.7z",
        Packing::SevenZip,
    ),
    f(
        "tex.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/tex.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "travel.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/travel.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "unix.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/unix.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "ux.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/ux.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "vi.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/vi.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "webapps.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/webapps.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "webmasters.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/webmasters.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "wordpress.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/wordpress.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "workplace.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/workplace.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "worldbuilding.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/worldbuilding.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "writers.stackexchange.com.7z",
        "https://archive.org/download/stackexchange/writers.stackexchange.com.7z",
        Packing::SevenZip,
    ),
    f(
        "stackoverflow.com-Posts.7z",
        "https://archive.org/download/stackexchange/stackoverflow.com-Posts.7z",
        Packing::SevenZip,
    ),
    f(
        "stackoverflow.com-PostLinks.7z",
        "https://archive.org/download/stackexchange/stackoverflow.com-PostLinks.7z",
        Packing::SevenZip,
    ),
];

const AMAZON_QA: &[RemoteFile] = &[
    RemoteFile {
        name: "qa_Appliances.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Appliances.json.gz",
        size: Some(975_540),
        sha256: Some("9c613a5dfedd1071431faa29de903b1b0e592c5ac1c7861c26d8b69dfda8ac78"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Arts_Crafts_and_Sewing.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Arts_Crafts_and_Sewing.json.gz",
        size: None,
        sha256: Some("c9aad6d615294571c1be7ea6a88730829a68e701ca7d1168f4d6b5234c37ac65"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Automotive.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Automotive.json.gz",
        size: None,
        sha256: Some("ca2da4b9d3afd3e6c915d69b34618bdcf9c6febadd7389f368fb51e9e1585009"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Baby.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Baby.json.gz",
        size: None,
        sha256: Some("acca09d58e7b5487c41de1e21f5a4c676f9aaf1b0534cbeb73c2d5a7444231a0"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Beauty.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Beauty.json.gz",
        size: None,
        sha256: Some("e4e7d28e917fd1b0a605c85eff4c5d3e832a925ab6ed1216147b306984457b90"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Cell_Phones_and_Accessories.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Cell_Phones_and_Accessories.json.gz",
        size: None,
        sha256: Some("2ca990b05fbf1282aeeaab139ca8ad005cd540c0ad198ae2558d43cb01f24b42"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Clothing_Shoes_and_Jewelry.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Clothing_Shoes_and_Jewelry.json.gz",
        size: None,
        sha256: Some("2c8e24b6d89ccc4084c694a6197d862cdfdc90224877e566dc8170c86ba38d68"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Electronics.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Electronics.json.gz",
        size: None,
        sha256: Some("4ead1073043b6103a3a8eb738a04143f448cd3e200df074ad5071a24ad6bae95"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Grocery_and_Gourmet_Food.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Grocery_and_Gourmet_Food.json.gz",
        size: None,
        sha256: Some("438a9b97924098484c73d59e9f47e6bdb7898fdc94ae5fcfead0493a37443817"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Health_and_Personal_Care.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Health_and_Personal_Care.json.gz",
        size: None,
        sha256: Some("5f3564cf88a56fdf6913ca8e0e7e51478ef829b8faff6bec0e33f46e567bcbf6"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Home_and_Kitchen.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Home_and_Kitchen.json.gz",
        size: None,
        sha256: Some("eefa1f213bb476478c40ab9c2081c7dd0925f2f1df5d3efeb43f6e5715daaeaf"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Industrial_and_Scientific.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Industrial_and_Scientific.json.gz",
        size: None,
        sha256: Some("9ae1e9c2db859061350559d59c44125131d8af1149d6e99f45a73687f67a6b0e"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Musical_Instruments.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Musical_Instruments.json.gz",
        size: None,
        sha256: Some("a677605d6b6e612a485e939855f85c51a3bf1678da56c81ad5799ce1ef70d8bf"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Office_Products.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Office_Products.json.gz",
        size: None,
        sha256: Some("78e895f0df8e647d1c1a0a46f112f57adad9c49584dd48fb90e14648da790025"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Patio_Lawn_and_Garden.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Patio_Lawn_and_Garden.json.gz",
        size: None,
        sha256: Some("30a7bc60b39345a818a91a87f528afd860dc479d97115c4274056219471f5222"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Pet_Supplies.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Pet_Supplies.json.gz",
        size: None,
        sha256: Some("13a6a722f5f1c3209a0296ef87115ad2cc3ffa490b098c278596a0994484ef41"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Software.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Software.json.gz",
        size: None,
        sha256: Some("54847f45ed575611bc3abc88f176491678d1f0c38cad3a15ad5462f99c30e31c"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Sports_and_Outdoors.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Sports_and_Outdoors.json.gz",
        size: None,
        sha256: Some("a513460612695249027345f6cb8bde35d8dca664927582f4a1c429a45e60b62d"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Tools_and_Home_Improvement.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Tools_and_Home_Improvement.json.gz",
        size: None,
        sha256: Some("fe29b60e01c9867e7f62ea416bee300cd68f6c7230ac518f94f2fb252e322bc8"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Toys_and_Games.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Toys_and_Games.json.gz",
        size: None,
        sha256: Some("231582d4d5aa4959b6344d21ea0bf1b4872aa59645bb9e8107d1056922673dfe"),
        packing: Packing::Gzip,
    },
    RemoteFile {
        name: "qa_Video_Games.json.gz",
        url: "http://jmcauley.ucsd.edu/data/amazon/qa/qa_Video_Games.json.gz",
        size: None,
        sha256: Some("45d626d00f393e9df0191d12e12fbdce6b6655ad14715bba2f8d9fe58fc7e1c2"),
        packing: Packing::Gzip,
    },
];

/// How `prep ingest --source <name>` reads a Hub mirror's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TableRead {
    /// The dataset id written (UPSTREAM.md).
    pub dataset: &'static str,
    /// `--columns` for the table source; `None`: its default (the first two string columns),
    /// used where the dataset card does not settle the names.
    pub columns: Option<&'static str>,
}

/// A source's mirror on the Hugging Face Hub, beside its official URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HubMirror {
    pub source: &'static str,
    /// The dataset repository (`org/name`); `None` where no mirror could be confirmed.
    pub repo: Option<&'static str>,
    /// The files of it that hold the source (`--include` patterns); empty: not fetched by
    /// `prep download --from hub` (see `note`).
    pub include: &'static [&'static str],
    /// `None`: the files are read by the source's own reader (`ingest_with`); otherwise by the
    /// table source.
    pub table: Option<TableRead>,
    /// Where the id, files and columns were checked (the Hub pages of the dataset card and file
    /// tree, at the commits named), and what differs from the official release.
    pub note: &'static str,
}

/// Every source's Hub mirror (or why there is none), in catalogue order.
pub fn hub_mirrors() -> &'static [HubMirror] {
    MIRRORS
}

/// The mirror entry of a source.
pub fn hub_mirror(source: &str) -> Option<&'static HubMirror> {
    MIRRORS.iter().find(|m| m.source == source)
}

const fn table(dataset: &'static str, columns: Option<&'static str>) -> Option<TableRead> {
    Some(TableRead { dataset, columns })
}

static MIRRORS: &[HubMirror] = &[
    HubMirror {
        source: "wikianswers",
        repo: Some("sentence-transformers/wikianswers-duplicates"),
        include: &["*.parquet"],
        table: table("wikianswers", None),
        note: "viewer: one subset `pair`, 761M rows (ours makes ~77M pairs from the clusters, as \
               upstream's WikiAnswers_pairs did); file layout and column names not confirmed, so \
               every Parquet file and the first two string columns",
    },
    HubMirror {
        source: "paq",
        repo: Some("sentence-transformers/paq"),
        include: &["pair/*.parquet"],
        table: table("paq", None),
        note: "tree at main (74601d8): `pair/` with 88 Parquet parts; column names not confirmed \
               (the first two string columns)",
    },
    HubMirror {
        source: "stackexchange",
        repo: Some("sentence-transformers/stackexchange-duplicates"),
        include: &["title-title-pair/*.parquet"],
        table: table("stackexchange_duplicates", None),
        note: "duplicates only: viewer lists subsets body-body-pair, post-post-pair, \
               title-title-pair (305k rows); the title-body and title-answer pairs are in \
               `sbert_normalized`; column names not confirmed",
    },
    HubMirror {
        source: "msmarco",
        repo: None,
        include: &[],
        table: None,
        note: "no mirror confirmed here; upstream's triplets are in `sbert_normalized` \
               (msmarco-query_passage_negative_v2.jsonl.gz)",
    },
    HubMirror {
        source: "gooaq",
        repo: Some("sentence-transformers/gooaq"),
        include: &["pair/*.parquet"],
        table: table("gooaq", Some("anchor=question,positive=answer")),
        note:
            "dataset card at b089f72: subset `pair`, columns \"question\", \"answer\" (str, str), \
               3.01M rows; tree: pair/train-0000{0,1}-of-00002.parquet",
    },
    HubMirror {
        source: "amazon_qa",
        repo: Some("sentence-transformers/amazon-qa"),
        include: &["pair/*.parquet"],
        table: table("amazon_qa", Some("anchor=query,positive=answer")),
        note: "dataset card at 614a800: subset `pair`, columns \"query\", \"answer\" (str, str)",
    },
    HubMirror {
        source: "yahoo",
        repo: Some("sentence-transformers/yahoo-answers"),
        include: &["question-answer-pair/*.parquet"],
        table: table("yahoo_question_answer", None),
        note: "tree at ad51697: subset folder `question-answer-pair` only (the title-answer and \
               title-question sets are in `sbert_normalized`); column names not confirmed",
    },
    HubMirror {
        source: "searchqa",
        repo: None,
        include: &[],
        table: None,
        note: "no mirror confirmed here; upstream's pairs are in `sbert_normalized` \
               (searchQA_question_top5_snippets_merged.jsonl.gz)",
    },
    HubMirror {
        source: "eli5",
        repo: None,
        include: &[],
        table: None,
        note: "no mirror confirmed here; upstream's pairs are in `sbert_normalized` \
               (eli5_question_answer.jsonl.gz)",
    },
    HubMirror {
        source: "quora",
        repo: Some("sentence-transformers/quora-duplicates"),
        include: &[],
        table: None,
        note: "card at b826854 shows subsets `pair` and `pair-class` (\"sentence1\", ...) but not \
               which holds our (question, duplicate, hard negative) triplets: not fetched; \
               upstream's triplets are in `sbert_normalized` (quora_duplicates_triplets.jsonl.gz)",
    },
    HubMirror {
        source: "natural_questions",
        repo: Some("sentence-transformers/natural-questions"),
        include: &["pair/*.parquet"],
        table: table("natural_questions", None),
        note:
            "dataset card at f9e894e: subset `pair`; it lists columns \"question\", \"answer\" but \
               its example shows 'query', so the first two string columns are taken",
    },
    HubMirror {
        source: "squad",
        repo: None,
        include: &[],
        table: None,
        note: "no mirror confirmed here; upstream's pairs are in `sbert_normalized` \
               (squad_pairs.jsonl.gz)",
    },
    HubMirror {
        source: "triviaqa",
        repo: Some("sentence-transformers/trivia-qa"),
        include: &["pair/*.parquet"],
        table: table("triviaqa", None),
        note: "tree at a7c36e3: pair/train-00000-of-00001.parquet (150 MB); column names not \
               confirmed (the first two string columns)",
    },
    HubMirror {
        source: "sbert_normalized",
        repo: Some("sentence-transformers/embedding-training-data"),
        include: &["*.jsonl.gz"],
        table: None,
        note: "the upstream normalized files themselves (file history of PAQ_pairs.jsonl.gz: \
               34bc5be, 2021-09-08); read by `--source jsonl`",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::{Component, Path};

    /// The dataset ids of UPSTREAM.md.
    const DATASETS: &[&str] = &[
        "wikianswers",
        "paq",
        "stackexchange_title_body",
        "stackexchange_title_answer",
        "msmarco",
        "gooaq",
        "amazon_qa",
        "yahoo_title_answer",
        "yahoo_question_answer",
        "yahoo_title_question",
        "searchqa",
        "eli5",
        "stackexchange_duplicates",
        "quora",
        "natural_questions",
        "squad",
        "triviaqa",
    ];

    #[test]
    fn every_source_has_a_mirror_entry_and_fetchable_ones_say_what_to_read() {
        for s in catalogue() {
            let m =
                hub_mirror(s.source).unwrap_or_else(|| panic!("{} has no mirror entry", s.source));
            assert!(!m.note.is_empty(), "{}", s.source);
            if m.repo.is_none() {
                assert!(m.include.is_empty() && m.table.is_none(), "{}", s.source);
            }
            if let Some(t) = m.table {
                assert!(!m.include.is_empty(), "{}", s.source);
                assert!(
                    s.datasets.contains(&t.dataset) || s.source == "sbert_normalized",
                    "{}: {} is not one of its datasets",
                    s.source,
                    t.dataset
                );
            }
        }
        assert_eq!(hub_mirrors().len(), catalogue().len());
    }

    #[test]
    fn entries_are_well_formed() {
        let mut sources = HashSet::new();
        for s in catalogue() {
            assert!(sources.insert(s.source), "{} listed twice", s.source);
            assert_eq!(find(s.source), Some(s));
            assert!(
                s.files.is_empty() == s.manual.is_some(),
                "{}: files xor manual note",
                s.source
            );
            for d in s.datasets {
                assert!(DATASETS.contains(d), "{}: unknown dataset {d}", s.source);
            }
            let mut names = HashSet::new();
            for f in s.files {
                assert!(names.insert(f.name), "{}: {} twice", s.source, f.name);
                assert!(
                    Path::new(f.name)
                        .components()
                        .all(|c| matches!(c, Component::Normal(_))),
                    "{}: {} is not a plain relative name",
                    s.source,
                    f.name
                );
                assert!(
                    f.url.starts_with("https://") || f.url.starts_with("http://"),
                    "{}",
                    f.url
                );
                assert!(
                    f.url.ends_with(f.name),
                    "{}: {} does not end with its name",
                    s.source,
                    f.url
                );
                if let Some(h) = f.sha256 {
                    assert!(
                        h.len() == 64
                            && h.bytes()
                                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                        "{}: bad sha256 {h}",
                        f.name
                    );
                }
            }
        }
        // Every upstream dataset can be fed from some entry.
        for d in DATASETS {
            assert!(
                catalogue().iter().any(|s| s.datasets.contains(d)),
                "{d} has no source"
            );
        }
        assert_eq!(find("nope"), None);
    }

    #[test]
    fn multi_file_sources_are_complete() {
        let wa = find("wikianswers").unwrap();
        assert_eq!(wa.files.len(), 40);
        assert_eq!(wa.files[39].name, "part-00039.gz");
        let se = find("stackexchange").unwrap();
        // 89 sites of the upstream mix, plus Stack Overflow in two files.
        assert_eq!(se.files.len(), 91);
        assert!(se
            .files
            .iter()
            .any(|f| f.name == "stackoverflow.com-PostLinks.7z"));
        assert!(se.files.iter().all(|f| f.packing == Packing::SevenZip));
        let amazon = find("amazon_qa").unwrap();
        assert_eq!(amazon.files.len(), 21);
        assert!(amazon.files.iter().all(|f| f.sha256.is_some()));
        let squad = find("squad").unwrap();
        assert_eq!(squad.known_size(), Some(30_288_272));
        assert_eq!(find("msmarco").unwrap().known_size(), None);
    }

    #[test]
    fn serializes_for_list_output() {
        let v = serde_json::to_value(find("squad").unwrap()).unwrap();
        assert_eq!(v["files"][0]["packing"], "plain");
        assert_eq!(v["files"][0]["size"], 30_288_272);
    }
}
