//! [`Collective`] between GPUs over NCCL (cudarc's bindings, which candle's `nccl` feature
//! builds), bootstrapped over a host collective (MPI between processes, [`crate::Single`] for a
//! world of one): rank 0 creates the NCCL unique id and broadcasts its 128 bytes to the other
//! ranks, and every rank joins the communicator on its own GPU.
//!
//! The step's two large exchanges stay on the device: the embeddings' all-gather and the
//! gradients' all-reduce run as candle custom ops on the GPU buffers (on candle's stream, so they
//! are ordered after the kernels that produced them). NCCL's ring and tree all-reduce finish with
//! every rank holding the same reduced bits, so the replicas' weights stay bit-identical. The
//! small host-side calls (start-up agreement, broadcast of the initial weights, per-rank norms)
//! go through the host collective. NCCL has no timeout of its own: after each device collective
//! this rank polls a CUDA event against `--collective-timeout` and, past it, aborts the whole job
//! (`Collective::abort`), as the MPI collectives' watchdog does.

use std::cell::Cell;
use std::time::{Duration, Instant};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};

use crate::collective::Collective;
use crate::error::{Ctx, Result, TrainError};

/// Exit status of a job aborted because a device collective timed out (EX_SOFTWARE, as MPI's).
pub const WATCHDOG_EXIT: i32 = 70;

/// NCCL between the ranks' GPUs; `host` for start-up and host-side calls.
pub struct Nccl {
    comm: Comm,
    device: Device,
    host: Box<dyn Collective>,
    timeout: Duration,
    /// Bytes this rank handed to device collectives, for `bytes_sent`.
    device_bytes: Cell<u64>,
}

impl Nccl {
    /// Joins every rank of `host`'s world into one NCCL communicator on `device` (this rank's
    /// GPU). Collective: every rank calls it once, at start; a rank that fails to join aborts
    /// the job (the others would wait in the join).
    pub fn init(host: Box<dyn Collective>, device: &Device, timeout: Duration) -> Result<Nccl> {
        match Self::join(host.as_ref(), device) {
            Ok(comm) => Ok(Nccl {
                comm,
                device: device.clone(),
                host,
                timeout,
                device_bytes: Cell::new(0),
            }),
            Err(e) if host.world_size() > 1 => {
                eprintln!("error: rank {}: {e}", host.rank());
                host.abort(1)
            }
            Err(e) => Err(e),
        }
    }

    fn join(host: &dyn Collective, device: &Device) -> Result<Comm> {
        let Device::Cuda(cuda) = device else {
            return Err(TrainError::Config(format!(
                "NCCL needs a GPU, and this rank runs on {device:?}: give --device cuda"
            )));
        };
        // The id is 128 C chars; MPI moves bytes.
        let mut raw = [0u8; 128];
        if host.rank() == 0 {
            let id = Id::new().map_err(|e| nccl_error("creating the NCCL unique id", e))?;
            for (b, c) in raw.iter_mut().zip(id.internal()) {
                *b = *c as u8;
            }
        }
        host.broadcast(&mut raw, 0)?;
        let id = Id::uninit(raw.map(|b| b as std::ffi::c_char));
        Comm::from_rank(cuda.cuda_stream(), host.rank(), host.world_size(), id)
            .map_err(|e| nccl_error("joining the NCCL communicator", e))
    }

    /// Applies a device collective to `t` (on this rank's GPU), then waits for it within the
    /// timeout, so a dead peer ends the job instead of hanging it.
    fn run_op(&self, t: &Tensor, op: &DeviceCollective<'_>, what: &str) -> Result<Tensor> {
        let t = t
            .to_device(&self.device)
            .ctx(what)?
            .contiguous()
            .ctx(what)?;
        let out = t.apply_op1_no_bwd(op).ctx(what)?;
        self.wait(what)?;
        Ok(out)
    }

