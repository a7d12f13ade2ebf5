//! The embedding file contract (`schemas::embeddings`): each format reads back what its writer
//! wrote, bit for bit, and each broken input is refused naming the file and the true reason.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Float32Builder, Float64Builder, ListBuilder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use schemas::embeddings::{
    is_embedding_parquet, read_embeddings, read_jsonl, read_npy, read_parquet, read_texts,
    EmbeddingError, EmbeddingFormat, EmbeddingMeta, EmbeddingWriter, NpyEmbeddingWriter,
    ParquetEmbeddingWriter,
};

const DIM: usize = 4;

/// Vectors with the values a float format gets wrong first: signed zero, subnormals, extremes,
/// values with no short decimal form.
fn vectors() -> Vec<Vec<f32>> {
    vec![
        vec![-0.0, 1e-45, f32::MIN_POSITIVE, f32::MAX],
        vec![f32::MIN, 0.1, -1.0 / 3.0, 0.70710677],
        vec![1.0, -2.5e-8, 12345.678, 0.0],
    ]
}

fn texts() -> Vec<String> {
    ["How do I bake bread?", "Canberra ist die Hauptstadt.", ""]
        .map(String::from)
        .to_vec()
}

fn meta(dim: usize) -> EmbeddingMeta {
    EmbeddingMeta {
        model: "models/all-MiniLM-L6-v2".into(),
        model_sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db".into(),
        input_sha256: Some(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        ),
        dim,
        normalize: true,
        pooling: "mean".into(),
        max_seq_length: 256,
        precision: "bf16".into(),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Writes `vectors()` through the writer of `path`'s format, in two chunks.
fn write_all(path: &Path) -> u64 {
    let format = EmbeddingFormat::from_path(path).unwrap();
    let mut w = EmbeddingWriter::create(path, format, DIM, 3, &meta(DIM)).unwrap();
    let (t, v) = (texts(), vectors());
    w.write(&t[..1], &v[..1]).unwrap();
    w.write(&t[1..], &v[1..]).unwrap();
    w.finish().unwrap()
}

/// Nothing under `dir` but `keep` (no final file from a failed write, no temporary left).
fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, keep, "files left in {}", dir.display());
}

#[test]
fn parquet_round_trip_keeps_texts_bits_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corpus.parquet");
    assert_eq!(write_all(&path), 3);
    let got = read_parquet(&path).unwrap();
    assert_eq!(got.texts, Some(texts()));
    assert_eq!((got.rows(), got.dim), (3, DIM));
    assert_eq!(bits(&got.vectors), bits(&vectors().concat()));
    assert_eq!(got.row(1), &vectors()[1][..]);
    assert_eq!(got.meta, Some(meta(DIM)));
    assert!(is_embedding_parquet(&path));
    assert_eq!(
        read_embeddings(&path).unwrap(),
        got,
        "dispatch by extension"
    );
}

#[test]
fn jsonl_round_trip_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vecs.jsonl");
    assert_eq!(write_all(&path), 3);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 3, "one JSON array per line");
    let got = read_jsonl(&path).unwrap();
    assert_eq!((&got.texts, &got.meta), (&None, &None));
    assert_eq!((got.rows(), got.dim), (3, DIM));
    assert_eq!(bits(&got.vectors), bits(&vectors().concat()));
}

#[test]
fn npy_round_trip_and_the_bytes_numpy_expects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vecs.npy");
    assert_eq!(write_all(&path), 3);
    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header_len = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(header_len % 64, 0, "header padded to 64 bytes");
    let header = std::str::from_utf8(&bytes[10..header_len]).unwrap();
    assert!(
        header.contains("'descr': '<f4'") && header.contains("'shape': (3, 4)"),
        "{header}"
    );
    assert!(header.ends_with('\n'));
    let data: Vec<u32> = bytes[header_len..]
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        data,
        bits(&vectors().concat()),
        "little-endian float32, C order"
    );
    let got = read_npy(&path).unwrap();
    assert_eq!((got.rows(), got.dim), (3, DIM));
    assert_eq!(bits(&got.vectors), bits(&vectors().concat()));
}

