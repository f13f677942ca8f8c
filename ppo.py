"""
Step 3: reinforcement learning from the reward model with PPO and PPO-ptx -- paper
Section 3.5, every term written out.

The environment is a bandit: sample a prompt, the policy writes a response, the reward
model scores it, the episode ends. The paper maximises

    objective(phi) = E_(x,y)~pi_RL [ r_theta(x, y) - beta * log( pi_RL(y|x) / pi_SFT(y|x) ) ]
                   + gamma_ptx * E_x~D_pretrain [ log pi_RL(x) ]

with PPO. One iteration of `main` picks 1. a batch of prompts, then makes three calls,
their steps numbered as in the code:
  `rollout`               2. responses (KV cache, EOS)  3. reward-model scores
  `compute_advantages`    4. per-token KL penalty + score at the end  5. GAE, returns, whitening
  `ppo_update`            6. PPO epochs: clipped policy + value losses  7. the ptx term in the same step

    python ppo.py                                    # plain PPO: out/sft.pt + out/rm.pt -> out/ppo.pt
    python ppo.py --ptx_coef=1.0 --out=out/ppo_ptx.pt   # PPO-ptx (--kl_coef=0: watch the RM get gamed)
    python ppo.py --iters=2 --batch_size=8 --minibatch_size=4   # tiny; --help lists every option
    python ppo.py --prompts=my_prompts.jsonl               # your own {"prompt": ...} lines (no gold score logged)
    python ppo.py --reward=gold --ptx_coef=1.0 --out=out/ppo_oracle.pt   # ORACLE diagnostic (below)
    torchrun --nproc_per_node=2 ppo.py --device=cpu        # data parallel (ddp.py): each rank rolls out its share

Switches that served one experiment (adaptive beta, an entropy bonus, the policy EMA, ...)
are exercises in docs/exercises.md, with the lines to add. Symbols: B rollouts per
iteration, P padded prompt length, R response length, T = P + R, V vocab. `response_mask`
(B, R) is 1 on response tokens up to and including EOS: every mean over tokens uses it.

Where we follow the paper / Ziegler et al. 2019, and where we deviate (the measurements
behind each: docs/experiments.md, sections 3, 4 and 9):
1. Follow: policy and frozen reference start from SFT, the value model from the RM.
   Add (Ziegler et al.): the first --value_warmup iterations fit only the value model,
   unclipped. The RM was trained at the last token only; read at every position it is far
   from the returns, so the first advantages would be mostly value error (the EOS token's
   turns negative and PPO learns not to stop). Add: the policy's lr ramps up over its first
   --lr_warmup steps: Adam's first step moves every weight by about +-lr whatever its
   gradient, which pushes some PPO ratios far outside the clip.
2. Follow: per-token reward r_t = -beta * (log pi - log pi_SFT), the RM score added at the
   last response token, a fixed beta; GAE with gamma = 1, lambda = 0.95; advantages
   whitened (biased variance); clip 0.2 for ratio and value; dropout off; the old log-probs
   are the sampler's, at the sampling temperature (a fresh forward checks them).
3. Follow: PPO-ptx adds the LM loss on pretraining text to the same optimizer step, and
   Ziegler's EOS trick gives a response that never ends a fixed penalty, not its score.
4. Deviate: 256k episodes of batch 512 -> a few thousand of batch 64 (16 prompts x 4
   answers) to fit a CPU; one epoch of 4 minibatches as in the paper, at lr 2e-4; the
   value model has its own larger lr (--vf_lr, as DeepSpeed-Chat allows); gamma_ptx 1.0,
   not 27.8 (our losses have other scales); no policy EMA (the paper's 0.992 mostly
   delays learning in our few iterations). --advantage=rloo: a leave-one-out baseline
   over the k answers to a prompt instead of the value model, for comparison.
5. Deviate: beta = 0.1, not 0.02. Our RM is far weaker than the paper's, and at 0.02 the
   policy finds its blind spots (polite openers, then worse content); a larger beta keeps
   the policy where the RM is right more often.
6. Add, a diagnostic no real project has: --reward=gold scores with the world's noise-free
   gold judge ((gold - 4) / 2: the RM's scale): how much of the gap is the RM's fault. Its
   config, log lines and report row say ORACLE; nothing in the real pipeline is chosen by it.
"""

