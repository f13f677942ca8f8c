"""
GPT-2-shaped models through one step of each training stage: time and peak memory.
Random weights with GPT-2's real shapes (vocabulary 50257 + our 3 special tokens, context
1024); nothing is downloaded. Prints numbers, asserts nothing.

    python bench/bench_gpt2.py                        # 124M, batch 4, SFT + RM + PPO, this machine
    python bench/bench_gpt2.py --size=355M --device=cuda --grad_checkpoint=True
    python bench/bench_gpt2.py --estimate=True        # the computed GPU memory/time table (docs/benchmarks.md)

Measured, each stage in its own process so each peak is its own (peak RSS on the CPU,
torch.cuda.max_memory_allocated on a GPU), the median of --repeats after one warm-up:
  sft  one optimizer step: batch_size sequences of prompt_len + response_len tokens
  rm   one optimizer step: batch_size prompts x 2 responses, the pairwise loss
  ppo  one iteration of ppo.py (rollout, advantages, ppo_update): sample response_len tokens
       for batch_size prompts, score with the RM, log-probs of policy and reference, values,
       GAE, one epoch of one minibatch (policy, reference, RM and value model all on the
       device, as in ppo.py; --grad_checkpoint sets the models' flag, which ppo.py has no
       option for: docs/exercises.md)

--estimate=True computes instead of measuring (no GPU here when it was written): memory =
weights + gradients + AdamW state of what trains + weights of what is frozen + activations
(Korthikanti et al. 2022 with flash attention: ~34 bytes per token, layer and channel in
bf16, plus the logits and their fp32 copies), time = FLOPs / (peak x assumed utilisation). Both are ESTIMATES.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

# run as `python bench/bench_gpt2.py` from the repository root (or from anywhere): the modules it measures
# (model.py, common.py, data/, ...) live one folder up, so put that folder first on the path
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch

from common import autocast, get_device, parse_config, print_config, precision_name
from model import GPT, GPTConfig, ScalarModel

SHAPES = {"124M": (12, 12, 768), "355M": (24, 16, 1024), "774M": (36, 20, 1280), "1.5B": (48, 25, 1600)}
VOCAB = 50257 + 3  # GPT-2's tokens + <|pad|>, <|user|>, <|assistant|> (tokenizer.py)


@dataclass
class BenchGPT2Config:
    size: str = "124M"  # 124M | 355M | 774M | 1.5B
    stage: str = "all"  # sft | rm | ppo | all (each in its own process)
    batch_size: int = 4
    prompt_len: int = 64
    response_len: int = 64
    ppo_minibatch: int = 0  # PPO rollouts per optimizer step (0 = the whole batch)
    repeats: int = 3  # timed repeats after one warm-up; the median is printed with min and max
    grad_checkpoint: bool = False
    estimate: bool = False  # print the computed GPU table instead of measuring
    device: str = "auto"
    threads: int = 0  # torch threads (0 = torch's default)


def gpt_config(size):
    n_layer, n_head, n_embd = SHAPES[size]
    return GPTConfig(block_size=1024, vocab_size=VOCAB, n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=0.0)


def peak_memory_gb(device):
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def optimizer_step(opt, loss_fn, device):
    """-> a function doing one optimizer step on loss_fn() under the device's autocast."""
    def step():
        with autocast(device):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def sft_step(cfg, device):
    model = GPT(gpt_config(cfg.size)).to(device)
    model.grad_checkpoint = cfg.grad_checkpoint
    opt = model.configure_optimizer(1e-5, 0.0, device=device)
    T = cfg.prompt_len + cfg.response_len
    x = torch.randint(0, 50257, (cfg.batch_size, T), device=device)
    y = x.roll(-1, 1)
    y[:, : cfg.prompt_len - 1] = -1  # the loss on the response tokens only, as sft.py
    return optimizer_step(opt, lambda: model(x, y)[1], device)


def rm_step(cfg, device):
    from reward import comparison_loss
    rm = ScalarModel(gpt_config(cfg.size)).to(device)
    rm.trunk.grad_checkpoint = cfg.grad_checkpoint
    opt = rm.trunk.configure_optimizer(1e-5, 0.0, device=device)
    opt.add_param_group({"params": list(rm.head.parameters()) + [rm.lm_coef], "weight_decay": 0.0})
    T = cfg.prompt_len + cfg.response_len
    ids = torch.randint(0, 50257, (2 * cfg.batch_size, T), device=device)  # prompt i's 2 responses at 2i, 2i + 1
    attn = torch.ones_like(ids)
    resp = torch.zeros_like(ids)
    resp[:, cfg.prompt_len :] = 1
    groups = [(2 * i, [0, 1]) for i in range(cfg.batch_size)]
    return optimizer_step(opt, lambda: comparison_loss(rm.score(ids, attn, resp).float(), groups)[0], device)


