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

/// One dispatch, ready to record.
pub struct Kernel {
    pub label: String,
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
}

impl Plan {
    pub fn new(gpu: &Gpu) -> Plan {
        Plan {
            gpu: gpu.clone(),
            kernels: Vec::new(),
            steps: Vec::new(),
        }
    }

    /// Append a dispatch of `entry` in `shader`. Binding 0 of group 0 is the uniform `params`
    /// (every entry point must use it); `tensors` gives the storage bindings by number, exactly
    /// those the entry point uses. Returns the kernel's index in the plan.
    pub fn kernel<U: Pod>(
        &mut self,
        shader: &Shader,
        entry: &str,
        params: &U,
        tensors: &[(u32, &Tensor)],
        workgroups: [u32; 3],
    ) -> usize {
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
        self.kernels.push(Kernel {
            label,
            pipeline,
            bind_group,
            params,
            workgroups,
        });
        self.steps.push(Step::Kernel(self.kernels.len() - 1));
        self.kernels.len() - 1
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

    /// Rewrite the uniform parameters of kernel `index` (takes effect at the next `run`).
    pub fn set_params<U: Pod>(&self, index: usize, params: &U) {
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        bytes.resize(bytes.len().div_ceil(16).max(1) * 16, 0);
        self.gpu.queue.write_buffer(&self.kernels[index].params, 0, &bytes);
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

    /// Number of buffer clears.
    pub fn clear_count(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s, Step::Clear { .. })).count()
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
                    let mut dispatch = |i: usize| {
                        let k = &self.kernels[i];
                        pass.set_pipeline(&k.pipeline);
                        pass.set_bind_group(0, &k.bind_group, &[]);
                        let [x, y, z] = k.workgroups;
                        pass.dispatch_workgroups(x, y, z);
                    };
                    dispatch(*first);
                    while let Some(Step::Kernel(i)) = steps.peek() {
                        dispatch(*i);
                        steps.next();
                    }
                }
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
    }
}
