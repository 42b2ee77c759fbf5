//! Kernels and plans: the unit of recording and submission.
//!
//! A [`Kernel`] is one compute dispatch with everything bound (pipeline, parameter uniform,
//! storage buffers). A [`Plan`] is an ordered list of kernels and buffer clears; `run` records
//! them all into one command encoder (consecutive kernels share one compute pass) and submits
//! once. wgpu inserts the barriers between dispatches that read what an earlier one wrote. Plans
//! are built once and replayed: nothing is allocated when a plan runs.

use std::sync::Arc;

use bytemuck::Pod;
use wgpu::util::DeviceExt;

use super::{Gpu, Shader, Tensor};

/// Largest workgroup count per dispatch dimension guaranteed by WebGPU.
const MAX_GROUPS: u32 = 65535;

/// Workgroup counts covering `n` invocations with workgroups of `size`, spread over x and y so
/// that no dimension exceeds 65535. Shaders recover the linear index as
/// `gid.x + gid.y * (num_workgroups.x * size)` and must bounds-check it.
pub fn grid_1d(n: usize, size: u32) -> [u32; 3] {
    let groups = (n as u64).div_ceil(size as u64).max(1);
    if groups <= MAX_GROUPS as u64 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(MAX_GROUPS as u64);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// A recorded kernel whose uniform parameters, of type `U`, may be rewritten between runs with
/// [`Plan::set_params`]: the type keeps one kernel's parameters from being written into another's.
pub struct KernelRef<U> {
    index: usize,
    _params: std::marker::PhantomData<fn(U)>,
}

impl<U> Clone for KernelRef<U> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<U> Copy for KernelRef<U> {}

impl<U> std::fmt::Debug for KernelRef<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KernelRef({})", self.index)
    }
}

/// One dispatch, ready to record.
pub struct Kernel {
    /// `shader::entry`.
    pub label: String,
    /// The network layer that recorded it (diffusers' parameter prefix, e.g.
    /// `down_blocks.0.resnets.1.conv1`; empty outside any layer): see [`Plan::within`].
    pub layer: String,
    /// Floating-point operations of one dispatch, where the op states them (0 otherwise).
    pub flops: f64,
    /// Bytes of the storage views it binds: the memory traffic were each read or written once.
    pub bytes: f64,
    pipeline: Arc<wgpu::ComputePipeline>,
    bind_group: wgpu::BindGroup,
    /// The uniform buffer bound at binding 0 (rewrite it with [`Plan::set_params`]).
    params: wgpu::Buffer,
    pub workgroups: [u32; 3],
}

/// One recorded step of a plan.
enum Step {
    /// Dispatch `kernels[i]`.
    Kernel(usize),
    /// Zero a byte range of a buffer (`clear_buffer`: a memset on CPU drivers, a DMA fill on
    /// GPUs; several times faster than a fill kernel on lavapipe).
    Clear {
        buffer: Arc<wgpu::Buffer>,
        offset: u64,
        size: u64,
    },
}

/// An ordered list of kernels and clears, submitted together.
pub struct Plan {
    pub gpu: Gpu,
    kernels: Vec<Kernel>,
    steps: Vec<Step>,
    /// The layer names [`Plan::within`] has entered, innermost last.
    layers: Vec<String>,
}

/// How [`Plan::time`] measures each dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// GPU timestamps written at the start and end of a compute pass holding the one dispatch,
    /// all dispatches in one submission: what the GPU spent, without the CPU's submission cost.
    Timestamps,
    /// One submission per dispatch, waited for, timed on the CPU: works everywhere, and includes
    /// the submission and wake-up cost (tens of µs) in each time.
    Submissions,
}

impl Timer {
    /// [`Timer::Timestamps`] where the device has timestamp queries, unless `DDPM_GPU_TIMER=submit`
    /// asks for [`Timer::Submissions`].
    pub fn for_gpu(gpu: &Gpu) -> Timer {
        let forced = std::env::var("DDPM_GPU_TIMER").is_ok_and(|v| v == "submit");
        if !forced && gpu.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            Timer::Timestamps
        } else {
            Timer::Submissions
        }
    }
}

