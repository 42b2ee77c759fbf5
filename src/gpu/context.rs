//! Instance → adapter → device, requesting the adapter's own limits, and the pipeline cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use wgpu::util::DeviceExt;

use super::{preprocess, Shader, Tensor};

/// How to choose the adapter. `adapter` (the `--adapter` flag) wins over the environment
/// variable `WGPU_ADAPTER_NAME`; both match a case-insensitive substring of the adapter name.
/// `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`) restricts the backends searched.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub adapter: Option<String>,
    /// Which of the equally good adapters (those of the best kind among the ones matching
    /// `adapter`) to open, counting from 0 and wrapping around: a rank's index among the ranks
    /// of its machine in a run of several processes ([`crate::dist`]), so each opens its own GPU.
    pub nth: usize,
}

/// The device, its queue and the cache of compiled pipelines. Cheap to clone (shared).
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

impl std::ops::Deref for Gpu {
    type Target = GpuInner;
    fn deref(&self) -> &GpuInner {
        &self.inner
    }
}

pub struct GpuInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    pipelines: Mutex<HashMap<(&'static str, String), Arc<wgpu::ComputePipeline>>>,
    /// The kernel variants measured fastest on this adapter (see `crate::ops::tune`).
    pub tuning: Mutex<Tuning>,
}

/// Kernel choices by measurement: a case (an op at one shape, as JSON) → the variant that ran it
/// fastest (as JSON). Ops ask [`Gpu::tuned`] when they record; a case without an answer gets the
/// op's heuristic and, while tuning is enabled, is remembered in `missing` for the tuner.
#[derive(Default)]
pub struct Tuning {
    /// Off (the default, and `--no-tune`): every op uses its heuristic and records nothing.
    pub enabled: bool,
    pub choices: std::collections::BTreeMap<String, String>,
    pub missing: std::collections::BTreeSet<String>,
}

const NO_ADAPTER_HELP: &str = "no GPU adapter found by wgpu.\n\
  On Linux without a GPU install Mesa's software Vulkan driver (lavapipe):\n\
      sudo apt-get install mesa-vulkan-drivers\n\
  On a machine with a GPU install its Vulkan (or Metal / DX12) driver.\n\
  `ddpm-gpu info` lists the adapters wgpu can see.";

/// Every adapter wgpu sees on the backends allowed by `WGPU_BACKEND`.
pub fn enumerate_adapters() -> Vec<wgpu::Adapter> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    pollster::block_on(instance.enumerate_adapters(backends))
}

/// Rank adapters: real GPUs first, then Vulkan over other backends (Mesa also exposes an
/// llvmpipe GL adapter next to lavapipe's Vulkan one; Vulkan is the one to use).
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let device = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let backend = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (device, backend)
}

/// Choose an adapter following `opts`, or fail with a message saying what to install.
pub fn choose_adapter(opts: &GpuOptions) -> Result<wgpu::Adapter> {
    let mut adapters = enumerate_adapters();
    if adapters.is_empty() {
        // Installing a driver does not help when the user limited the search to a backend
        // this machine lacks (e.g. WGPU_BACKEND=metal on Linux).
        if let Ok(backend) = std::env::var("WGPU_BACKEND") {
            let all = pollster::block_on(
                wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle())
                    .enumerate_adapters(wgpu::Backends::all()),
            );
            let others: Vec<String> = all
                .iter()
                .map(|a| format!("{} ({:?})", a.get_info().name, a.get_info().backend))
                .collect();
            bail!(
                "WGPU_BACKEND={backend}: this machine has no adapter of that backend; \
                 without WGPU_BACKEND wgpu sees: {}",
                if others.is_empty() {
                    "none".to_string()
                } else {
                    others.join(", ")
                }
            );
        }
        bail!("{NO_ADAPTER_HELP}");
    }
    let wanted = opts.adapter.clone().or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok());
    if let Some(name) = wanted {
        let needle = name.to_lowercase();
        let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
        adapters.retain(|a| a.get_info().name.to_lowercase().contains(&needle));
        if adapters.is_empty() {
            bail!("no adapter matches '{name}' (from --adapter or WGPU_ADAPTER_NAME); available: {names:?}");
        }
    }
    adapters.sort_by_key(|a| rank(&a.get_info()));
    // The best kind, in the order wgpu lists them (the same in every process of a machine).
    let best = rank(&adapters[0].get_info());
    adapters.retain(|a| rank(&a.get_info()) == best);
    let nth = opts.nth % adapters.len();
    Ok(adapters.swap_remove(nth))
}