/// An npy file as `numpy.save` lays it out (format `version`, header padded to 64 bytes).
fn numpy_file(version: u8, descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    let prefix = if version == 1 { 10 } else { 12 };
    dict.push_str(&" ".repeat((64 - (prefix + dict.len() + 1) % 64) % 64));
    dict.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(dict.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend_from_slice(data);
    out
}

fn le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn npy_files_numpy_writes_are_read_in_versions_1_and_2() {
    let dir = tempfile::tempdir().unwrap();
    let values = [0.5f32, -1.25, 3.0, 1e-3, 7.0, -0.0];
    for version in [1, 2] {
        let path = dir.path().join(format!("v{version}.npy"));
        std::fs::write(
            &path,
            numpy_file(version, "<f4", "(2, 3)", false, &le_bytes(&values)),
        )
        .unwrap();
        let got = read_npy(&path).unwrap();
        assert_eq!((got.rows(), got.dim), (2, 3), "version {version}");
        assert_eq!(bits(&got.vectors), bits(&values));
    }
}

fn err_text(e: EmbeddingError) -> String {
    e.to_string()
}

#[test]
fn broken_npy_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str, bytes: Vec<u8>| -> (String, EmbeddingError) {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        (path.display().to_string(), read_npy(&path).unwrap_err())
    };
    let (p, e) = case("text.npy", b"0.1 0.2 0.3\n".to_vec());
    assert!(matches!(e, EmbeddingError::BadMagic { .. }), "{e:?}");
    assert!(err_text(e).starts_with(&p), "the message names the file");

    let (p, e) = case(
        "short.npy",
        numpy_file(1, "<f4", "(3, 2)", false, &le_bytes(&[1.0; 5])),
    );
    assert!(
        matches!(
            e,
            EmbeddingError::NpyLength {
                rows: 3,
                dim: 2,
                expected: 24,
                found: 20,
                ..
            }
        ),
        "{e:?}"
    );
    let msg = err_text(e);
    assert!(
        msg.starts_with(&p) && msg.contains("declares 3 rows of 2"),
        "{msg}"
    );

    let (_, e) = case("f64.npy", numpy_file(1, "<f8", "(1, 2)", false, &[0; 16]));
    let msg = err_text(e);
    assert!(msg.contains("\"<f8\"") && msg.contains("float32"), "{msg}");

    let (_, e) = case(
        "big-endian.npy",
        numpy_file(1, ">f4", "(1, 2)", false, &[0; 8]),
    );
    assert!(err_text(e).contains("\">f4\""));

    let (_, e) = case(
        "fortran.npy",
        numpy_file(1, "<f4", "(2, 2)", true, &[0; 16]),
    );
    assert!(err_text(e).contains("Fortran order"));

    let (_, e) = case("flat.npy", numpy_file(1, "<f4", "(4,)", false, &[0; 16]));
    assert!(
        err_text(e).contains("1 dimensions"),
        "a 1-D array is not [rows, dim]"
    );

    let mut cut = numpy_file(1, "<f4", "(1, 2)", false, &[0; 8]);
    cut.truncate(40);
    let (_, e) = case("cut-header.npy", cut);
    assert!(matches!(e, EmbeddingError::NpyHeader { .. }), "{e:?}");
}

#[test]
fn writers_refuse_wrong_dims_and_row_counts_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vectors();
    v[1].push(9.0);
    for name in ["a.parquet", "a.jsonl", "a.npy"] {
        let path = dir.path().join(name);
        let format = EmbeddingFormat::from_path(&path).unwrap();
        let mut w = EmbeddingWriter::create(&path, format, DIM, 3, &meta(DIM)).unwrap();
        w.write(&texts()[..1], &v[..1]).unwrap();
        let e = w.write(&texts()[1..], &v[1..]).unwrap_err();
        assert!(
            matches!(&e, EmbeddingError::Dim { place, got: 5, dim: 4, .. } if place == "row 1"),
            "{name}: {e:?}"
        );
        assert!(err_text(e).starts_with(&path.display().to_string()));
    }
    only(dir.path(), &[]);

    let path = dir.path().join("few.npy");
    let mut w = NpyEmbeddingWriter::create(&path, DIM, 3).unwrap();
    w.write(&vectors()[..2]).unwrap();
    let e = w.finish().unwrap_err();
    assert!(
        matches!(
            e,
            EmbeddingError::RowCount {
                declared: 3,
                written: 2,
                ..
            }
        ),
        "{e:?}"
    );
    let mut w = NpyEmbeddingWriter::create(&path, DIM, 2).unwrap();
    let e = w.write(&vectors()).unwrap_err();
    assert!(
        matches!(
            e,
            EmbeddingError::RowCount {
                declared: 2,
                written: 3,
                ..
            }
        ),
        "{e:?}"
    );
    drop(w);

    let path = dir.path().join("texts.parquet");
    let mut w = ParquetEmbeddingWriter::create(&path, DIM, &meta(DIM)).unwrap();
    let e = w.write(&texts()[..2], &vectors()).unwrap_err();
    assert!(
        matches!(
            e,
            EmbeddingError::TextCount {
                texts: 2,
                vectors: 3,
                ..
            }
        ),
        "{e:?}"
    );
    drop(w);
    only(dir.path(), &[]);

    let e = EmbeddingFormat::from_path(Path::new("out.csv")).unwrap_err();
    assert_eq!(
        err_text(e),
        "out.csv: unknown embedding format `.csv` (use .parquet, .jsonl or .npy)"
    );
}

