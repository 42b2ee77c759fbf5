#!/usr/bin/env python3
"""The same DDPM training step in PyTorch on the CPU, for comparison with `ddpm-gpu`.

Builds diffusers' UNet2DModel from a config.json (e.g. `runs/<run>/unet/config.json` written by
`ddpm-gpu train`), and times what one `Trainer::run_step` does: q_sample, forward, L_simple,
backward, global-norm gradient clipping, Adam and the EMA update, at the given batch size, with
torch using as many threads as the machine has cores. Prints the median seconds per step (after one
warm-up step), images/s, and model GFLOP/s given the forward+backward GFLOP per image (3 × the
forward FLOPs that `cargo bench --bench kernels` prints per image).

Python is needed only for this comparison, never to build or test ddpm-gpu.

    pip install torch diffusers
    python3 benches/pytorch_step.py --config runs/<run>/unet/config.json --batch 32 --steps 5 --ours 1.1
"""
import argparse
import json
import os
import time

import torch
from diffusers import UNet2DModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True, help="a UNet2DModel config.json")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--gflop-per-image", type=float, default=None,
                    help="forward+backward GFLOP per image (from `ddpm-gpu info --model`), to print GFLOP/s")
    ap.add_argument("--ours", type=float, default=None,
                    help="ddpm-gpu's seconds per step at the same config and batch (from `cargo bench --bench step`), "
                         "to print our time divided by PyTorch's")
    args = ap.parse_args()

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    with open(args.config) as f:
        cfg = json.load(f)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    model = UNet2DModel(**cfg)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    size, ch = cfg["sample_size"], cfg.get("in_channels", 3)
    x0 = torch.randn(args.batch, ch, size, size)
    alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)

    def step():
        t = torch.randint(0, 1000, (args.batch,))
        noise = torch.randn_like(x0)
        a = alphas[t].float().view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        loss = torch.mean((model(xt, t).sample - noise) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - args.ema_decay)
        return loss.item()

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()  # .item() waits for the step
        times.append(time.perf_counter() - t0)
    secs = sorted(times)[len(times) // 2]
    count = sum(p.numel() for p in params)
    print(f"pytorch {torch.__version__} cpu, {torch.get_num_threads()} threads, {count} parameters")
    print(f"batch {args.batch}: {secs:.3f} s/step (median of {args.steps}), {args.batch / secs:.1f} images/s")
    if args.gflop_per_image:
        print(f"model FLOPs: {args.gflop_per_image * args.batch / secs:.1f} GFLOP/s")
    if args.ours:
        print(f"ddpm-gpu {args.ours:.3f} s/step / PyTorch {secs:.3f} s/step = {args.ours / secs:.2f}")


if __name__ == "__main__":
    main()
