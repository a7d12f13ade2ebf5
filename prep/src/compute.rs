//! `--device` and `--precision`: one clap argument group for every command that encodes or
//! trains (train, embed, search, eval, demo, bench encode, bench train), parsed by the
//! encoder's `DeviceSpec` and `Precision` and checked once, before any work.

use anyhow::Result;
use encoder::candle_core::Device;
use encoder::{DeviceSpec, Precision};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct ComputeArgs {
    /// Where to compute: cpu, cuda (GPU 0) or cuda:N. A GPU needs a binary built with
    /// `--features cuda` (scripts/build-cuda.sh). Falls back to $PREP_DEVICE, then cpu.
    #[arg(
        long,
        env = "PREP_DEVICE",
        default_value = "cpu",
        help_heading = "Compute"
    )]
    pub device: DeviceSpec,
    /// Number format of the matrix products: f32; tf32 (GPU: TF32 tensor cores for f32
    /// products); bf16 (bf16 products with f32 accumulation; LayerNorm, softmax and the loss
    /// stay f32); int8 (CPU encoding: int8 weights and activations). On the CPU, bf16 and int8
    /// are for encoding only (embed, search, eval, mine); training there takes f32. Without
    /// AVX512_BF16 a CPU runs bf16 as f32 products of bf16-rounded values (f32's speed); the
    /// commands print which kernels run.
    #[arg(long, default_value = "f32", help_heading = "Compute")]
    pub precision: Precision,
}

impl ComputeArgs {
    /// Opens the device and checks the precision against it: one readable line when the binary
    /// has no CUDA, the GPU is absent, or the precision does not run there.
    pub fn open(&self) -> Result<Device> {
        let device = self.device.open()?;
        self.precision.check(&device)?;
        Ok(device)
    }

    /// As [`ComputeArgs::open`] for commands that only encode: the CPU also takes bf16 and int8
    /// (`Precision::check_inference`).
    pub fn open_for_encoding(&self) -> Result<Device> {
        let device = self.device.open()?;
        self.precision.check_inference(&device)?;
        Ok(device)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        compute: ComputeArgs,
    }

    fn parse(args: &[&str]) -> std::result::Result<ComputeArgs, clap::Error> {
        let argv = std::iter::once("prep").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.compute)
    }

    #[test]
    fn flags_parse_with_cpu_f32_defaults() {
        // Not touching PREP_DEVICE here: tests share the process environment.
        let c = parse(&["--device", "cuda:3", "--precision", "bf16"]).unwrap();
        assert_eq!(c.device, DeviceSpec::Cuda(Some(3)));
        assert_eq!(c.precision, Precision::Bf16);
        let c = parse(&["--device", "cpu"]).unwrap();
        assert_eq!(c.precision, Precision::F32);
        assert!(parse(&["--device", "gpu"]).is_err());
        assert!(parse(&["--device", "cpu", "--precision", "fp8"]).is_err());
    }

    #[test]
    fn the_cpu_trains_at_f32_and_encodes_at_f32_bf16_int8() {
        let at = |p| ComputeArgs {
            device: DeviceSpec::Cpu,
            precision: p,
        };
        assert!(at(Precision::F32).open().unwrap().is_cpu());
        for p in [Precision::Tf32, Precision::Bf16, Precision::Int8] {
            let e = at(p).open().unwrap_err().to_string();
            assert!(e.contains("not available on the CPU"), "{e}");
        }
        for p in [Precision::F32, Precision::Bf16, Precision::Int8] {
            assert!(at(p).open_for_encoding().unwrap().is_cpu());
        }
        let e = at(Precision::Tf32).open_for_encoding().unwrap_err();
        assert!(e.to_string().contains("tf32 needs --device cuda"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build() {
        let c = ComputeArgs {
            device: DeviceSpec::Cuda(None),
            precision: Precision::F32,
        };
        let e = c.open().unwrap_err().to_string();
        assert!(e.contains("built without CUDA"), "{e}");
        assert!(e.contains("scripts/build-cuda.sh"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}
