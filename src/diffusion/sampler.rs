//! Ancestral sampling (Algorithm 2 of the paper): x_T ~ N(0, I) drawn on the GPU, then for
//! t = T−1 … 0 one U-Net forward and one fused p_sample step (eq. 11): one submission per step.

use anyhow::Result;

use crate::diffusion::schedule::{Schedule, VarianceType};
use crate::diffusion::trainer::step_seed;
use crate::gpu::{Gpu, Plan, Tensor};
use crate::model::{ParamTable, UNet, UNetConfig};
use crate::ops::{elementwise, p_sample};

/// What a sampling run needs besides the weights.
#[derive(Clone, Debug)]
pub struct SampleOptions {
    pub images: usize,
    pub seed: u64,
    pub variance: VarianceType,
    pub clip: bool,
}

/// A U-Net (inference only) and its recorded denoising step.
pub struct Sampler {
    gpu: Gpu,
    net: UNet,
    /// x_T ~ N(0, I) into the network's input.
    init: Plan,
    init_kernel: usize,
    /// forward → p_sample (x_t → x_prev) → copy x_prev back into the input.
    step: Plan,
    step_kernel: usize,
    x_prev: Tensor,
    /// The model's prediction of x₀ at the last step run (for progressive pictures).
    pub x0_pred: Tensor,
}

impl Sampler {
    pub fn new(gpu: &Gpu, cfg: &UNetConfig, table: &ParamTable, weights: &Tensor, images: usize) -> Result<Sampler> {
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let net = UNet::new(gpu, cfg, table, weights, None, images)?;
        if let Some(e) = pollster::block_on(scope.pop()) {
            anyhow::bail!("out of GPU memory for {images} images at once ({e}); ask for fewer images");
        }
        let shape = net.input.shape().to_vec();
        let (x_prev, x0_pred) = (gpu.zeros(&shape), gpu.zeros(&shape));
        let mut init = Plan::new(gpu);
        let init_kernel = p_sample::noise(&mut init, &net.input, 0);
        let mut step = Plan::new(gpu);
        net.forward(&mut step);
        let step_kernel = p_sample::forward(
            &mut step,
            &net.input,
            net.output(),
            &x_prev,
            &x0_pred,
            &p_sample::PSampleParams::default(),
        );
        elementwise::copy(&mut step, &x_prev, &net.input);
        Ok(Sampler {
            gpu: gpu.clone(),
            net,
            init,
            init_kernel,
            step,
            step_kernel,
            x_prev,
            x0_pred,
        })
    }

    /// Run the whole reverse process; `progress(i)` is called after each of the T steps.
    /// Returns the images (N, C, H, W), nominally in [−1, 1].
    pub fn sample(&mut self, schedule: &Schedule, opts: &SampleOptions, mut progress: impl FnMut(usize)) -> Vec<f32> {
        let n = self.net.input.len();
        p_sample::set_noise_seed(&self.init, self.init_kernel, n, step_seed(opts.seed, 0, 6));
        self.init.run();
        for (i, t) in (0..schedule.len()).rev().enumerate() {
            self.gpu.write(&self.net.timesteps, &vec![t as f32; self.net.batch]);
            let hp = schedule
                .p_sample_coefs(t, opts.variance, opts.clip)
                .with_seed(step_seed(opts.seed, t, 7));
            p_sample::set_params(&self.step, self.step_kernel, n, &hp);
            self.step.run();
            progress(i);
        }
        self.gpu.read(&self.x_prev)
    }
}
