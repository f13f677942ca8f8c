"""
Benchmarks for model.py and the synthetic world: prints numbers, asserts nothing.

    python bench/bench.py                 # ~1M-parameter model, context 256, this machine
    python bench/bench.py --n_layer=12 --n_embd=768 --device=cuda   # GPT-2 small on a GPU

Measures, on the same config and batch:
1. training tokens/s of our GPT vs transformers' GPT2LMHeadModel (if installed), our model
   FLOPs utilisation as a fraction of this machine's measured fp32 matmul peak, and each
   step's time over the time of its matrix products alone (matmul_floor_fn): the floor no
   implementation of the same arithmetic gets under;
2. sampling tokens/s with the KV cache vs without, and vs transformers' `generate`;
3. the world (data/): seconds to build it at `world_scale` (0.05 is what the tests build)
   and gold judgements per second on SFT-like candidates.

This machine is shared and noisy, so every figure is the median of --repeats rounds in
which ours and the peer run in turn (a load spike then hits both), printed with its
[min, max]; a ratio is the median of the per-round ratios.
"""

import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass

# run as `python bench/bench.py` from the repository root (or from anywhere): the modules it measures
# (model.py, common.py, data/, ...) live one folder up, so put that folder first on the path
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch

from common import autocast, get_device, parse_config, print_config, precision_name
from data import labelers, load_prompts, tasks
from data.kb import get_index
from data.world import build_world
from model import GPT, GPTConfig, generate


@dataclass
class BenchConfig:
    n_layer: int = 4  # model size: the default is ~1M parameters
    n_head: int = 4
    n_embd: int = 128
    vocab_size: int = 2052
    block_size: int = 256  # context length for the training benchmark
    batch_size: int = 8  # training batch
    steps: int = 10  # timed training steps (after warmup)
    gen_batch: int = 8  # prompts sampled at once
    prompt_len: int = 32
    new_tokens: int = 128
    device: str = "auto"
    compile: bool = False  # torch.compile our model (CUDA; slow to warm up on CPU)
    threads: int = 0  # torch threads; 0 = torch's default (all cores)
    world_scale: float = 0.05  # scale of the world built for section 3; 0 skips it
    repeats: int = 5  # alternating rounds; each figure is their median


def timed(fn, steps, device):
    """Seconds per call of fn, averaged over `steps` calls."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def alternate(fns, steps, repeats, device):
    """{name: [seconds per call, one per round]}: every fn warms up twice, then `repeats`
    rounds call each fn `steps` times in turn."""
    for fn in fns.values():
        fn()
        fn()
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].append(timed(fn, steps, device))
    return out


def spread(xs):
    """'median [min, max]' of a list of numbers."""
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2, xs[0], xs[-1]


def fmt(xs, unit="", scale=1.0, f=",.0f"):
    m, lo, hi = spread([x * scale for x in xs])
    return f"{m:{f}}{unit} [{lo:{f}}, {hi:{f}}]"


def matmul_peak(device, n=None, steps=20):
    """Measured fp32 (bf16 on CUDA) matmul throughput in FLOP/s: the ceiling for MFU."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    n = n or (8192 if device.startswith("cuda") else 1024)  # a GPU needs a large matmul to reach its peak
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    dt = timed(lambda: a @ b, steps, device)
    return 2 * n**3 / dt


def matmul_floor_fn(mcfg, batch, T, device):
    """A function that runs the matrix products of one training step and nothing else: every
    linear layer's forward (x W) and its two backward products (dY W^T, X^T dY), the tied LM
    head likewise, and attention's QK^T and AV with their backward products at the causal
    half (one T halved: a causal kernel can skip the upper triangle). Layer norms, softmax,
    GELU, the loss and the optimizer are left out, so an implementation that does the same
    arithmetic cannot take less time per step: it bounds how far ahead of a peer any
    implementation can be."""
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    M, C, V, H, L = batch * T, mcfg.n_embd, mcfg.vocab_size, mcfg.n_head, mcfg.n_layer
    hd, t2 = C // H, T // 2
    shapes = []  # (batch of products, m, k, n), one entry per product in a step
    for k, n in [(C, 3 * C), (C, C), (C, 4 * C), (4 * C, C)] * L + [(C, V)]:
        shapes += [(1, M, k, n), (1, M, n, k), (1, k, M, n)]
    shapes += [(batch * H, T, hd, t2), (batch * H, T, t2, hd),  # QK^T, AV
               (batch * H, T, t2, hd), (batch * H, hd, T, t2),  # their backward products
               (batch * H, T, hd, t2), (batch * H, t2, T, hd)] * L
    pairs = {sh: (torch.randn(sh[:3], device=device, dtype=dtype), torch.randn(sh[0], sh[2], sh[3], device=device,
                                                                               dtype=dtype)) for sh in set(shapes)}

    def step():
        for sh in shapes:
            torch.bmm(*pairs[sh])

    return step


