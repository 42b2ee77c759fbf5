#!/usr/bin/env python3
"""Generate golden test fixtures for the ddpm-gpu U-Net from PyTorch + diffusers.

For every case this writes tests/golden/<case>/ holding
  config.json                         UNet2DModel config, as diffusers' save_pretrained writes it
  diffusion_pytorch_model.safetensors the (randomly re-initialised) weights, same writer
  io.safetensors                      inputs, outputs, loss and the gradient of every parameter

The loss is the DDPM "simple" loss  L = mean((eps_theta(x_t, t) - noise)^2)  (Ho et al. 2020, eq. 14)
averaged over every element of the batch.  See tests/golden/README.md for the tensor list.

Python is only needed to regenerate fixtures; the Rust tests read the committed files.
Usage:  python3 scripts/make_golden.py [--out tests/golden] [--case NAME ...]
"""

import argparse
import json
import math
import os
import platform
import shutil
import struct
import sys

import diffusers
import numpy
import safetensors
import torch
from diffusers import UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
from safetensors.torch import load_file

# Settings shared by every case: the DDPM paper / google/ddpm-cifar10-32 choices.
DDPM_DEFAULTS = dict(
    act_fn="silu",
    time_embedding_type="positional",
    downsample_padding=0,
    mid_block_scale_factor=1,
    center_input_sample=False,
    resnet_time_scale_shift="default",
    add_attention=True,
    dropout=0.0,
    flip_sin_to_cos=False,
    freq_shift=1,
    norm_eps=1e-6,
)

# name -> (seed, batch, UNet2DModel kwargs overriding DDPM_DEFAULTS)
CASES = {
    "c1_lpb1_noattn": (
        1001,
        2,
        dict(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=None,
        ),
    ),
    "c3_lpb2_attn": (
        1002,
        2,
        dict(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            block_out_channels=(16, 24, 32),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=None,
            # Varied here (diffusers' own UNet2DModel defaults) so that the other branch of the
            # sinusoidal embedding and a different GroupNorm epsilon are covered by some case.
            flip_sin_to_cos=True,
            freq_shift=0,
            norm_eps=1e-5,
        ),
    ),
    "c1_attn_heads": (
        1003,
        3,
        dict(
            # 10 -> 5 after the single downsample: odd spatial size in the bottom level.
            sample_size=10,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=4,
            flip_sin_to_cos=False,
            freq_shift=1,
            # Large enough that an implementation ignoring or misplacing eps fails the test.
            norm_eps=1e-3,
        ),
    ),
    "c1_class_cond": (
        1004,
        3,
        dict(
            # Class-conditional (a learned class embedding added to the time embedding), with the
            # labels of CLASS_LABELS: a repeated label so that its gradient rows must sum.
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=(8, 16),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4,
            attention_head_dim=None,
            num_class_embeds=5,
        ),
    ),
}

# name -> class labels of the batch, for the class-conditional cases.
CLASS_LABELS = {"c1_class_cond": [2, 4, 2]}


def set_determinism():
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_float32_matmul_precision("highest")


def reinit_parameters(model, gen):
    """Replace every parameter by non-trivial random values (no zero-initialised layers).

    conv / linear weight: N(0,1) / sqrt(fan_in); bias: 0.1 N(0,1);
    GroupNorm weight: 1 + 0.1 N(0,1); GroupNorm bias: 0.1 N(0,1); class embedding: 0.5 N(0,1).
    """
    seen = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, torch.nn.GroupNorm):
                base = 1.0 if p_name == "weight" else 0.0
                val = base + 0.1 * torch.randn(p.shape, generator=gen)
            elif isinstance(module, torch.nn.Embedding):
                val = 0.5 * torch.randn(p.shape, generator=gen)
            elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                if p_name == "weight":
                    fan_in = p[0].numel()
                    val = torch.randn(p.shape, generator=gen) / math.sqrt(fan_in)
                else:
                    val = 0.1 * torch.randn(p.shape, generator=gen)
            else:
                raise TypeError(f"unexpected parameter {full} in {type(module).__name__}")
            with torch.no_grad():
                p.copy_(val)
            seen.add(full)
    names = {n for n, _ in model.named_parameters()}
    assert seen == names, names ^ seen