def ppo_step(cfg, device):
    import copy

    from ppo import PPOConfig, compute_advantages, ppo_update, rollout
    policy = GPT(gpt_config(cfg.size)).to(device)
    policy.grad_checkpoint = cfg.grad_checkpoint
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    rm = ScalarModel(gpt_config(cfg.size)).to(device).eval().requires_grad_(False)
    value = copy.deepcopy(rm).to(device).train().requires_grad_(True)
    value.lm_coef.requires_grad_(False)
    value.trunk.grad_checkpoint = cfg.grad_checkpoint
    pcfg = PPOConfig(batch_size=cfg.batch_size, minibatch_size=cfg.ppo_minibatch or cfg.batch_size, ppo_epochs=1,
                     samples_per_prompt=1, max_new_tokens=cfg.response_len, kl_coef=0.05, value_warmup=0)
    opt = torch.optim.AdamW([dict(params=list(policy.parameters())), dict(params=list(value.parameters()))], lr=1e-6,
                            eps=1e-5, fused=device.startswith("cuda"))
    tok = SimpleNamespace(eot_id=50256, pad_id=50257)
    prompts = torch.randint(0, 50256, (cfg.batch_size, cfg.prompt_len)).tolist()
    gen = torch.Generator(device=device).manual_seed(0)

    def reward_fn(out):
        P = out["prompt_len"]
        resp = torch.cat([torch.zeros_like(out["attn_mask"][:, :P]), out["response_mask"]], 1)
        return rm.score(out["tokens"], out["attn_mask"], resp)

    def step():
        sync(device)
        t0 = time.perf_counter()
        roll = compute_advantages(rollout(policy, ref, value, prompts, reward_fn, pcfg, tok, gen), pcfg)
        sync(device)
        t1 = time.perf_counter()
        ppo_update(policy, value, opt, roll, pcfg, 0)
        sync(device)
        step.phases = dict(t_rollout=round(t1 - t0, 4), t_update=round(time.perf_counter() - t1, 4))
        step.phases["rollout_tok_per_s"] = round(roll["mask"].sum().item() / (t1 - t0))
    return step


def measure(cfg, device):
    build = {"sft": sft_step, "rm": rm_step, "ppo": ppo_step}[cfg.stage]
    step = build(cfg, device)
    step()  # warm-up (allocator, kernels)
    times = []
    for _ in range(cfg.repeats):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return dict(stage=cfg.stage, size=cfg.size, median_s=statistics.median(times), min_s=min(times),
                max_s=max(times), peak_gb=peak_memory_gb(device), **getattr(step, "phases", {}))


# -----------------------------------------------------------------------------
# the computed table (no GPU at hand): memory and time, marked as estimates


def n_params(size):
    n_layer, _, C = SHAPES[size]
    return 12 * n_layer * C * C + 13 * n_layer * C + VOCAB * C + 1024 * C  # blocks + LayerNorms/biases + embeddings


def estimate(size, stage, batch, seq, minibatch=16, response=64, gpu_peak=989e12, util=0.4, offload=False):
    """-> (GiB, seconds) for one step of `stage` at `batch` sequences of `seq` tokens (PPO:
    `batch` rollouts, trained in minibatches of `minibatch`), bf16 autocast, fp32 weights,
    AdamW. util: the fraction of the GPU's bf16 peak assumed reached."""
    n_layer, _, C = SHAPES[size]
    N = n_params(size)
    trained = 16 * N  # fp32 weights 4 + grads 4 + AdamW m and v 8 bytes per parameter
    acts = lambda tokens: 34 * tokens * C * n_layer  # noqa: E731  kept for backward, per trunk (flash attention)
    flops = lambda tokens: 6 * N * tokens + 12 * n_layer * C * seq * tokens  # noqa: E731  forward + backward
    speed = gpu_peak * util
    if stage == "sft":  # + the logits: bf16, their fp32 copy for the loss, its gradient (10 bytes each)
        return (trained + acts(batch * seq) + 10 * batch * seq * VOCAB) / 2**30, flops(batch * seq) / speed
    if stage == "rm":  # 2 responses per prompt, the paper's RM (no logits: --lm_feature=False)
        return (trained + acts(2 * batch * seq)) / 2**30, flops(2 * batch * seq) / speed
    # ppo: policy and value train, reference and RM frozen (fp32 weights). The peak is the larger
    # of the rollout's no-grad log-prob pass over the whole batch (its logits) and a minibatch's
    # training (two trunks' activations, the policy's logits with log-softmax and entropy: ~14 bytes)
    rollout = 10 * batch * seq * VOCAB
    train = 2 * acts(minibatch * seq) + 14 * minibatch * seq * VOCAB
    mem = 2 * trained + (0 if offload else 2 * 4 * N) + max(rollout, train)
    decode = response * 2 * N / 2e12 * 3  # memory-bound decode steps (bf16 weights ~2 TB/s), x3 for launches
    scoring = 3 * 2 * N * batch * seq / speed  # policy, reference, RM forward over the rollouts
    return mem / 2**30, decode + scoring + 2 * flops(batch * seq) / speed  # policy + value trained on every rollout