def train_step_fn(model, idx, device, hf=False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(device):
            if hf:
                loss = model(idx, labels=idx).loss
            else:
                _, loss = model(idx, idx.roll(-1, 1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_world(scale):
    """Build a world at `scale` in a temporary folder, then time the gold judge on it."""
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        build_world(out, seed=0, scale=scale)
        build_s = time.perf_counter() - t0
        recs = load_prompts(os.path.join(out, "rm_prompts.jsonl"))
    rng, ix = random.Random(0), get_index(0)
    pairs = [(r, c) for r in recs for c in tasks.candidate_responses(r, rng, ix, 4)]
    t0 = time.perf_counter()
    for r, c in pairs:
        labelers.judge(r, c)
    rate = len(pairs) / (time.perf_counter() - t0)
    print(f"world build:        {build_s:10.2f} s at scale {scale}")
    print(f"gold judge:         {rate:10.0f} judgements/s | {len(pairs)} prompt-response pairs")


def main():
    cfg = parse_config(BenchConfig())
    if cfg.repeats < 1 or cfg.steps < 1:
        raise SystemExit("error: --repeats and --steps must be at least 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = get_device(cfg.device)
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | threads {torch.get_num_threads()}")
    mcfg = GPTConfig(block_size=max(cfg.block_size, cfg.prompt_len + cfg.new_tokens), vocab_size=cfg.vocab_size,
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd)
    torch.manual_seed(0)
    ours = GPT(mcfg).to(device)
    N = ours.num_params()
    print(f"model: {N / 1e6:.2f}M non-embedding params, {ours.num_params(False) / 1e6:.2f}M total")

    hf = None
    try:
        import transformers

        hf_cfg = transformers.GPT2Config(n_positions=mcfg.block_size, n_embd=mcfg.n_embd, n_layer=mcfg.n_layer,
                                         n_head=mcfg.n_head, vocab_size=mcfg.vocab_size, resid_pdrop=0.0,
                                         embd_pdrop=0.0, attn_pdrop=0.0)
        hf = transformers.GPT2LMHeadModel(hf_cfg).to(device)
    except ImportError:
        print("transformers not installed: skipping the comparison (pip install -r requirements-dev.txt)")

    # 1. training throughput ------------------------------------------------------------
    peak = spread([matmul_peak(device) for _ in range(cfg.repeats)])[0]
    idx = torch.randint(0, mcfg.vocab_size, (cfg.batch_size, cfg.block_size), device=device)
    tokens = idx.numel()
    model = torch.compile(ours) if cfg.compile else ours
    fns = {"ours": train_step_fn(model, idx, device)}
    if hf is not None:
        fns["transformers"] = train_step_fn(hf, idx, device, hf=True)
    fns["floor"] = matmul_floor_fn(mcfg, cfg.batch_size, cfg.block_size, device)
    t = alternate(fns, cfg.steps, cfg.repeats, device)
    floor = t["floor"]
    # FLOPs per token: 6N for the matmuls forward + backward, plus attention's 12 * L * C * T (PaLM appendix B)
    flops_per_token = 6 * N + 12 * mcfg.n_layer * mcfg.n_embd * cfg.block_size
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s (median of {cfg.repeats}); medians of {cfg.repeats} alternating "
          f"rounds of {cfg.steps} steps, [min, max]")
    print(f"train ours:          {fmt([tokens / x for x in t['ours']], ' tok/s')} | "
          f"{fmt([tokens / x * flops_per_token / peak for x in t['ours']], '% of matmul peak', 100, '.1f')}")
    if hf is not None:
        print(f"train transformers:  {fmt([tokens / x for x in t['transformers']], ' tok/s')} | ours is "
              f"{fmt([h / o for o, h in zip(t['ours'], t['transformers'])], 'x', f='.2f')}")
    print(f"matmuls alone:       {fmt([tokens / x for x in floor], ' tok/s')} | a step's matrix products, nothing "
          f"else: ours takes {fmt([o / f for o, f in zip(t['ours'], floor)], 'x', f='.2f')} their time")
    if hf is not None:
        print(f"                     transformers {fmt([h / f for h, f in zip(t['transformers'], floor)], 'x', f='.2f')}"
              ": the most any implementation doing this arithmetic could lead transformers by")

    # 2. sampling throughput ------------------------------------------------------------
    ours.eval()
    prompts = torch.randint(0, mcfg.vocab_size - 2, (cfg.gen_batch, cfg.prompt_len)).tolist()
    new = cfg.gen_batch * cfg.new_tokens
    pad = mcfg.vocab_size - 1  # eos_id=-1 below: every row generates all new_tokens

    def gen(use_cache):
        g = torch.Generator(device=device).manual_seed(0) if device != "mps" else None
        with autocast(device):
            return generate(ours, prompts, cfg.new_tokens, eos_id=-1, pad_id=pad, temperature=1.0,
                            generator=g, use_cache=use_cache)

    fns = {"cached": lambda: gen(True), "uncached": lambda: gen(False)}
    if hf is not None:
        hf.eval()
        pt = torch.tensor(prompts, device=device)

        def hf_gen():
            with torch.no_grad(), autocast(device):
                hf.generate(pt, attention_mask=torch.ones_like(pt), max_new_tokens=cfg.new_tokens,
                            min_new_tokens=cfg.new_tokens, do_sample=True, top_k=0, pad_token_id=pad)

        fns["transformers"] = hf_gen
    t = alternate(fns, 1, cfg.repeats, device)
    print(f"sample cached:       {fmt([new / x for x in t['cached']], ' tok/s')} | {cfg.new_tokens} new tokens x "
          f"{cfg.gen_batch} rows")
    print(f"sample uncached:     {fmt([new / x for x in t['uncached']], ' tok/s')} | cache speed-up "
          f"{fmt([u / c for c, u in zip(t['cached'], t['uncached'])], 'x', f='.2f')}")
    if hf is not None:
        print(f"sample transformers: {fmt([new / x for x in t['transformers']], ' tok/s')} | ours (cached) is "
              f"{fmt([h / c for c, h in zip(t['cached'], t['transformers'])], 'x', f='.2f')}")

    # 3. the synthetic world --------------------------------------------------------------
    if cfg.world_scale > 0:
        bench_world(cfg.world_scale)


if __name__ == "__main__":
    main()