import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

import ddp
from common import (autocast, clock, die, get_device, lr_at, parse_config, precision_name, print_config,
                    resume, rng_state, save_checkpoint, seed_everything)
from corpus import get_batch
from data import has_meta
from data.labelers import judge
from model import generate, last_token_index, response_logprobs
from policy import show_samples
from ppo_utils import REMOVED, check_config, load_data, load_models, log_iteration, reward_function, sampler_error
from tokenizer import decode_responses, render

GRAD_CLIP = 1.0  # max global gradient norm of each optimizer step (policy and value together)


@dataclass
class PPOConfig:
    policy: str = "out/sft.pt"  # SFT checkpoint: the starting policy AND the frozen reference
    rm: str = "out/rm.pt"  # reward model (reward.py; its demonstration-mean bias is in the head)
    reward: str = "rm"  # "rm" (the paper), or "gold": ORACLE diagnostic, the gold judge's score (deviation 6)
    prompts: str = "data/world/ppo_prompts.jsonl"
    ptx_data: str = "data/world/corpus_train.txt"  # pretraining text for the ptx term
    out: str = "out/ppo.pt"
    iters: int = 30  # PPO iterations (each: one batch of rollouts)
    batch_size: int = 64  # rollouts per iteration, over all ranks (paper: 512)
    minibatch_size: int = 16  # rollouts per optimizer step, over all ranks (paper: 64)
    grad_accum: int = 1  # split each minibatch into N micro-batches: same step, 1/N of the activation memory
    samples_per_prompt: int = 4  # k responses to each prompt in a batch (batch_size / k distinct prompts)
    ppo_epochs: int = 1  # passes over each batch (paper: 1)
    lr: float = 2e-4  # policy learning rate; linear decay to 0 over the iterations
    lr_warmup: int = 24  # the policy's lr ramps up over its first N optimizer steps (Adam's first steps are sign-sized)
    vf_lr: float = 5e-4  # value model learning rate (0 = same as lr); linear decay to 0
    value_warmup: int = 5  # first N iterations train only the value model (unclipped), policy frozen
    kl_coef: float = 0.1  # beta: per-token KL penalty against the SFT model (paper: 0.02; deviation 5)
    ptx_coef: float = 0.0  # gamma_ptx: weight of the pretraining LM loss (0 = plain PPO; paper 27.8)
    ptx_batch_size: int = 8  # pretraining windows per minibatch
    lam: float = 0.95  # GAE lambda (gamma is 1: the bandit has no discount)
    cliprange: float = 0.2  # epsilon of the policy ratio clip and of the value clip (the paper: 0.2 both)
    vf_coef: float = 0.1  # weight of the value loss
    advantage: str = "gae"  # "gae" (value model, the paper) or "rloo": leave-one-out over the k samples of a prompt
    temperature: float = 1.0  # sampling temperature, also used when recomputing log-probs
    max_new_tokens: int = 48
    eos_trick: bool = True  # a response that never emits EOS gets no_eos_penalty instead of its RM score
    no_eos_penalty: float = -3.0  # that fixed score (in RM units: demonstrations score 0 on average)
    seed: int = 1337
    device: str = "auto"
    resume: bool = False