    fn wait(&self, what: &str) -> Result<()> {
        let event =
            self.comm.stream().record_event(None).map_err(|e| {
                TrainError::Config(format!("{what}: recording a CUDA event: {e:?}"))
            })?;
        let start = Instant::now();
        loop {
            match event.try_is_complete() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(TrainError::Config(format!("{what} over NCCL: {e:?}"))),
            }
            if start.elapsed() > self.timeout {
                eprintln!(
                    "error: rank {} of {}: {what} over NCCL did not complete within {:.0} s \
                     (--collective-timeout): another rank died, hangs or is stuck; aborting the job",
                    self.rank(),
                    self.world_size(),
                    self.timeout.as_secs_f64()
                );
                self.host.abort(WATCHDOG_EXIT);
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

fn nccl_error(what: &str, e: impl std::fmt::Debug) -> TrainError {
    TrainError::Config(format!(
        "{what}: {e:?} (NCCL: is libnccl.so.2 on LD_LIBRARY_PATH, and does each rank have its own GPU?)"
    ))
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn world_size(&self) -> usize {
        self.host.world_size()
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.host.all_gather(local)
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.host.all_reduce_sum(buf)
    }
    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        self.host.broadcast(buf, root)
    }
    fn barrier(&self) -> Result<()> {
        self.host.barrier()
    }
    fn bytes_sent(&self) -> u64 {
        self.host.bytes_sent() + self.device_bytes.get()
    }
    fn abort(&self, code: i32) -> ! {
        self.host.abort(code)
    }

    fn all_gather_rows(&self, local: &Tensor) -> Result<Tensor> {
        let (n, dim) = local.dims2().ctx("embeddings")?;
        let op = DeviceCollective::AllGather {
            comm: &self.comm,
            shape: Shape::from((n * self.world_size(), dim)),
        };
        self.count(local.elem_count());
        self.run_op(local, &op, "all-gather of embeddings")?
            .to_device(local.device())
            .ctx("gathered embeddings")
    }

    fn all_reduce_sum_tensors(&self, tensors: Vec<Tensor>) -> Result<Vec<Tensor>> {
        // A world of one still goes through NCCL: `prep bench collective` times that path.
        if tensors.is_empty() {
            return Ok(tensors);
        }
        let flat: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.flatten_all())
            .collect::<candle_core::Result<_>>()
            .ctx("gradients")?;
        let flat = Tensor::cat(&flat, 0).ctx("gradients")?;
        self.count(flat.elem_count());
        let summed = self.run_op(
            &flat,
            &DeviceCollective::AllReduceSum { comm: &self.comm },
            "all-reduce of gradients",
        )?;
        let mut at = 0;
        tensors
            .iter()
            .map(|t| {
                let n = t.elem_count();
                let piece = summed.narrow(0, at, n).and_then(|p| p.reshape(t.shape()));
                at += n;
                piece
                    .and_then(|p| p.to_device(t.device()))
                    .ctx("summed gradients")
            })
            .collect()
    }
}

impl Nccl {
    fn count(&self, elems: usize) {
        self.device_bytes
            .set(self.device_bytes.get() + (elems * std::mem::size_of::<f32>()) as u64);
    }
}

/// A collective on one contiguous f32 GPU buffer, as a candle op without backward (the step
/// differentiates through the gathered embeddings as leaves, never through the exchange).
enum DeviceCollective<'a> {
    AllGather { comm: &'a Comm, shape: Shape },
    AllReduceSum { comm: &'a Comm },
}

impl CustomOp1 for DeviceCollective<'_> {
    fn name(&self) -> &'static str {
        match self {
            Self::AllGather { .. } => "nccl-all-gather",
            Self::AllReduceSum { .. } => "nccl-all-reduce-sum",
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("{}: NCCL exchanges GPU buffers only", self.name())
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let dev = storage.device().clone();
        let all = storage.as_cuda_slice::<f32>()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: the input must be contiguous", self.name())
        };
        let src = all.slice(start..end);
        let (out_shape, out_len) = match self {
            Self::AllGather { shape, .. } => (shape.clone(), shape.elem_count()),
            Self::AllReduceSum { .. } => (layout.shape().clone(), end - start),
        };
        // Every element is written by the collective.
        let mut dst = unsafe { dev.alloc::<f32>(out_len) }?;
        let done = match self {
            Self::AllGather { comm, .. } => comm.all_gather(&src, &mut dst),
            Self::AllReduceSum { comm } => comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
        };
        done.map_err(|e| candle_core::Error::Msg(format!("{}: {e:?}", self.name())))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), out_shape))
    }
}