/// The limits to open the device with: the adapter's own (the defaults cap storage bindings at
/// 128 MiB, too small for real batches), or with `DDPM_GPU_LIMITS=webgpu` WebGPU's defaults
/// (`wgpu::Limits::default()`, what a browser guarantees), or with `DDPM_GPU_LIMITS=downlevel`
/// wgpu's downlevel defaults (old GL and mobile devices), to prove the kernels run within them.
fn requested_limits(adapter: &wgpu::Adapter) -> Result<wgpu::Limits> {
    match std::env::var("DDPM_GPU_LIMITS").as_deref() {
        Err(_) | Ok("") | Ok("adapter") => Ok(adapter.limits()),
        Ok("webgpu") => Ok(wgpu::Limits::default()),
        Ok("downlevel") => Ok(wgpu::Limits::downlevel_defaults()),
        Ok(other) => bail!("DDPM_GPU_LIMITS={other}: expected adapter (the default), webgpu or downlevel"),
    }
}

/// Refuse, before any kernel is built, a device that lacks what the kernels need ([`needs`],
/// read from the shaders), naming the adapter, the limit, what it has and what is needed.
fn check_limits(info: &wgpu::AdapterInfo, limits: &wgpu::Limits) -> Result<()> {
    let needs = super::needs();
    for (limit, has, (need, kernel)) in [
        (
            "max_storage_buffers_per_shader_stage",
            limits.max_storage_buffers_per_shader_stage,
            &needs.storage_buffers,
        ),
        (
            "max_compute_invocations_per_workgroup",
            limits.max_compute_invocations_per_workgroup,
            &needs.invocations,
        ),
        (
            "max_compute_workgroup_storage_size",
            limits.max_compute_workgroup_storage_size,
            &needs.workgroup_bytes,
        ),
    ] {
        if has < *need {
            bail!(
                "adapter '{}' ({:?}) offers {limit} = {has}, but ddpm-gpu's kernels need {need} ({kernel} uses that many)",
                info.name,
                info.backend
            );
        }
    }
    Ok(())
}