# -----------------------------------------------------------------------------
# the math, as pure functions (tests check each against a hand-worked example)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x, mask, total=lambda t: t):
    """(x - mean) / std over the masked entries, with the BIASED variance (unbiased=False),
    as lm-human-preferences does (TRL divides by n - 1). `total` turns a sum over this
    batch into the sum the statistics are taken over: the batch itself by default, every
    rank's rollouts together under torchrun (main passes ddp.all_sum)."""
    n = total(mask.sum()).clamp(min=1)
    mean = total((x * mask).sum()) / n
    var = total(((x - mean) ** 2 * mask).sum()) / n  # biased: divide by n, not n - 1
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """
    Generalised advantage estimation, the reverse loop. rewards, values, mask: (B, R);
    the mask is 1 on a prefix of each row (the response), 0 after it.

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last token = 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V                               (the value function's target)

    Worked example, one row, gamma = lam = 1:
        gae([[0, 0, 1]], values=[[0.5, 0.5, 0.5]], mask=[[1, 1, 1]])
        deltas = [0 + 0.5 - 0.5, 0 + 0.5 - 0.5, 1 + 0 - 0.5] = [0, 0, 0.5]
        -> advantages [[0.5, 0.5, 0.5]], returns [[1, 1, 1]]
    """
    values = values * mask  # no value (and no bootstrap) past the end of the response
    rewards = rewards * mask
    B, R = rewards.shape
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype, device=rewards.device)  # A_{t+1}
    for t in reversed(range(R)):
        next_value = values[:, t + 1] if t + 1 < R else torch.zeros_like(last)  # V_{t+1}
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # TD error at t
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def rloo_advantages(returns, k):
    """
    REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024): returns (B,) of B / k
    prompts, each with k consecutive responses -> (B,) advantages R_i - mean_{j != i} R_j.
    The other answers to the same prompt are the baseline: no value model needed.
        rloo_advantages([1, 0, 3, 5], k=2) -> [1, -1, -2, 2]
    """
    grp = returns.view(-1, k)  # (B / k, k)
    baseline = (grp.sum(1, keepdim=True) - grp) / (k - 1)  # (B / k, k): mean of the other k - 1
    return (grp - baseline).reshape(-1)  # (B,)


def kl_rewards(logprobs, ref_logprobs, scores, mask, kl_coef):
    """
    Per-token reward: r_t = -beta * (log pi(a_t) - log pi_SFT(a_t)) on every response token,
    plus the sequence's score on its LAST response token. logprobs, ref_logprobs, mask: (B, R);
    scores: (B,). Returns (rewards (B, R), kl (B, R) = the k1 estimate per token).
    """
    kl = (logprobs - ref_logprobs) * mask  # (B, R) k1: log pi - log pi_ref
    rewards = -kl_coef * kl  # (B, R)
    last = last_token_index(mask)  # (B,) last response token of each row
    rewards[torch.arange(len(scores)), last] += scores  # the RM's verdict arrives at the end
    return rewards * mask, kl


def policy_loss(logprobs, old_logprobs, advantages, mask, cliprange):
    """
    PPO's clipped surrogate. ratio = pi_new / pi_old per token; the loss is the worse
    (larger) of -A * ratio and -A * clip(ratio, 1 - eps, 1 + eps): once the ratio moves past
    the clip in the direction that helps, the gradient is exactly zero.
    Returns (pg_loss, clipfrac, approxkl, ratio).
    """
    log_ratio = (logprobs - old_logprobs) * mask  # (B, R)
    ratio = torch.exp(log_ratio)  # (B, R), exactly 1 on the first minibatch of the first epoch
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
    clipfrac = masked_mean((pg_losses2 > pg_losses).float(), mask)  # where the clip is active
    approxkl = 0.5 * masked_mean(log_ratio**2, mask)
    return pg_loss, clipfrac, approxkl, ratio


def value_loss(vpred, old_values, returns, mask, cliprange_value):
    """Clipped value loss: 0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped within
    cliprange_value of the value at rollout time."""
    vclipped = old_values + torch.clamp(vpred - old_values, -cliprange_value, cliprange_value)
    vf_losses = torch.max((vpred - returns) ** 2, (vclipped - returns) ** 2)
    vf_clipfrac = masked_mean(((vpred - returns) ** 2 < (vclipped - returns) ** 2).float(), mask)
    return 0.5 * masked_mean(vf_losses, mask), vf_clipfrac


