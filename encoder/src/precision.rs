//! Where the model runs and in what number format: `--device` and `--precision`, one parser and
//! one compatibility check for every command that encodes or trains.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};

use crate::error::{EncoderError, Result};

/// Number format of the matrix products (statistics, softmax and losses stay f32 everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// Full f32.
    #[default]
    F32,
    /// f32 storage, TF32 tensor-core products (GPU only).
    Tf32,
    /// bf16 products, f32 accumulation.
    Bf16,
    /// int8 weights and activations, f32 accumulation (CPU inference only: [`crate::lowp`]).
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 4] = [Self::F32, Self::Tf32, Self::Bf16, Self::Int8];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }

    /// The packed CPU format of this precision's Linear weights ([`crate::lowp`]): bf16 or
    /// int8; `None` for f32 (and tf32, which the CPU runs as f32).
    pub fn cpu_format(self) -> Option<crate::lowp::Format> {
        match self {
            Self::Bf16 => Some(crate::lowp::Format::Bf16),
            Self::Int8 => Some(crate::lowp::Format::Int8),
            Self::F32 | Self::Tf32 => None,
        }
    }

    /// What runs this precision's products in CPU encoding on this machine, for the user (the
    /// bf16 and int8 kernels are picked at run time); `None` for f32.
    pub fn cpu_kernels(self) -> Option<String> {
        use crate::lowp::{kernel_name, Format};
        Some(match self.cpu_format()? {
            Format::Bf16 => format!("bf16 products by {}", kernel_name(Format::Bf16)),
            Format::Int8 => format!(
                "int8 products by {}; the feed-forward output projection at bf16, by {}",
                kernel_name(Format::Int8),
                kernel_name(Format::Bf16)
            ),
        })
    }
}

impl Precision {
    /// Refuses what `device` cannot train or run through the candle graph: the CPU takes f32
    /// only (TF32 and bf16 tensor-core products are a GPU's; candle's CPU bf16 gemm is slower
    /// than its f32 one), a GPU takes f32, tf32 and bf16 (int8 is a CPU-inference format).
    pub fn check(self, device: &Device) -> Result<()> {
        self.check_for(device, false)
    }

    /// As [`Precision::check`] for inference (embed, search, eval, mine): the CPU's packed path
    /// also runs bf16 and int8 ([`crate::lowp`]).
    pub fn check_inference(self, device: &Device) -> Result<()> {
        self.check_for(device, true)
    }

    fn check_for(self, device: &Device, inference: bool) -> Result<()> {
        let cpu_low = inference && !device.is_cuda();
        let ok = match self {
            Self::F32 => true,
            Self::Tf32 => device.is_cuda(),
            Self::Bf16 => device.is_cuda() || cpu_low,
            Self::Int8 => cpu_low,
        };
        if ok {
            return Ok(());
        }
        let on = if device.is_cuda() { "a GPU" } else { "the CPU" };
        let allowed = match (device.is_cuda(), inference) {
            (true, _) => "f32, tf32 or bf16",
            (false, true) => "f32, bf16 or int8 (tf32 needs --device cuda)",
            (false, false) => {
                "f32 (training and the candle graph take tf32 and bf16 with --device cuda; \
                 bf16 and int8 on the CPU are for encoding)"
            }
        };
        Err(EncoderError::Invalid(format!(
            "precision {self} is not available on {on}: use {allowed}"
        )))
    }

    /// The dtype matrix products run in: bf16 for [`Precision::Bf16`], else f32 (TF32 is f32
    /// storage; the tensor cores round the products' inputs).
    pub fn matmul_dtype(self) -> DType {
        match self {
            Self::Bf16 => DType::BF16,
            _ => DType::F32,
        }
    }

    /// Sets candle's process-wide cuBLAS switch for f32 products: on for [`Precision::Tf32`]
    /// (TF32 tensor cores, as PyTorch's `allow_tf32`), off otherwise. bf16 products keep f32
    /// accumulation (candle's bf16 reduced-precision switch stays off). A no-op without CUDA.
    pub fn apply(self) {
        candle_core::cuda::set_gemm_reduced_precision_f32(self == Self::Tf32);
        candle_core::cuda::set_gemm_reduced_precision_bf16(false);
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = EncoderError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                EncoderError::Invalid(format!("precision {s:?}: expected f32, tf32, bf16 or int8"))
            })
    }
}

/// `cpu`, `cuda` or `cuda:N`, as given on the command line (or `PREP_DEVICE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    /// `cuda:N`; plain `cuda` (None) is GPU 0 in one process, and `cuda:<local rank>` in each
    /// rank of a data-parallel launch ([`DeviceSpec::for_local_rank`]).
    Cuda(Option<usize>),
}

impl FromStr for DeviceSpec {
    type Err = EncoderError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || EncoderError::Invalid(format!("device {s:?}: expected cpu, cuda or cuda:N"));
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(None)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map(|n| Self::Cuda(Some(n))).map_err(|_| bad()),
                None => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceSpec {
    /// The device of the rank that is `local_rank` on its node: plain `cuda` becomes
    /// `cuda:<local_rank>` (one GPU per rank); `cpu` and an explicit `cuda:N` stay as given.
    pub fn for_local_rank(self, local_rank: usize) -> DeviceSpec {
        match self {
            Self::Cuda(None) => Self::Cuda(Some(local_rank)),
            other => other,
        }
    }

    /// Opens the device: a one-line error when the binary has no CUDA or the GPU is absent.
    pub fn open(self) -> Result<Device> {
        let Self::Cuda(n) = self else {
            return Ok(Device::Cpu);
        };
        let n = n.unwrap_or(0);
        if !candle_core::utils::cuda_is_available() {
            return Err(EncoderError::Invalid(format!(
                "device cuda:{n}: this binary was built without CUDA (rebuild with --features cuda: scripts/build-cuda.sh)"
            )));
        }
        Device::new_cuda(n).map_err(|e| {
            // candle appends a backtrace when RUST_BACKTRACE is set: one line is the message.
            let e = e.to_string();
            let e = e.lines().next().unwrap_or_default();
            EncoderError::Invalid(format!(
                "device cuda:{n}: no such GPU or CUDA failed to start: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_cuda_is_each_ranks_own_gpu() {
        let plain: DeviceSpec = "cuda".parse().unwrap();
        assert_eq!(plain, DeviceSpec::Cuda(None));
        assert_eq!(plain.to_string(), "cuda");
        assert_eq!(plain.for_local_rank(3), DeviceSpec::Cuda(Some(3)));
        let pinned: DeviceSpec = "cuda:1".parse().unwrap();
        assert_eq!(
            pinned.for_local_rank(3),
            pinned,
            "an explicit GPU stays as given"
        );
        assert_eq!(pinned.to_string(), "cuda:1");
        assert_eq!(DeviceSpec::Cpu.for_local_rank(2), DeviceSpec::Cpu);
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }
}
