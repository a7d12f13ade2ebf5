//! Benchmarks behind `prep bench`, one module per stage, plus what they share.

pub mod collective;
pub mod encode;
pub mod ingest;
pub mod mine;
pub mod mix;
pub mod parity;
pub mod store;
pub mod train;
pub mod train_dp;

/// The bench corpus when `--corpus` is not given: `$PREP_SHARED/bench/corpus.txt`, else
/// `../shared/bench/corpus.txt` (the layout of this project's checkouts).
pub fn default_corpus() -> std::path::PathBuf {
    let shared = std::env::var_os("PREP_SHARED").unwrap_or_else(|| "../shared".into());
    std::path::PathBuf::from(shared).join("bench/corpus.txt")
}

/// The model when `--model` is not given: the all-MiniLM-L6-v2 folder that
/// `scripts/fetch-test-model.sh` fills (`$PREP_TEST_MODEL`, else under `~/.cache/prep`).
pub fn default_test_model() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("PREP_TEST_MODEL") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    std::path::PathBuf::from(home).join(".cache/prep/test-models/all-MiniLM-L6-v2")
}

/// Peak resident set size of this process so far, in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU seconds this process has used so far (Linux `/proc/self/stat`).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th there.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(ticks / 100.0)
}

/// Peak RSS for printing, in MiB.
pub fn peak_rss_mib() -> String {
    match peak_rss_bytes() {
        Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
        None => "unknown".to_owned(),
    }
}

/// The f32 FMA peak of `threads` cores in GFLOP/s, and how it was estimated: 2 FMA pipes (Zen
/// 3 to 5 and recent Intel server cores have two) × the f32 lanes of the widest vectors
/// `encoder::simd` runs × 2 FLOP × the clock `/proc/cpuinfo` reports (in a VM the base clock:
/// turbo is not visible). `None` without FMA or a reported clock.
pub fn fma_peak(threads: usize) -> Option<(f64, String)> {
    let lanes = match encoder::simd::level() {
        encoder::simd::Level::Avx512 => 16,
        encoder::simd::Level::Avx2Fma => 8,
        encoder::simd::Level::Baseline => return None,
    };
    let mhz = cpu_mhz(&std::fs::read_to_string("/proc/cpuinfo").ok()?)?;
    let peak = threads as f64 * 2.0 * lanes as f64 * 2.0 * mhz / 1e3;
    let how = format!(
        "{threads} cores × 2 FMA pipes × {lanes} f32 lanes × 2 FLOP × {mhz:.0} MHz \
         (/proc/cpuinfo; turbo not visible in a VM)"
    );
    Some((peak, how))
}

/// The first `cpu MHz` figure of a `/proc/cpuinfo` text.
fn cpu_mhz(cpuinfo: &str) -> Option<f64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then_some(mhz)
}

/// Runs `f` on a rayon pool of `threads` threads (the measurement's "cores").
#[allow(dead_code)]
pub fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

/// Lowers the peak RSS mark (`VmHWM`) to the current RSS (Linux: `5` into
/// `/proc/self/clear_refs`), so the next phase of a benchmark reports a peak of its own. False
/// where the kernel refuses (the figure then covers every phase so far).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    /// The clock comes from the first processor's `cpu MHz` line; a text without one (or with
    /// a zero clock, as some VMs report) gives no peak.
    #[test]
    fn cpu_mhz_reads_the_first_processors_clock() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
                    cpu MHz\t\t: 2450.004\ncache size\t: 512 KB\n\nprocessor\t: 1\n\
                    cpu MHz\t\t: 3100.000\n";
        assert_eq!(super::cpu_mhz(text), Some(2450.004));
        assert_eq!(super::cpu_mhz("processor\t: 0\nflags\t: fpu avx2\n"), None);
        assert_eq!(super::cpu_mhz("cpu MHz\t\t: 0.000\n"), None);
    }
}