def k3(logprobs, ref_logprobs):
    """k3 = (ratio - 1) - log ratio with ratio = pi_ref / pi: unbiased for KL(pi || pi_ref)
    like k1 = log pi - log pi_ref, but never negative, with lower variance (Schulman 2020)."""
    log_r = ref_logprobs - logprobs
    return torch.expm1(log_r) - log_r  # expm1: exp(x) - 1 without the rounding that makes tiny values < 0


# -----------------------------------------------------------------------------
# one iteration in three steps: rollout -> advantages -> ppo_update


@torch.no_grad()
def rollout(policy, ref, value, prompt_ids, reward_fn, cfg, tok, generator, sampling=None):
    """
    Steps 2-3 for one batch of prompts (lists of token ids): the policy answers, reward_fn
    scores (reward_fn(out) -> (B,) for the dict `out` of model.generate), and the frozen
    reference and the value model read the answers. Returns `out` with, added, (B, R):
    mask, logprobs (the sampler's), ref_logprobs, values; (B,): scores, rm_raw.
    `sampling`: extra arguments for generate (ddp.sampling under torchrun).
    """
    dev = next(policy.parameters()).device.type
    policy.eval()
    with autocast(dev):
        # 2. the policy answers each prompt, stopping at EOS
        out = generate(policy, prompt_ids, cfg.max_new_tokens, tok.eot_id, tok.pad_id,
                       temperature=cfg.temperature, generator=generator, **(sampling or {}))
        tokens, attn, P = out["tokens"], out["attn_mask"], out["prompt_len"]  # (B, T), (B, T), int
        mask = out["response_mask"].float()  # (B, R)

        # 3. score: the RM at the last token; the EOS trick for responses that ran out of room
        rm_raw = reward_fn(out).float()  # (B,)
        scores = rm_raw
        if cfg.eos_trick:
            scores = torch.where(out["ended"], rm_raw, torch.full_like(rm_raw, cfg.no_eos_penalty))

        # every later forward runs at the SAME temperature as the sampler
        ref_logprobs = response_logprobs(ref, tokens, attn, P, cfg.temperature).float()  # (B, R)
        # V(s_t) for the state before response token t: same off-by-one as the log-probs
        values = value(tokens, attn)[:, P - 1 : -1].float()  # (B, R)
    # the old log-probs are the sampler's (as in TRL): what the tokens were drawn from
    return dict(out, mask=mask, logprobs=out["logprobs"].float(), ref_logprobs=ref_logprobs, values=values,
                scores=scores, rm_raw=rm_raw)


def compute_advantages(roll, cfg, total=lambda t: t):
    """
    Steps 4-5: the per-token KL reward, GAE (or RLOO) advantages, whitened, and the value
    targets. Adds rewards, kl, advantages, returns (each (B, R)) to the rollout dict `roll`.
    `total`: see masked_whiten (ddp.all_sum under torchrun).
    """
    mask = roll["mask"]
    # 4. per-token KL penalty; the score added at the last response token
    rewards, kl = kl_rewards(roll["logprobs"], roll["ref_logprobs"], roll["scores"], mask, cfg.kl_coef)  # (B, R)
    # 5. GAE and returns (gamma = 1: the bandit has no discount), advantages whitened
    adv, returns = gae(rewards, roll["values"], mask, 1.0, cfg.lam)  # (B, R) each
    if cfg.advantage == "rloo":  # every token of response i gets R_i - mean of the prompt's other k-1 R_j
        adv = rloo_advantages(rewards.sum(1), cfg.samples_per_prompt)[:, None] * mask  # (B, R)
    roll.update(rewards=rewards, kl=kl, advantages=masked_whiten(adv, mask, total), returns=returns)
    return roll


