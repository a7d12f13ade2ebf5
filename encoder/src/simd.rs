//! The crate's one SIMD dispatch: CPU features are detected once, and [`dispatch`] runs a
//! closure compiled for the widest level found (AVX-512, AVX2+FMA or baseline), so LLVM
//! vectorises the loops inlined into it at that width.

use std::sync::OnceLock;

/// The instruction-set level the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2Fma,
    Baseline,
}

/// The level this machine supports, detected on first use.
pub fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

fn detect() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2Fma;
        }
    }
    Level::Baseline
}

/// Runs `f` compiled for [`level`]. Mark the closure `#[inline(always)]` (and what it calls
/// `#[inline]`) so it is compiled inside the feature-enabled frame: it is called from three
/// frames, and left to itself LLVM compiled a large one once, for the baseline (softmax ran
/// scalar, with a libm call per `floor`: a sixth of the encoder's time on AVX-512).
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
        unsafe fn v4<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn v3<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match level() {
            // SAFETY: `level` detected these features on this CPU.
            Level::Avx512 => return unsafe { v4(f) },
            // SAFETY: as above.
            Level::Avx2Fma => return unsafe { v3(f) },
            Level::Baseline => {}
        }
    }
    f()
}