#[test]
fn jsonl_lines_of_another_dim_or_not_arrays_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.jsonl");
    std::fs::write(&path, "[1.0,2.0]\n\n[3.0,4.0,5.0]\n").unwrap();
    let e = read_jsonl(&path).unwrap_err();
    assert_eq!(
        err_text(e),
        format!(
            "{}: line 3 has 3 values, the file's dim is 2",
            path.display()
        )
    );
    std::fs::write(&path, "[1.0,2.0]\n{\"embedding\": [1.0, 2.0]}\n").unwrap();
    let msg = err_text(read_jsonl(&path).unwrap_err());
    assert!(
        msg.starts_with(&format!(
            "{}:2: expected a JSON array of numbers",
            path.display()
        )),
        "{msg}"
    );
}

/// A Parquet file with one `embedding` column of `column`, written by arrow (another tool).
fn foreign_parquet(
    path: &Path,
    column: ArrayRef,
    kv: Option<Vec<parquet::file::metadata::KeyValue>>,
) {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "embedding",
        column.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_key_value_metadata(kv)
        .build();
    let mut w = ArrowWriter::try_new(File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_files_of_other_tools_are_read_or_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // Variable-length lists (pyarrow's default for a list of floats), no text, no metadata.
    let path = dir.path().join("lists.parquet");
    let mut l = ListBuilder::new(Float32Builder::new());
    for row in [[0.5f32, 1.5], [2.5, -3.5]] {
        l.values().append_slice(&row);
        l.append(true);
    }
    foreign_parquet(&path, Arc::new(l.finish()), None);
    let got = read_parquet(&path).unwrap();
    assert_eq!((&got.texts, &got.meta, got.dim), (&None, &None, 2));
    assert_eq!(got.vectors, vec![0.5, 1.5, 2.5, -3.5]);

    // One row of another length.
    let path = dir.path().join("ragged.parquet");
    let mut l = ListBuilder::new(Float32Builder::new());
    for row in [&[0.5f32, 1.5][..], &[2.5, -3.5], &[1.0]] {
        l.values().append_slice(row);
        l.append(true);
    }
    foreign_parquet(&path, Arc::new(l.finish()), None);
    let msg = err_text(read_parquet(&path).unwrap_err());
    assert_eq!(
        msg,
        format!(
            "{}: row 2 has 1 values, the file's dim is 2",
            path.display()
        )
    );

    // float64 items.
    let path = dir.path().join("f64.parquet");
    let mut l = ListBuilder::new(Float64Builder::new());
    l.values().append_slice(&[0.5, 1.5]);
    l.append(true);
    foreign_parquet(&path, Arc::new(l.finish()), None);
    let e = read_parquet(&path).unwrap_err();
    assert!(
        matches!(&e, EmbeddingError::ColumnType { column, found, .. } if column == "embedding" && found == "Float64"),
        "{e:?}"
    );

    // A null vector.
    let path = dir.path().join("null.parquet");
    let mut l = ListBuilder::new(Float32Builder::new());
    l.values().append_slice(&[0.5, 1.5]);
    l.append(true);
    l.append(false);
    foreign_parquet(&path, Arc::new(l.finish()), None);
    let e = read_parquet(&path).unwrap_err();
    assert!(matches!(e, EmbeddingError::Null { row: 1, .. }), "{e:?}");

    // prep.dim says otherwise.
    let path = dir.path().join("meta.parquet");
    let mut l = ListBuilder::new(Float32Builder::new());
    l.values().append_slice(&[0.5, 1.5]);
    l.append(true);
    let kv = vec![
        ("prep.model", "m"),
        ("prep.model_sha256", "ab"),
        ("prep.dim", "384"),
        ("prep.normalize", "true"),
        ("prep.pooling", "mean"),
        ("prep.max_seq_length", "256"),
    ]
    .into_iter()
    .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.into(), v.to_owned()))
    .collect();
    foreign_parquet(&path, Arc::new(l.finish()), Some(kv));
    let msg = err_text(read_parquet(&path).unwrap_err());
    assert_eq!(
        msg,
        format!(
            "{}: metadata `prep.dim` = \"384\": the vectors have 2 values",
            path.display()
        )
    );
}