def minibatch_loss(policy, value, roll, idx, cfg, value_only=False):
    """
    Step 6 for the rollouts `idx` of `roll`: a forward pass of the value model and (after the
    warm-up) of the policy, then the clipped value loss and the clipped policy loss.
    Returns (loss, stats: tensors named as in the log). In the value warm-up the loss is the
    value loss alone, with no value clip, and the policy does not run at all.
    """
    dev, P, mask = roll["tokens"].device.type, roll["prompt_len"], roll["mask"][idx]
    tokens, attn = roll["tokens"][idx], roll["attn_mask"][idx]
    with autocast(dev):
        vpred = value(tokens, attn)[:, P - 1 : -1].float()  # V(s_t), the same off-by-one as the log-probs
    vf_loss, vf_clipfrac = value_loss(vpred, roll["values"][idx], roll["returns"][idx], mask,
                                      float("inf") if value_only else cfg.cliprange)
    if value_only:
        return vf_loss, dict(vf_loss=vf_loss, vf_clipfrac=vf_clipfrac)
    with autocast(dev):
        new_logprobs, entropy = response_logprobs(policy, tokens, attn, P, cfg.temperature, return_entropy=True)
    pg_loss, clipfrac, approxkl, ratio = policy_loss(new_logprobs.float(), roll["logprobs"][idx],
                                                     roll["advantages"][idx], mask, cfg.cliprange)
    loss = pg_loss + cfg.vf_coef * vf_loss
    return loss, dict(pg_loss=pg_loss, vf_loss=vf_loss, clipfrac=clipfrac, approxkl=approxkl,
                      entropy=masked_mean(entropy, mask), vf_clipfrac=vf_clipfrac, ratio_max=(ratio * mask).max(),
                      ratio_err=((ratio - 1).abs() * mask).max())


def learning_rates(cfg, it, policy_step):
    """(policy lr, value lr) at iteration `it` (from 0), the policy's `policy_step`-th optimizer
    step (from 1): both decay linearly to 0 over the iterations, and the policy's also ramps
    up over its first --lr_warmup steps (deviation 1)."""
    ramp = min(1.0, policy_step / cfg.lr_warmup) if cfg.lr_warmup and policy_step > 0 else 1.0
    return lr_at(it, cfg.iters, cfg.lr) * ramp, lr_at(it, cfg.iters, cfg.vf_lr or cfg.lr)


def ppo_update(policy, value, opt, roll, cfg, it, ptx=None):
    """
    Steps 6-7: --ppo_epochs passes over the batch `roll` in shuffled minibatches, one
    optimizer step each (policy and value together, their lrs from `learning_rates`);
    PPO-ptx adds the pretraining LM loss to each step: ptx = (token stream, window length,
    the rollout generator, which seeds the windows). `policy`, `value`: the modules the
    training forward goes through (their DDP wrappers under torchrun). Iterations before
    --value_warmup train the value model alone. Returns the minibatches' mean stats.
    """
    value_only = it < cfg.value_warmup
    policy.train()  # dropout is 0 in PPO: this states the intent more than it changes anything
    device, mask, B = roll["tokens"].device, roll["mask"], len(roll["tokens"])
    mb_size = ddp.per_rank(cfg.minibatch_size)  # rollouts per optimizer step (this rank's, under torchrun)
    steps_per_iter = cfg.ppo_epochs * math.ceil(B / mb_size)
    mb_stats, step = [], 0
    # 6. PPO epochs over shuffled minibatches: one optimizer step each, policy and value together
    for epoch in range(cfg.ppo_epochs):
        perm = torch.randperm(B)  # global torch RNG: seeded, and saved in the checkpoint
        for s in range(0, B, mb_size):
            step += 1
            policy_step = (it - cfg.value_warmup) * steps_per_iter + step  # <= 0 in the value warm-up
            opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = learning_rates(cfg, it, policy_step)
            micro = ddp.micro_batches(perm[s : s + mb_size].to(device), cfg.grad_accum)  # --grad_accum: less memory
            opt.zero_grad(set_to_none=True)
            for idx, weight, last in ddp.accumulate(micro, [mask[i].sum().item() for i in micro], policy, value):
                loss, st = minibatch_loss(policy, value, roll, idx, cfg, value_only)
                loss = loss * weight  # 1 with one process and one micro-batch

                # 7. PPO-ptx: the pretraining LM loss joins the same step (gamma_ptx * -log pi(x))
                st["ptx_loss"] = torch.zeros((), device=device)
                if cfg.ptx_coef > 0 and ptx is not None and not value_only and last:
                    stream, ctx, gen = ptx
                    n_ptx = ddp.per_rank(cfg.ptx_batch_size)  # windows (this rank's share)
                    x, y = get_batch(stream, n_ptx, ctx, ddp.data_generator(gen))
                    with autocast(device.type):
                        _, st["ptx_loss"] = policy(x.to(device), y.to(device))
                    loss = loss + cfg.ptx_coef * st["ptx_loss"]
                if not torch.isfinite(loss):
                    raise FloatingPointError("non-finite loss (" + ", ".join(f"{k} {v.item()}" for k, v in st.items())
                                             + ")")
                loss.backward()
                mb_stats.append({k: v.detach().float() for k, v in st.items()})  # read back once, after the epochs
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], GRAD_CLIP)
            opt.step()
    out = {k: torch.stack([st[k] for st in mb_stats]).mean().item() for k in mb_stats[0]
           if k not in ("ratio_max", "ratio_err")}
    if not value_only:  # the first minibatch of the first epoch: the ratio must be exactly 1
        out.update(ratio_max=torch.stack([st["ratio_max"] for st in mb_stats]).max().item(),
                   ratio_start_err=mb_stats[0]["ratio_err"].item())
    return out