def capture_activations(model):
    """Forward hooks recording the output of every block-level module (debugging aids)."""
    acts = {}
    handles = []
    wanted = ("time_proj", "time_embedding", "conv_in", "conv_norm_out", "conv_act", "conv_out", "mid_block")

    def keep(name):
        parts = name.split(".")
        if name in wanted:
            return True
        # down_blocks.i / up_blocks.i / mid_block and their resnets.j, attentions.j, downsamplers.0, upsamplers.0
        if parts[0] in ("down_blocks", "up_blocks") and len(parts) in (2, 4):
            return len(parts) == 2 or parts[2] in ("resnets", "attentions", "downsamplers", "upsamplers")
        if parts[0] == "mid_block" and len(parts) == 3:
            return parts[1] in ("resnets", "attentions")
        return False

    for name, module in model.named_modules():
        if name and keep(name):

            def hook(_m, _inp, out, name=name):
                if isinstance(out, tuple):  # down blocks return (hidden_states, res_samples)
                    out = out[0]
                acts["act." + name] = out.detach().clone().contiguous()

            handles.append(module.register_forward_hook(hook))
    return acts, handles


def functional_unet(w, cfg, x, t, labels=None):
    """Independent re-statement of UNet2DModel.forward with torch.nn.functional on the state dict `w`.

    It encodes the structure documented in docs/TOUR.md (section 5); make_case asserts that it reproduces
    diffusers, so that document is checked every time the fixtures are generated.
    """
    F = torch.nn.functional
    groups, eps_n = cfg["norm_num_groups"], cfg["norm_eps"]
    ch0 = cfg["block_out_channels"][0]

    def gn(h, p):
        return F.group_norm(h, groups, w[p + ".weight"], w[p + ".bias"], eps_n)

    def conv(h, p, stride=1, padding=1):
        return F.conv2d(h, w[p + ".weight"], w[p + ".bias"], stride=stride, padding=padding)

    def lin(h, p):
        return h @ w[p + ".weight"].T + w[p + ".bias"]

    def resnet(h, p, temb, scale=1.0):
        r = F.silu(gn(h, p + ".norm1"))
        r = conv(r, p + ".conv1")
        r = r + lin(F.silu(temb), p + ".time_emb_proj")[:, :, None, None]
        r = conv(F.silu(gn(r, p + ".norm2")), p + ".conv2")  # dropout (p = 0) sits before conv2
        skip = conv(h, p + ".conv_shortcut", padding=0) if p + ".conv_shortcut.weight" in w else h
        return (skip + r) / scale

    def attention(h, p, scale=1.0):
        b, c, hh, ww = h.shape
        head_dim = cfg["attention_head_dim"] or c
        heads = c // head_dim
        a = gn(h, p + ".group_norm").reshape(b, c, hh * ww).transpose(1, 2)  # (B, L, C)

        def split(z):  # (B, L, C) -> (B, heads, L, head_dim); channel = head * head_dim + d
            return z.reshape(b, hh * ww, heads, head_dim).transpose(1, 2)

        q, k, v = split(lin(a, p + ".to_q")), split(lin(a, p + ".to_k")), split(lin(a, p + ".to_v"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)  # (B, heads, Lq, Lk)
        o = (probs @ v).transpose(1, 2).reshape(b, hh * ww, c)
        o = lin(o, p + ".to_out.0").transpose(1, 2).reshape(b, c, hh, ww)
        return (o + h) / scale

    # time embedding
    half = ch0 // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - cfg["freq_shift"]))
    arg = t.float()[:, None] * freqs[None, :]  # float32 in diffusers whatever the model dtype
    temb = torch.cat(
        [torch.cos(arg), torch.sin(arg)] if cfg["flip_sin_to_cos"] else [torch.sin(arg), torch.cos(arg)], 1
    )
    temb = temb.to(x.dtype)
    temb = lin(F.silu(lin(temb, "time_embedding.linear_1")), "time_embedding.linear_2")
    if labels is not None:
        temb = temb + w["class_embedding.weight"][labels]

    h = conv(x, "conv_in")
    skips = [h]
    n_levels = len(cfg["block_out_channels"])
    for i, kind in enumerate(cfg["down_block_types"]):
        for j in range(cfg["layers_per_block"]):
            h = resnet(h, f"down_blocks.{i}.resnets.{j}", temb)
            if kind == "AttnDownBlock2D":
                h = attention(h, f"down_blocks.{i}.attentions.{j}")
            skips.append(h)
        if i < n_levels - 1:
            pad = cfg["downsample_padding"]
            if pad == 0:
                h = F.pad(h, (0, 1, 0, 1))  # right and bottom only
            h = conv(h, f"down_blocks.{i}.downsamplers.0.conv", stride=2, padding=pad)
            skips.append(h)
    msf = cfg["mid_block_scale_factor"]
    h = resnet(h, "mid_block.resnets.0", temb, msf)
    h = attention(h, "mid_block.attentions.0", msf)
    h = resnet(h, "mid_block.resnets.1", temb, msf)
    for i, kind in enumerate(cfg["up_block_types"]):
        for j in range(cfg["layers_per_block"] + 1):
            h = torch.cat([h, skips.pop()], dim=1)  # [current, skip] along channels
            h = resnet(h, f"up_blocks.{i}.resnets.{j}", temb)
            if kind == "AttnUpBlock2D":
                h = attention(h, f"up_blocks.{i}.attentions.{j}")
        if i < n_levels - 1:
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = conv(h, f"up_blocks.{i}.upsamplers.0.conv")
    assert not skips
    return conv(F.silu(gn(h, "conv_norm_out")), "conv_out")


def run_model(model, sample, timestep, noise, labels=None):
    """Forward + DDPM simple loss + backward. Returns eps, loss, param grads, d loss / d sample."""
    model.zero_grad(set_to_none=True)
    x = sample.clone().requires_grad_(True)
    eps = model(x, timestep, class_labels=labels).sample
    loss = torch.mean((eps - noise) ** 2)
    loss.backward()
    grads = {n: p.grad.detach().clone().contiguous() for n, p in model.named_parameters()}
    return eps.detach().clone(), loss.detach().clone(), grads, x.grad.detach().clone()


def save_safetensors_sorted(tensors, path, metadata):
    """Write a safetensors file whose bytes depend only on its content (the library's writer orders the
    metadata map arbitrarily, so regenerated fixtures would differ byte-wise). Layout per the format:
    u64 little-endian header length, JSON header padded with spaces to a multiple of 8, then the data.
    8-byte dtypes come first, then by name, so every tensor is aligned to its element size."""
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for k in order:
        t = tensors[k].contiguous()
        data = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[k] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.writelines(blobs)


def max_rel(a, b, floor=1e-30):
    """max |a - b| / max |b|, with max |b| floored (for tensors whose exact value is ~0)."""
    return (a.double() - b.double()).abs().max().item() / max(b.double().abs().max().item(), floor)


def grad_errors(grads, ref):
    """Worst per-tensor relative error of `grads` against `ref`, and the tensors whose exact gradient is 0.

    The attention key bias gets an exactly zero gradient (softmax is invariant to adding the same
    q.b_k to every score of a row), so its float32 value is rounding noise; such tensors are measured
    against 1e-3 of the largest gradient of the model instead of against themselves.
    """
    scale = max(g.double().abs().max().item() for g in ref.values())
    zero = sorted(k for k, g in ref.items() if g.double().abs().max().item() < 1e-12 * scale)
    worst = max(max_rel(grads[k], ref[k], 1e-3 * scale) for k in ref)
    return worst, zero


def versions():
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }


