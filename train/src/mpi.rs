//! [`Collective`] over MPI (rsmpi on the system's Open MPI), with a watchdog: every collective is
//! started non-blocking and polled against a deadline, so a rank that died or hangs makes the
//! others abort the whole MPI job (`MPI_Abort`) with a clear message instead of waiting forever.
//!
//! Only the calling thread talks to MPI (candle's worker threads never do), so the library is
//! initialised with `MPI_THREAD_FUNNELED`.

use std::cell::Cell;
use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::request::{Request, Scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use crate::collective::Collective;
use crate::error::{Result, TrainError};

/// Exit status of a job aborted by the watchdog (EX_SOFTWARE).
pub const WATCHDOG_EXIT: i32 = 70;

/// Largest element count of one MPI call (counts are C ints); longer buffers go in pieces.
const MAX_COUNT: usize = 1 << 28;

/// `MPI_COMM_WORLD` of this process, initialised once; finalised when dropped.
pub struct Mpi {
    // Dropped last: finalises MPI.
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// Bytes handed to collectives (this rank's buffers), for `bytes_sent`.
    sent: Cell<u64>,
    _universe: mpi::environment::Universe,
}

impl Mpi {
    /// Initialises MPI. `timeout` bounds every collective: past it the job is aborted.
    pub fn init(timeout: Duration) -> Result<Mpi> {
        let (universe, _level) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| TrainError::Config("MPI is already initialised".into()))?;
        let world = universe.world();
        Ok(Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
            world,
            timeout,
            sent: Cell::new(0),
            _universe: universe,
        })
    }

    /// Ends every rank of the job with `code` (after this rank printed why). Never returns.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    fn count(&self, bytes: usize) {
        self.sent.set(self.sent.get() + bytes as u64);
    }

    /// Polls `req` until it completes; past the deadline, aborts the job naming `what`.
    fn wait<'a, D: ?Sized, S: Scope<'a>>(&self, what: &str, mut req: Request<'a, D, S>) {
        let start = Instant::now();
        loop {
            match req.test() {
                Ok(_) => return,
                Err(pending) => req = pending,
            }
            if start.elapsed() > self.timeout {
                eprintln!(
                    "error: rank {} of {}: {what} did not complete within {:.0} s \
                     (--collective-timeout): another rank died, hangs or is stuck; aborting the MPI job",
                    self.rank,
                    self.size,
                    self.timeout.as_secs_f64()
                );
                self.abort(WATCHDOG_EXIT);
            }
            // Open MPI advances a non-blocking collective only inside calls like `test`, so a
            // large one (the gradients: ~90 MB in many fragments) needs frequent polls: yield
            // (handing the core to any other runnable thread) for the first 200 ms, then short
            // sleeps, so a rank waiting for a slow one leaves the cores free (~1% of one).
            if start.elapsed() < Duration::from_millis(200) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let n = local.len();
        self.count(n * 4);
        let mut out = vec![0f32; n * self.size];
        if n <= MAX_COUNT {
            mpi::request::scope(|scope| {
                let req = self
                    .world
                    .immediate_all_gather_into(scope, local, &mut out[..]);
                self.wait("all-gather of embeddings", req);
            });
            return Ok(out);
        }
        // Piece by piece, then put each rank's pieces back together.
        let mut piece = Vec::new();
        for start in (0..n).step_by(MAX_COUNT) {
            let len = MAX_COUNT.min(n - start);
            piece.resize(len * self.size, 0f32);
            mpi::request::scope(|scope| {
                let req = self.world.immediate_all_gather_into(
                    scope,
                    &local[start..start + len],
                    &mut piece[..],
                );
                self.wait("all-gather of embeddings", req);
            });
            for r in 0..self.size {
                out[r * n + start..r * n + start + len]
                    .copy_from_slice(&piece[r * len..(r + 1) * len]);
            }
        }
        Ok(out)
    }

    /// A reduction to rank 0 followed by a broadcast of its result: every rank ends with the very
    /// same bits whatever algorithm the MPI library picks for the reduction (an `MPI_Allreduce`
    /// is only advised, not required, to give identical results everywhere), so the replicas'
    /// weights never drift apart.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let root = self.world.process_at_rank(0);
        // The reduction sends the buffer once, the broadcast once more (from rank 0).
        self.count(buf.len() * 4 * 2);
        for piece in buf.chunks_mut(MAX_COUNT) {
            let send = piece.to_vec();
            mpi::request::scope(|scope| {
                if self.rank == 0 {
                    let req = root.immediate_reduce_into_root(
                        scope,
                        &send[..],
                        piece,
                        SystemOperation::sum(),
                    );
                    self.wait("reduction of gradients", req);
                } else {
                    let req = root.immediate_reduce_into(scope, &send[..], SystemOperation::sum());
                    self.wait("reduction of gradients", req);
                }
            });
            mpi::request::scope(|scope| {
                let req = root.immediate_broadcast_into(scope, piece);
                self.wait("broadcast of summed gradients", req);
            });
        }
        Ok(())
    }

    fn broadcast(&self, buf: &mut [u8], root: usize) -> Result<()> {
        if root >= self.size {
            return Err(TrainError::Config(format!(
                "broadcast from rank {root} in a world of {}",
                self.size
            )));
        }
        let from = self.world.process_at_rank(root as i32);
        self.count(buf.len());
        for piece in buf.chunks_mut(MAX_COUNT) {
            mpi::request::scope(|scope| {
                let req = from.immediate_broadcast_into(scope, piece);
                self.wait("broadcast", req);
            });
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let req = self.world.immediate_barrier();
        self.wait("barrier", req);
        Ok(())
    }

    fn bytes_sent(&self) -> u64 {
        self.sent.get()
    }

    fn abort(&self, code: i32) -> ! {
        Mpi::abort(self, code)
    }
}