def fits(size, stage, batch, seq, cap_gb):
    """Does one step fit in cap_gb (7% kept for the CUDA context and fragmentation), and if not,
    with what: --grad_accum (micro-batches of 1; for PPO gradient accumulation is an exercise), then
    for PPO also offloading the frozen models to CPU memory (an exercise too: docs/exercises.md)."""
    cap = 0.93 * cap_gb
    if estimate(size, stage, batch, seq)[0] < cap:
        return "yes"
    small = dict(minibatch=1) if stage == "ppo" else {}
    b = batch if stage == "ppo" else 1
    if estimate(size, stage, b, seq, **small)[0] < cap:
        return "with --grad_accum" if stage != "ppo" else "with grad. accumulation"
    if stage == "ppo" and estimate(size, stage, b, seq, offload=True, **small)[0] < cap:
        return "with grad. accumulation + offloading"
    return "no"


def estimate_table():
    print("ESTIMATES, not measurements (bench_gpt2.py estimate()): one step, bf16 autocast, flash attention,\n"
          "fp32 AdamW; SFT/RM at batch 16 x 512 tokens; PPO: 64 rollouts of 64 prompt + 64 response tokens,\n"
          "minibatches of 16, all four models on the GPU; time at 40% of the bf16 peak\n"
          "(H100 989 TFLOP/s; a 24 GB RTX 4090 165 TFLOP/s)\n")
    print("| model | stage | memory (GiB) | fits 24 GB | fits 80 GB | s/step, 24 GB card | s/step, H100 |")
    print("|---|---|---|---|---|---|---|")
    for size in ("124M", "355M", "774M"):
        for stage, batch, seq in (("sft", 16, 512), ("rm", 16, 512), ("ppo", 64, 128)):
            gb, s_h100 = estimate(size, stage, batch, seq)
            s_4090 = estimate(size, stage, batch, seq, gpu_peak=165e12)[1]
            print(f"| GPT-2 {size} | {stage} | {gb:.1f} | {fits(size, stage, batch, seq, 24)} | "
                  f"{fits(size, stage, batch, seq, 80)} | {s_4090:.2f} | {s_h100:.2f} |")


def main():
    cfg = parse_config(BenchGPT2Config())
    if cfg.size not in SHAPES or cfg.stage not in ("sft", "rm", "ppo", "all") or cfg.repeats < 1:
        sys.exit(f"error: --size must be one of {list(SHAPES)}, --stage sft, rm, ppo or all, --repeats >= 1")
    if cfg.estimate:
        return estimate_table()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = get_device(cfg.device)
    if cfg.stage != "all":  # a child: one stage, one JSON line
        torch.manual_seed(0)
        print("RESULT " + json.dumps(measure(cfg, device)))
        return
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | threads {torch.get_num_threads()} | "
          f"GPT-2 {cfg.size} shapes: {n_params(cfg.size) / 1e6:.0f}M parameters, random weights")
    rows = []
    for stage in ("sft", "rm", "ppo"):
        args = [f"--{k}={v}" for k, v in asdict(cfg).items() if k != "stage"] + [f"--stage={stage}"]
        r = subprocess.run([sys.executable, os.path.abspath(__file__)] + args, capture_output=True, text=True)
        line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{stage}: failed\n{r.stderr[-2000:]}")
            continue
        rows.append(json.loads(line[7:]))
        x = rows[-1]
        print(f"{stage:>4}: {x['median_s']:7.2f} s (min {x['min_s']:.2f}, max {x['max_s']:.2f}, {cfg.repeats} "
              f"repeats) | peak {'GPU memory' if device.startswith('cuda') else 'RSS'} {x['peak_gb']:.2f} GiB")


if __name__ == "__main__":
    main()