def make_case(name, out_root):
    seed, batch, overrides = CASES[name]
    cfg = dict(DDPM_DEFAULTS)
    cfg.update(overrides)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = UNet2DModel(**cfg).float()
    reinit_parameters(model, gen)
    model.eval()  # dropout = 0.0 anyway; gradients are still computed below

    c, s = cfg["in_channels"], cfg["sample_size"]
    sample = torch.randn((batch, c, s, s), generator=gen, dtype=torch.float32)
    noise = torch.randn((batch, cfg["out_channels"], s, s), generator=gen, dtype=torch.float32)
    timestep = torch.randint(0, 1000, (batch,), generator=gen, dtype=torch.int64)
    labels = torch.tensor(CLASS_LABELS[name], dtype=torch.int64) if name in CLASS_LABELS else None

    acts, handles = capture_activations(model)
    eps, loss, grads, dsample = run_model(model, sample, timestep, noise, labels)
    for h in handles:
        h.remove()

    # Cross-checks (printed, and summarised in the metadata):
    # 1. the classic (non-SDPA) attention processor gives the same result,
    attns = [m for m in model.modules() if isinstance(m, Attention)]
    default_procs = [type(m.processor).__name__ for m in attns]
    for m in attns:
        m.set_processor(AttnProcessor())
    eps_b, _, grads_b, _ = run_model(model, sample, timestep, noise, labels)
    diff_proc = max(max_rel(eps_b, eps), grad_errors(grads_b, grads)[0])
    for m in attns:
        m.set_processor(AttnProcessor2_0())
    # 2. float64 evaluation: how far the float32 golden values are from exact arithmetic.
    model64 = UNet2DModel(**cfg).double()
    model64.load_state_dict(model.state_dict())
    model64.eval()
    eps64, loss64, grads64, dsample64 = run_model(model64, sample.double(), timestep, noise.double(), labels)
    f64_eps = max_rel(eps, eps64)
    f64_grad, zero_grads = grad_errors(grads, grads64)
    f64_dsample = max_rel(dsample, dsample64)
    # 3. the structure description of docs/TOUR.md, restated in functional form, agrees.
    with torch.no_grad():
        w64 = {k: v.double() for k, v in model.state_dict().items()}
        eps_fn = functional_unet(w64, cfg, sample.double(), timestep, labels)
    fn_err = max_rel(eps_fn, eps64)
    assert fn_err < 1e-10, f"functional restatement differs from diffusers: {fn_err}"
    f64_loss = abs(loss.item() - loss64.item()) / abs(loss64.item())

    # Save the model exactly as diffusers does, then check the round trip.
    case_dir = os.path.join(out_root, name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    model.save_pretrained(case_dir, safe_serialization=True)
    weights = load_file(os.path.join(case_dir, "diffusion_pytorch_model.safetensors"))
    state = model.state_dict()
    assert set(weights) == set(state) == set(grads), "state_dict / file / grad names differ"
    for k in weights:
        assert torch.equal(weights[k], state[k]), k
    reloaded = UNet2DModel.from_pretrained(case_dir, low_cpu_mem_usage=False).float().eval()
    with torch.no_grad():
        eps_reloaded = reloaded(sample, timestep, class_labels=labels).sample
    assert torch.equal(eps_reloaded, eps), "reloaded model differs"

    tensors = {
        "sample": sample,
        "timestep": timestep,
        "noise": noise,
        "eps": eps,
        "loss": loss.reshape(1),
        "input_grad.sample": dsample,
    }
    if labels is not None:
        tensors["class_labels"] = labels
    for k, g in grads.items():
        tensors["grad." + k] = g
    tensors.update(acts)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    for k, v in tensors.items():
        assert v.dtype == (torch.int64 if k in ("timestep", "class_labels") else torch.float32), k

    meta = {
        "case": name,
        "seed": str(seed),
        "batch": str(batch),
        "loss": "mean over all B*C*H*W elements of (eps - noise)^2, stored with shape [1]",
        "loss_shape": "[1]",
        "model_mode": "eval (dropout 0.0), gradients computed",
        "dtype": "float32 forward and backward, deterministic algorithms, 1 thread",
        "f32_vs_f64_max_rel_eps": f"{f64_eps:.3e}",
        "f32_vs_f64_max_rel_grad": f"{f64_grad:.3e}",
        "f32_vs_f64_rel_loss": f"{f64_loss:.3e}",
        "f32_vs_f64_max_rel_input_grad": f"{f64_dsample:.3e}",
        "exactly_zero_grads": ",".join(zero_grads),
        "attention_processor": ",".join(sorted(set(default_procs))),
        "sdpa_vs_classic_attention_max_rel": f"{diff_proc:.3e}",
        "config": json.dumps(cfg, sort_keys=True),
    }
    meta.update({f"version.{k}": v for k, v in versions().items()})
    io_path = os.path.join(case_dir, "io.safetensors")
    save_safetensors_sorted(tensors, io_path, meta)
    back = load_file(io_path)
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)

    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{name}: {n_params} parameters in {len(grads)} tensors, loss {loss.item():.6f}, "
        f"folder {size / 1024:.0f} KiB; f32 vs f64 max rel: eps {f64_eps:.2e}, grad {f64_grad:.2e}; "
        f"sdpa vs classic attention {diff_proc:.2e}"
    )
    print(f"  functional restatement (float64) vs diffusers (float64): max rel {fn_err:.1e}")
    print(f"  exactly-zero gradients (f32 value is rounding noise): {', '.join(zero_grads) or 'none'}")
    assert size < 3 * 1024 * 1024, f"{name} is {size} bytes"
    return cfg, batch


