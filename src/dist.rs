//! Data-parallel training: the few collective operations a run of several processes needs, behind
//! one small interface, [`Collective`].
//!
//! A run of N processes ("ranks", one per GPU) trains one model: each step every rank computes the
//! gradients of its share of the global batch, the ranks sum them ([`Collective::sum`], MPI's
//! `MPI_Allreduce`), and then every rank runs the same clipping, Adam and EMA on the same summed
//! gradients, so all ranks hold identical weights without ever sending them. A rank's share is a
//! [`Shard`]: rank r of N takes images r·B/N .. (r+1)·B/N of each global batch of B.
//!
//! Without the cargo feature `mpi`, and with it when the process was not started by an MPI
//! launcher (`mpirun`, `srun`), the process is alone: [`Single`], whose operations return their
//! input, and the trainer records its usual one-plan step. With the feature, a process started
//! by a launcher talks to the others through [`mpi`](https://docs.rs/mpi) (rsmpi) over the
//! system's MPI library (Open MPI or MPICH).

/// The collective operations of a run's processes. Every rank must call each operation, in the
/// same order: they are where the ranks meet.
pub trait Collective {
    /// This process's rank, 0..size (rank 0 writes the run folder).
    fn rank(&self) -> usize;
    /// Processes in the run.
    fn size(&self) -> usize;
    /// This process's rank among those on the same machine: which of its GPUs it opens.
    fn local_rank(&self) -> usize;
    /// Element-wise sum over all ranks, in place: every rank gets the same sums.
    fn sum(&self, data: &mut [f32]);
    /// The sum of `x` over all ranks.
    fn sum_f64(&self, x: f64) -> f64;
    /// The largest `x` of all ranks (a stop request: its signal number, 0 for none).
    fn max_i32(&self, x: i32) -> i32;
    /// Wait until every rank has arrived here.
    fn barrier(&self);
    /// Every rank's `text`, in rank order, on rank 0 (other ranks get an empty list).
    fn gather_text(&self, text: &str) -> Vec<String>;
    /// Stop every rank at once with exit status `code` (after an error on one rank, which the
    /// others would otherwise wait for in their next collective forever).
    fn abort(&self, code: i32) -> !;
}

/// A process alone: every collective returns its input.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn sum(&self, _data: &mut [f32]) {}
    fn sum_f64(&self, x: f64) -> f64 {
        x
    }
    fn max_i32(&self, x: i32) -> i32 {
        x
    }
    fn barrier(&self) {}
    fn gather_text(&self, text: &str) -> Vec<String> {
        vec![text.to_string()]
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// This process's share of each global batch: rank `rank` of `ranks` takes the images
/// `rank·B/ranks .. (rank+1)·B/ranks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub ranks: usize,
}

impl Shard {
    /// The whole batch, in one process.
    pub const WHOLE: Shard = Shard { rank: 0, ranks: 1 };

    /// The share of `comm`'s rank.
    pub fn of(comm: &dyn Collective) -> Shard {
        Shard {
            rank: comm.rank(),
            ranks: comm.size(),
        }
    }
}

/// The collective of this process: MPI's world when the feature `mpi` is on and an MPI launcher
/// started the process, else [`Single`]. Call once, early; dropping an MPI one finalizes MPI
/// (do so before `std::process::exit`, which runs no destructors).
pub fn init() -> Box<dyn Collective> {
    #[cfg(feature = "mpi")]
    if mpi::launched() {
        return Box::new(mpi::Mpi::init());
    }
    Box::new(Single)
}

#[cfg(feature = "mpi")]
pub mod mpi {
    //! [`Collective`] over MPI (rsmpi, the `mpi` crate).

    use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
    use mpi::environment::Universe;
    use mpi::topology::{Communicator, SimpleCommunicator};

    use super::Collective;

    /// Values per `MPI_Allreduce` call: 4 Mi f32 = 16 MiB. MPI counts are `int`s (a buffer above
    /// 2³¹ values needs several calls anyway), and the send buffer is a copy of one chunk:
    /// rsmpi 0.8 does not expose `MPI_IN_PLACE` (a macro whose value differs between Open MPI
    /// and MPICH), so each chunk is copied into a reused 16 MiB buffer and summed back into
    /// its place, instead of copying the whole gradient.
    pub const CHUNK: usize = 4 << 20;

    /// Whether an MPI launcher started this process (its environment says so): only then is
    /// MPI initialised, so `ddpm-gpu` built with the feature still runs alone without `mpirun`.
    pub fn launched() -> bool {
        // Open MPI's mpirun, PMIx (Open MPI 5, Slurm's `srun --mpi=pmix`), MPICH's Hydra and
        // Slurm's PMI-2.
        ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }

    /// MPI's world. Dropping it finalizes MPI.
    pub struct Mpi {
        world: SimpleCommunicator,
        local_rank: usize,
        scratch: std::cell::RefCell<Vec<f32>>,
        // Last: finalizes MPI after the communicators above are gone.
        _universe: Universe,
    }

    impl Mpi {
        pub fn init() -> Mpi {
            let universe = mpi::initialize().expect("MPI was initialised twice");
            let world = universe.world();
            // The ranks sharing this machine's memory: a rank's index among them picks its GPU.
            let local_rank = world.split_shared(world.rank()).rank() as usize;
            Mpi {
                world,
                local_rank,
                scratch: Default::default(),
                _universe: universe,
            }
        }
    }

    impl Collective for Mpi {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn size(&self) -> usize {
            self.world.size() as usize
        }
        fn local_rank(&self) -> usize {
            self.local_rank
        }
        fn sum(&self, data: &mut [f32]) {
            let mut send = self.scratch.borrow_mut();
            for chunk in data.chunks_mut(CHUNK) {
                send.clear();
                send.extend_from_slice(chunk);
                self.world.all_reduce_into(&send[..], chunk, SystemOperation::sum());
            }
        }
        fn sum_f64(&self, x: f64) -> f64 {
            let mut out = 0.0;
            self.world.all_reduce_into(&x, &mut out, SystemOperation::sum());
            out
        }
        fn max_i32(&self, x: i32) -> i32 {
            let mut out = 0;
            self.world.all_reduce_into(&x, &mut out, SystemOperation::max());
            out
        }
        fn barrier(&self) {
            self.world.barrier();
        }
        fn gather_text(&self, text: &str) -> Vec<String> {
            // Lengths first (gather), then the bytes (gatherv at rank 0).
            let root = self.world.process_at_rank(0);
            let len = text.len() as i32;
            if self.world.rank() != 0 {
                root.gather_into(&len);
                root.gather_varcount_into(text.as_bytes());
                return Vec::new();
            }
            let mut lens = vec![0i32; self.size()];
            root.gather_into_root(&len, &mut lens[..]);
            let displs: Vec<i32> = lens
                .iter()
                .scan(0, |o, &l| Some(std::mem::replace(o, *o + l)))
                .collect();
            let mut bytes = vec![0u8; lens.iter().sum::<i32>() as usize];
            {
                let mut partition = mpi::datatype::PartitionMut::new(&mut bytes[..], &lens[..], &displs[..]);
                root.gather_varcount_into_root(text.as_bytes(), &mut partition);
            }
            lens.iter()
                .zip(&displs)
                .map(|(&l, &o)| String::from_utf8_lossy(&bytes[o as usize..(o + l) as usize]).into_owned())
                .collect()
        }
        fn abort(&self, code: i32) -> ! {
            self.world.abort(code)
        }
    }
}