impl Gpu {
    /// Open the chosen adapter with the limits of [`requested_limits`] (its own, unless
    /// `DDPM_GPU_LIMITS` asks for others), once [`check_limits`] has found them sufficient.
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        let adapter = choose_adapter(opts)?;
        let info = adapter.get_info();
        let limits = requested_limits(&adapter)?;
        check_limits(&info, &limits)?;
        // Optional features, enabled where the adapter has them: subgroup operations (the
        // subgroup reductions) and timestamp queries (timing dispatches for tuning and profiling).
        let wanted = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ddpm-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("opening device on adapter '{}'", info.name))?;
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                device,
                queue,
                info,
                limits,
                features,
                pipelines: Mutex::default(),
                tuning: Mutex::default(),
            }),
        })
    }

    /// The variant measured fastest for `case`, when tuning is enabled and knows it; `None`
    /// (remembering the case for the tuner) otherwise.
    pub fn tuned<C: serde::Serialize, V: serde::de::DeserializeOwned>(&self, case: &C) -> Option<V> {
        let mut tuning = self.tuning.lock().unwrap();
        if !tuning.enabled {
            return None;
        }
        let key = serde_json::to_string(case).expect("a tuning case serialises");
        match tuning.choices.get(&key).and_then(|v| serde_json::from_str(v).ok()) {
            Some(v) => Some(v),
            None => {
                tuning.missing.insert(key);
                None
            }
        }
    }

    /// A device for tests and benches: the default adapter, panicking with the install hint.
    pub fn for_tests() -> Gpu {
        match Gpu::new(&GpuOptions::default()) {
            Ok(gpu) => gpu,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// A one-line description of the adapter, e.g. for benchmark reports.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info
        )
    }

    // ---- tensors -------------------------------------------------------------------------

    fn storage_buffer(&self, bytes: u64, label: &str) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A zero-filled tensor.
    pub fn zeros(&self, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let buffer = self.storage_buffer(n as u64 * 4, "tensor");
        Tensor {
            buffer: Arc::new(buffer),
            offset: 0,
            shape: shape.to_vec(),
        }
    }

    /// A tensor holding `data` (row-major).
    pub fn tensor(&self, shape: &[usize], data: &[f32]) -> Tensor {
        let n: usize = shape.iter().product();
        assert_eq!(
            n,
            data.len(),
            "tensor shape {shape:?} needs {n} values, got {}",
            data.len()
        );
        let contents: &[u8] = if data.is_empty() {
            &[0u8; 4]
        } else {
            bytemuck::cast_slice(data)
        };
        let buffer = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("tensor"),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Tensor {
            buffer: Arc::new(buffer),
            offset: 0,
            shape: shape.to_vec(),
        }
    }

    /// Overwrite a tensor's contents (queued; takes effect before the next submission).
    pub fn write(&self, t: &Tensor, data: &[f32]) {
        assert_eq!(
            t.len(),
            data.len(),
            "write of {} values into tensor {:?}",
            data.len(),
            t.shape
        );
        self.queue
            .write_buffer(&t.buffer, (t.offset * 4) as u64, bytemuck::cast_slice(data));
    }

    /// Copy a tensor back to the CPU, waiting for all submitted work. Explicit and rare.
    pub fn read(&self, t: &Tensor) -> Vec<f32> {
        let bytes = (t.len() * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&t.buffer, (t.offset * 4) as u64, &staging, 0, bytes);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..bytes);
        slice.map_async(wgpu::MapMode::Read, |r| r.expect("mapping a readback buffer"));
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("waiting for the GPU");
        let data: Vec<f32> =
            bytemuck::cast_slice::<u8, f32>(&slice.get_mapped_range().expect("reading a mapped buffer")).to_vec();
        staging.unmap();
        data
    }

    /// Wait until all submitted work has finished.
    pub fn sync(&self) {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("waiting for the GPU");
    }

    // ---- pipelines -----------------------------------------------------------------------

    /// The compute pipeline for `entry` of `shader`, compiled once and cached.
    pub fn pipeline(&self, shader: &Shader, entry: &str) -> Arc<wgpu::ComputePipeline> {
        let key = (shader.name, entry.to_string());
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return p.clone();
        }
        let source = preprocess(shader.source).unwrap_or_else(|e| panic!("shaders/{}.wgsl: {e}", shader.name));
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(shader.name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&format!("{}::{entry}", shader.name)),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            // Every kernel writes the workgroup memory it reads (the tiles and reduction slots)
            // before a barrier and reads it after, so wgpu's zeroing of it at the start of each
            // workgroup is wasted work, and on llvmpipe's GL driver it made each 8 KiB-tile
            // kernel take about a minute to compile (46 s of CPU time against 3.8 s without).
            compilation_options: wgpu::PipelineCompilationOptions {
                zero_initialize_workgroup_memory: false,
                ..Default::default()
            },
            cache: None,
        });
        let pipeline = Arc::new(pipeline);
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        pipeline
    }
}

/// Every feature the chosen adapter offers (the device enables only those it uses).
pub fn adapter_features(opts: &GpuOptions) -> Result<wgpu::Features> {
    Ok(choose_adapter(opts)?.features())
}