impl Plan {
    pub fn new(gpu: &Gpu) -> Plan {
        Plan {
            gpu: gpu.clone(),
            kernels: Vec::new(),
            steps: Vec::new(),
            layers: Vec::new(),
        }
    }

    /// Record with `f` the kernels of layer `name` (nested layers give dotted names relative to
    /// the enclosing one when `name` starts with '.', else absolute): labels for the profiler.
    pub fn within<R>(&mut self, name: &str, f: impl FnOnce(&mut Plan) -> R) -> R {
        let full = match (name.strip_prefix('.'), self.layers.last()) {
            (Some(rel), Some(outer)) => format!("{outer}.{rel}"),
            (Some(rel), None) => rel.to_string(),
            (None, _) => name.to_string(),
        };
        self.layers.push(full);
        let r = f(self);
        self.layers.pop();
        r
    }

    /// State the floating-point operations of the kernel recorded last (for the profiler's
    /// GFLOP/s).
    pub fn set_flops(&mut self, flops: f64) {
        if let Some(k) = self.kernels.last_mut() {
            k.flops = flops;
        }
    }

    /// Append a dispatch of `entry` in `shader`. Binding 0 of group 0 is the uniform `params`
    /// (every entry point must use it); `tensors` gives the storage bindings by number, exactly
    /// those the entry point uses. Returns a handle for rewriting `params` later.
    pub fn kernel<U: Pod>(
        &mut self,
        shader: &Shader,
        entry: &str,
        params: &U,
        tensors: &[(u32, &Tensor)],
        workgroups: [u32; 3],
    ) -> KernelRef<U> {
        let gpu = &self.gpu;
        let pipeline = gpu.pipeline(shader, entry);
        // Uniform blocks are sized in 16-byte steps.
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        let label = format!("{}::{entry}", shader.name);
        let params = gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&label),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        });
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: params.as_entire_binding(),
        }];
        entries.extend(tensors.iter().map(|(binding, t)| wgpu::BindGroupEntry {
            binding: *binding,
            resource: t.binding(),
        }));
        let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let bytes = tensors.iter().map(|(_, t)| t.len() as f64 * 4.0).sum();
        self.kernels.push(Kernel {
            label,
            layer: self.layers.last().cloned().unwrap_or_default(),
            flops: 0.0,
            bytes,
            pipeline,
            bind_group,
            params,
            workgroups,
        });
        self.steps.push(Step::Kernel(self.kernels.len() - 1));
        KernelRef {
            index: self.kernels.len() - 1,
            _params: std::marker::PhantomData,
        }
    }

    /// Append the zeroing of every element of `t` (its view, not the whole buffer).
    pub fn clear(&mut self, t: &Tensor) {
        if t.is_empty() {
            return;
        }
        self.steps.push(Step::Clear {
            buffer: t.buffer.clone(),
            offset: (t.offset * 4) as u64,
            size: (t.len() * 4) as u64,
        });
    }

    /// Rewrite the uniform parameters of kernel `k` of this plan (takes effect at the next `run`).
    pub fn set_params<U: Pod>(&self, k: KernelRef<U>, params: &U) {
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        self.gpu.queue.write_buffer(&self.kernels[k.index].params, 0, &bytes);
    }

    /// Append all steps of another plan (its kernels keep their order, after this plan's).
    pub fn append(&mut self, other: Plan) {
        let base = self.kernels.len();
        self.kernels.extend(other.kernels);
        self.steps.extend(other.steps.into_iter().map(|s| match s {
            Step::Kernel(i) => Step::Kernel(base + i),
            clear => clear,
        }));
    }

    /// Number of steps (kernels and clears).
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    /// Record every step into one command encoder (a compute pass per run of consecutive
    /// kernels) and submit. Does not wait.
    pub fn run(&self) {
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        let mut steps = self.steps.iter().peekable();
        while let Some(step) = steps.next() {
            match step {
                Step::Clear { buffer, offset, size } => encoder.clear_buffer(buffer, *offset, Some(*size)),
                Step::Kernel(first) => {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    self.dispatch(&mut pass, *first);
                    while let Some(Step::Kernel(i)) = steps.peek() {
                        self.dispatch(&mut pass, *i);
                        steps.next();
                    }
                }
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
    }

    fn dispatch(&self, pass: &mut wgpu::ComputePass, i: usize) {
        let k = &self.kernels[i];
        pass.set_pipeline(&k.pipeline);
        pass.set_bind_group(0, &k.bind_group, &[]);
        let [x, y, z] = k.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Run the plan once (waiting for it), measuring each kernel with `timer`: seconds per
    /// kernel, in the order of [`Plan::kernels`]. The plan computes exactly what [`Plan::run`]
    /// does; clears run untimed. Used by the tuner and the profiler.
    pub fn time(&self, timer: Timer) -> Vec<f64> {
        self.gpu.sync();
        match timer {
            Timer::Submissions => self
                .steps
                .iter()
                .filter_map(|step| {
                    let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
                    let kernel = match step {
                        Step::Clear { buffer, offset, size } => {
                            encoder.clear_buffer(buffer, *offset, Some(*size));
                            None
                        }
                        Step::Kernel(i) => {
                            self.dispatch(&mut encoder.begin_compute_pass(&Default::default()), *i);
                            Some(())
                        }
                    };
                    let start = std::time::Instant::now();
                    self.gpu.queue.submit([encoder.finish()]);
                    self.gpu.sync();
                    kernel.map(|_| start.elapsed().as_secs_f64())
                })
                .collect(),
            Timer::Timestamps => self.time_with_timestamps(),
        }
    }

    /// [`Timer::Timestamps`]: each kernel in a compute pass of its own whose start and end write
    /// a timestamp; at most `QUERY_SET_MAX_QUERIES / 2` kernels per query set and submission.
    fn time_with_timestamps(&self) -> Vec<f64> {
        let device = &self.gpu.device;
        let per_set = (wgpu::QUERY_SET_MAX_QUERIES / 2) as usize;
        let tick = self.gpu.queue.get_timestamp_period() as f64 * 1e-9;
        let mut times = Vec::with_capacity(self.kernels.len());
        let mut steps = self.steps.iter().peekable();
        while steps.peek().is_some() {
            let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("dispatch timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * per_set as u32,
            });
            let mut encoder = device.create_command_encoder(&Default::default());
            let mut n = 0u32;
            while n < per_set as u32 {
                match steps.next() {
                    None => break,
                    Some(Step::Clear { buffer, offset, size }) => encoder.clear_buffer(buffer, *offset, Some(*size)),
                    Some(Step::Kernel(i)) => {
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                                query_set: &queries,
                                beginning_of_pass_write_index: Some(2 * n),
                                end_of_pass_write_index: Some(2 * n + 1),
                            }),
                        });
                        self.dispatch(&mut pass, *i);
                        n += 1;
                    }
                }
            }
            if n == 0 {
                continue;
            }
            let bytes = 2 * n as u64 * wgpu::QUERY_SIZE as u64;
            let resolved = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let staging = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.resolve_query_set(&queries, 0..2 * n, &resolved, 0);
            encoder.copy_buffer_to_buffer(&resolved, 0, &staging, 0, bytes);
            self.gpu.queue.submit([encoder.finish()]);
            let slice = staging.slice(..);
            slice.map_async(wgpu::MapMode::Read, |r| r.expect("mapping the timestamps"));
            self.gpu.sync();
            let ticks: Vec<u64> =
                bytemuck::cast_slice(&slice.get_mapped_range().expect("reading the timestamps")).to_vec();
            times.extend(ticks.chunks(2).map(|t| t[1].saturating_sub(t[0]) as f64 * tick));
        }
        times
    }
}