def rollout_stats(roll):
    """What a practitioner without a gold judge can see of a batch of rollouts."""
    mask, returns = roll["mask"], roll["returns"]
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    explained_var = 1 - masked_mean((returns - roll["values"]) ** 2, mask) / var_returns.clamp(min=1e-8)
    return dict(score=roll["scores"].mean().item(), rm_score=roll["rm_raw"].mean().item(),
                kl=roll["kl"].sum(1).mean().item(),  # k1 per response
                kl_k3=(k3(roll["logprobs"], roll["ref_logprobs"]) * mask).sum(1).mean().item(),
                reward=roll["rewards"].sum(1).mean().item(), explained_var=explained_var.item(),
                resp_len=mask.sum(1).clamp(min=1).mean().item(), eos_rate=roll["ended"].float().mean().item())


# -----------------------------------------------------------------------------
# the loop: rollout -> advantages -> ppo_update, log, checkpoint


def main():
    cfg = parse_config(PPOConfig(), removed=REMOVED)
    device = ddp.setup(get_device(cfg.device))  # under torchrun: join the group; rank 0 alone prints
    check_config(cfg)  # after setup: it checks the batch divides over the ranks
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | ranks {ddp.world()}")
    seed_everything(cfg.seed + ddp.rank())  # per-rank minibatch order; rollouts share one generator (below)
    policy, ref, rm, value, opt, tok = load_models(cfg, device)
    train_policy, train_value = ddp.wrap(policy), ddp.wrap(value)  # one process: policy and value themselves
    recs, ptx_stream = load_data(cfg, tok, policy.config.block_size)
    reward_fn, oracle, gold_known = reward_function(cfg, rm, tok, device), cfg.reward == "gold", has_meta(recs)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)  # the rollouts' (and ptx windows') random numbers
    ptx = (ptx_stream, policy.config.block_size // 2, gen) if ptx_stream is not None else None  # half-context windows
    rng, start, history = random.Random(cfg.seed), 0, []
    ck = resume(cfg.out, "ppo", device, policy, opt) if cfg.resume else None
    if ck:
        value.load_state_dict(ck["value_model"])
        gen.set_state(ck["gen_state"])
        rng.setstate(ck["py_rng"])
        start, history = ck["iter"], ck["history"]
        ddp.reseed(cfg.seed, start)  # under torchrun every rank gets its own minibatch order again
    log_path, k, every = os.path.splitext(cfg.out)[0] + "_log.jsonl", cfg.samples_per_prompt, max(1, cfg.iters // 3)
    lp_tol = 0.1 if "bf16" in precision_name(device) else 1e-2  # sampler vs fresh forward (sampler_error)
    t_start, bar = time.time(), tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc="ppo",
                                     dynamic_ncols=True, disable=ddp.no_bar())
    for it in bar:
        # 1. a batch of prompts (one seed: the same on every rank), k answers each; each rank answers its block
        chosen = rng.sample(recs, min(cfg.batch_size // k, len(recs)))
        first, stop = ddp.shard_range(len(chosen))  # one process: 0, len(chosen)
        batch = [r for r in chosen[first:stop] for _ in range(k)]
        t0, prompt_ids = clock(device), [render(tok, r["prompt"])[0] for r in batch]
        sampling = ddp.sampling(gen, first * k, len(chosen) * k)  # one process: {}
        score = lambda out: reward_fn(out, batch)  # noqa: E731  the RM (or the ORACLE) on this batch
        roll = rollout(policy, ref, value, prompt_ids, score, cfg, tok, gen, sampling)
        roll = compute_advantages(roll, cfg, total=ddp.all_sum)  # whitened over every rank's rollouts
        stats = rollout_stats(roll)
        if it == start or (it + 1) % every == 0:  # measures only: the old log-probs stay the sampler's
            stats["sample_lp_err"] = sampler_error(policy, roll, cfg)
        t1 = clock(device)
        try:
            stats.update(ppo_update(train_policy, train_value, opt, roll, cfg, it, ptx))
        except FloatingPointError as e:
            die(f"iteration {it + 1}: {e}; stopping. The last good checkpoint is {cfg.out}")
        stats.update(kl_coef=cfg.kl_coef, t_rollout=t1 - t0, t_update=clock(device) - t1)  # rollout: steps 2-5
        stats = ddp.all_mean(stats)  # logged numbers: the mean over ranks
        if not all(math.isfinite(v) for v in stats.values()):
            die(f"iteration {it + 1}: non-finite statistics {stats}; the last good checkpoint is {cfg.out}")
        texts = decode_responses(tok, roll)
        if gold_known:  # measurement only: the noise-free gold judge (PPO never sees it, unless ORACLE)
            gold = sum(judge(r, t)["score"] for r, t in zip(batch, texts)) / len(batch)
            stats["gold"] = ddp.all_mean({"g": gold})["g"]
        if not ddp.is_main():  # rank 0 alone logs and writes checkpoints
            continue
        stats.update(iter=it + 1, elapsed_s=time.time() - t_start, phase="value_warmup" if it < cfg.value_warmup
                     else "ppo", **({"reward_source": "gold (ORACLE)"} if oracle else {}))
        history.append(stats)
        log_iteration(stats, it, cfg.iters, log_path, bar.write, lp_tol)
        if it == 0 or (it + 1) % every == 0:
            show_samples(batch, texts, [f"score {roll['scores'][i].item():+.2f}, kl {roll['kl'][i].sum().item():.2f}"
                                        for i in range(min(2, len(batch)))], write=bar.write)
        # atomic checkpoint after every good iteration: an interrupted run loses at most one
        save_checkpoint(dict(stage="ppo", model=policy.state_dict(), model_config=asdict(policy.config),
                             tokenizer=tok.to_dict(), config=asdict(cfg), value_model=value.state_dict(),
                             optimizer=opt.state_dict(), iter=it + 1, history=history, rng=rng_state(),
                             gen_state=gen.get_state(), py_rng=rng.getstate()), cfg.out)
    bar.close()
    if history and ddp.is_main():
        h0, h1 = history[0], history[-1]
        print(f"done in {time.time() - t_start:.0f}s: RM score {h0['score']:+.3f} -> {h1['score']:+.3f} | "
              f"KL {h1['kl']:.3f}" + (f" | gold {h0['gold']:.3f} -> {h1['gold']:.3f}" if "gold" in h1 else "")
              + f" | saved {cfg.out}, log {log_path}")
    ddp.cleanup()


if __name__ == "__main__":
    main()