#[test]
fn files_that_are_not_embedding_parquet_are_named() {
    let dir = tempfile::tempdir().unwrap();
    // A pairs dataset part: Parquet, but no embedding column.
    let pairs = dir.path().join("pairs");
    let mut w = schemas::PairWriter::new(&pairs, schemas::Arity::Pair, Default::default());
    w.push(&schemas::PairRecord::pair("q1", "a1")).unwrap();
    w.finish().unwrap();
    let part = &schemas::part_files(&pairs).unwrap()[0];
    assert!(!is_embedding_parquet(part));
    let msg = err_text(read_parquet(part).unwrap_err());
    assert_eq!(
        msg,
        format!(
            "{}: no column `embedding` (not an embedding file)",
            part.display()
        )
    );
    // Not Parquet at all.
    let path = dir.path().join("fake.parquet");
    std::fs::write(&path, "text,embedding\n").unwrap();
    assert!(!is_embedding_parquet(&path));
    let e = read_parquet(&path).unwrap_err();
    assert!(matches!(e, EmbeddingError::Parquet { .. }), "{e:?}");
    assert!(err_text(e).starts_with(&path.display().to_string()));
    // Missing.
    let msg = err_text(read_embeddings(&dir.path().join("none.npy")).unwrap_err());
    assert!(msg.contains("none.npy"), "{msg}");
}

#[test]
fn texts_from_txt_jsonl_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let txt = dir.path().join("a.txt");
    std::fs::write(&txt, "one\ntwo\n\n").unwrap();
    assert_eq!(
        read_texts(&txt, "text").unwrap(),
        vec!["one", "two", ""],
        "a text per line"
    );
    let jsonl = dir.path().join("a.jsonl");
    std::fs::write(&jsonl, "\"x\"\n{\"text\": \"y\", \"id\": 1}\n\n").unwrap();
    assert_eq!(read_texts(&jsonl, "text").unwrap(), vec!["x", "y"]);
    let msg = err_text(read_texts(&jsonl, "body").unwrap_err());
    assert_eq!(
        msg,
        format!(
            "{}:2: no string field `body` (choose one with --field)",
            jsonl.display()
        )
    );
    std::fs::write(&jsonl, "\"x\"\n[1, 2]\n").unwrap();
    let msg = err_text(read_texts(&jsonl, "text").unwrap_err());
    assert!(
        msg.ends_with(":2: expected a JSON string or object"),
        "{msg}"
    );

    // A pairs file: text columns by name.
    let pq = dir.path().join("p");
    let mut w = schemas::PairWriter::new(&pq, schemas::Arity::Pair, Default::default());
    w.push(&schemas::PairRecord::pair("q1", "a1")).unwrap();
    w.finish().unwrap();
    let part = &schemas::part_files(&pq).unwrap()[0];
    assert_eq!(read_texts(part, "anchor").unwrap(), vec!["q1"]);
    let msg = err_text(read_texts(part, "text").unwrap_err());
    assert!(
        msg.contains("no column `text`; text columns: anchor, positive"),
        "{msg}"
    );

    // A column that is not text.
    let path = dir.path().join("nums.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("text", DataType::Float32, false),
        Field::new("name", DataType::Utf8, false),
    ]));
    let mut s = StringBuilder::new();
    s.append_value("n");
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow_array::Float32Array::from(vec![1.0])) as ArrayRef,
            Arc::new(s.finish()),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let e = read_texts(&path, "text").unwrap_err();
    assert!(matches!(e, EmbeddingError::ColumnType { .. }), "{e:?}");
}