def eps_sensitivity(name):
    """How much eps moves if norm_eps were 1e-6 instead: tells whether the case can detect eps bugs."""
    seed, batch, overrides = CASES[name]
    cfg = dict(DDPM_DEFAULTS)
    cfg.update(overrides)
    if cfg["norm_eps"] == 1e-6:
        return None
    results = []
    for e in (cfg["norm_eps"], 1e-6):
        c = dict(cfg, norm_eps=e)
        gen = torch.Generator().manual_seed(seed)
        model = UNet2DModel(**c).float()
        reinit_parameters(model, gen)
        model.eval()
        s = c["sample_size"]
        sample = torch.randn((batch, c["in_channels"], s, s), generator=gen)
        torch.randn((batch, c["out_channels"], s, s), generator=gen)
        timestep = torch.randint(0, 1000, (batch,), generator=gen, dtype=torch.int64)
        with torch.no_grad():
            labels = torch.tensor(CLASS_LABELS[name]) if name in CLASS_LABELS else None
            results.append(model(sample, timestep, class_labels=labels).sample)
    return max_rel(results[1], results[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden"))
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (default: all)")
    args = ap.parse_args()

    set_determinism()
    print("versions:", json.dumps(versions()))
    os.makedirs(args.out, exist_ok=True)
    for name in args.case or list(CASES):
        make_case(name, args.out)
        sens = eps_sensitivity(name)
        if sens is not None:
            print(f"  {name}: max rel change of eps if norm_eps were 1e-6: {sens:.2e}")


if __name__ == "__main__":
    sys.exit(main())
