//! Collectives for data-parallel training (issue 15): the small interface the step needs, a
//! no-op implementation for one process, and the launcher's rank/world size from the environment.
//!
//! The MPI (rsmpi over Open MPI) and NCCL implementations plug in behind this trait; the step
//! ([`crate::step::loss_and_grads_distributed`]) only ever talks to it. The tensor-level calls
//! (`all_gather_rows`, `all_reduce_sum_tensors`) stage through host memory by default (MPI, on
//! any device); NCCL overrides them to exchange GPU buffers without leaving the device.

use candle_core::Tensor;

use crate::error::{Ctx, Result, TrainError};

/// What data-parallel training exchanges between ranks. Every call is collective: all ranks
/// make the same calls in the same order with buffers of the same length.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Every rank's `local` (equal lengths), concatenated in rank order.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Element-wise sum over ranks, in place.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Overwrites `buf` with `root`'s bytes.
    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<()>;
    fn barrier(&self) -> Result<()>;
    /// Bytes this rank has handed to collectives so far (0 where nothing leaves the process).
    fn bytes_sent(&self) -> u64 {
        0
    }

    /// Ends every rank of the job with `code` (after this rank printed why). Never returns.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }

    /// Every rank's rows of `local` (n × dim, the same n on every rank), in rank order, on
    /// `local`'s device: rank r's rows are global rows `r*n..(r+1)*n`, as the loader slices.
    fn all_gather_rows(&self, local: &Tensor) -> Result<Tensor> {
        let (n, dim) = local.dims2().ctx("embeddings")?;
        let flat: Vec<f32> = local
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .ctx("embeddings")?;
        let all = self.all_gather(&flat)?;
        Tensor::from_vec(all, (n * self.world_size(), dim), local.device())
            .ctx("gathered embeddings")
    }

    /// Each tensor summed over ranks (one flat buffer, one collective), shapes kept.
    fn all_reduce_sum_tensors(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if self.world_size() == 1 {
            return Ok(tensors);
        }
        let mut flat = Vec::new();
        for t in &tensors {
            flat.extend(
                t.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .ctx("gradients")?,
            );
        }
        self.all_reduce_sum(&mut flat)?;
        let mut at = 0;
        tensors
            .iter()
            .map(|t| {
                let n = t.elem_count();
                let summed = Tensor::from_slice(&flat[at..at + n], t.shape(), t.device());
                at += n;
                summed.ctx("summed gradients")
            })
            .collect()
    }
}

/// One process: every collective is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [u8], root: usize) -> Result<()> {
        if root != 0 {
            return Err(TrainError::Config(format!(
                "broadcast from rank {root} in a world of 1"
            )));
        }
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Where this process sits in a launch (`mpirun`, `srun`, or neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this node (picks `cuda:<local_rank>` on GPUs).
    pub local_rank: usize,
}

/// (rank, size, local rank) variables of each launcher, most specific first.
const LAUNCHERS: [(&str, &str, &str); 3] = [
    (
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
];

impl Placement {
    /// The placement the launcher's environment gives, or rank 0 of 1 without a launcher.
    pub fn from_env() -> Result<Placement> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Placement::from_env`] over any variable lookup (testable without touching the process).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Placement> {
        let num = |k: &str| -> Result<Option<usize>> {
            get(k)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        TrainError::Config(format!("{k}={v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        for (rank_var, size_var, local_var) in LAUNCHERS {
            let (Some(rank), Some(world_size)) = (num(rank_var)?, num(size_var)?) else {
                continue;
            };
            let local_rank = num(local_var)?.unwrap_or(0);
            return Placement::new(rank, world_size, local_rank)
                .map_err(|e| TrainError::Config(format!("{rank_var}/{size_var}: {e}")));
        }
        Ok(Placement {
            rank: 0,
            world_size: 1,
            local_rank: 0,
        })
    }

    fn new(rank: usize, world_size: usize, local_rank: usize) -> Result<Placement, String> {
        if world_size == 0 || rank >= world_size {
            return Err(format!("rank {rank} is not in a world of {world_size}"));
        }
        Ok(Placement {
            rank,
            world_size,
            local_rank,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn placement_from_each_launcher() {
        let none = Placement::from_vars(vars(&[])).unwrap();
        assert_eq!((none.rank, none.world_size), (0, 1));
        let ompi = Placement::from_vars(vars(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("SLURM_PROCID", "7"),
            ("SLURM_NTASKS", "8"),
        ]))
        .unwrap();
        assert_eq!((ompi.rank, ompi.world_size, ompi.local_rank), (1, 4, 1));
        let slurm = Placement::from_vars(vars(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ]))
        .unwrap();
        assert_eq!((slurm.rank, slurm.world_size, slurm.local_rank), (5, 8, 1));
    }

    #[test]
    fn placement_rejects_a_rank_outside_the_world() {
        let err = Placement::from_vars(vars(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")])).unwrap_err();
        assert!(err.to_string().contains("PMI_RANK"), "{err}");
        let err = Placement::from_vars(vars(&[("PMI_RANK", "x"), ("PMI_SIZE", "2")])).unwrap_err();
        assert!(
            err.to_string().contains("not a non-negative integer"),
            "{err}"
        );
    }
}
