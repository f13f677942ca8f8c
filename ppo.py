"""
Step 3: reinforcement learning from the reward model with PPO and PPO-ptx -- paper
Section 3.5, every term written out.

The environment is a bandit: sample a prompt, the policy writes a response, the reward
model scores it, the episode ends. The paper maximises

    objective(phi) = E_(x,y)~pi_RL [ r_theta(x, y) - beta * log( pi_RL(y|x) / pi_SFT(y|x) ) ]
                   + gamma_ptx * E_x~D_pretrain [ log pi_RL(x) ]

with PPO. One iteration of `main` picks 1. a batch of prompts, then makes three calls:
  `rollout`              2. responses (KV cache, EOS)  3. reward-model scores
  `compute_advantages`   4. per-token KL penalty, score at the end  5. GAE, returns, whitening
  `ppo_update`           6. PPO epochs: clipped policy + value losses  7. the ptx term, same step

    python ppo.py                                    # plain PPO: out/sft.pt + out/rm.pt -> out/ppo.pt
    python ppo.py --ptx_coef=1.0 --out=out/ppo_ptx.pt   # PPO-ptx
    python ppo.py --kl_coef=0 --out=out/ppo_beta0.pt    # no KL penalty: watch the RM get gamed
    python ppo.py --iters=2 --batch_size=8 --minibatch_size=4   # tiny; --help lists every option
    python ppo.py --reward=gold --ptx_coef=1.0 --out=out/ppo_oracle.pt   # ORACLE diagnostic (below)
    torchrun --nproc_per_node=2 ppo.py --device=cpu        # 2 processes, each rolls out its own prompts

Symbols: B rollouts, P padded prompt length, R response length, T = P + R, V vocab. The
mask (B, R) is 1 on response tokens up to and including EOS: every mean over tokens uses
it. Adaptive beta, RLOO, an entropy bonus, a policy EMA: exercises in docs/exercises.md.

Where we follow the paper / Ziegler et al. 2019, and where we deviate (the measurements
behind each: docs/experiments.md, sections 3, 4 and 9):
1. Follow: policy and frozen reference start from SFT, the value model from the RM; per-token
   reward r_t = -beta * (log pi - log pi_SFT) with the RM score added at the last response
   token, a fixed beta; GAE with gamma = 1, lambda = 0.95; advantages whitened (biased
   variance); clip 0.2 for ratio and value; dropout off; the old log-probs are the sampler's,
   at the sampling temperature; PPO-ptx's LM loss in the same optimizer step; Ziegler's EOS
   trick (a response that never ends gets a fixed penalty, not its score).
2. Add (Ziegler et al.): the first --value_warmup iterations fit only the value model,
   unclipped. The RM was trained at the last token only; read at every position it is far
   from the returns, so the first advantages would be mostly value error (the EOS token's
   turns negative and PPO learns not to stop). And the policy's lr ramps up over its first
   --lr_warmup steps: Adam's first step moves every weight by about +-lr whatever its
   gradient, which pushes some PPO ratios far outside the clip.
3. Deviate: about 2,000 episodes (30 batches of 16 prompts x 4 answers), not 256k of 512,
   to fit a CPU; the value model has its own larger lr (--vf_lr, as DeepSpeed-Chat allows);
   gamma_ptx 1.0, not 27.8 (our losses have other scales); no policy EMA (the paper's 0.992
   mostly delays learning in our few iterations).
4. Deviate: beta = 0.1, not 0.02. Our RM is far weaker than the paper's, and at 0.02 the
   policy finds its blind spots (polite openers, then worse content); a larger beta keeps
   the policy where the RM is right more often.
5. Add, a diagnostic no real project has: --reward=gold scores with the world's noise-free
   gold judge (`reward_function`): how much of the gap is the RM's fault. Its config, log
   lines and report row say ORACLE; nothing in the real pipeline is chosen by it.
"""

import copy
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from common import (autocast, check_loss, clock, ddp_cleanup, ddp_mean, ddp_setup, die, encode_docs, get_batch,
                    get_device, log_line, lr_at, parse_config, precision_name, print_config, resume, save_checkpoint,
                    seed_everything, sync_gradients)
from data import DataError, has_meta, load_prompts, read_corpus
from data.labelers import judge
from model import generate, last_token_index, response_logprobs
from policy import load_policy, load_reward_model, show_samples
from tokenizer import decode_responses, render

GRAD_CLIP = 1.0  # max global gradient norm of each optimizer step (policy and value together)
SHOW_SAMPLES = 3  # times per run that a few samples are printed
GOLD_CENTRE, GOLD_SPREAD = 4.0, 2.0  # ORACLE: (gold - 4) / 2 maps the judge's 1-7 to about the RM's units


@dataclass
class PPOConfig:
    policy: str = "out/sft.pt"  # SFT checkpoint: the starting policy AND the frozen reference
    rm: str = "out/rm.pt"  # reward model (reward.py; its demonstration-mean bias is in the head)
    reward: str = "rm"  # "rm" (the paper), or "gold": ORACLE diagnostic, the gold judge's score (deviation 5)
    prompts: str = "data/world/ppo_prompts.jsonl"
    ptx_data: str = "data/world/corpus_train.txt"  # pretraining text for the ptx term
    out: str = "out/ppo.pt"
    iters: int = 30  # PPO iterations (each: one batch of rollouts)
    batch_size: int = 64  # rollouts per iteration, over all ranks (paper: 512)
    minibatch_size: int = 16  # rollouts per optimizer step, over all ranks (paper: 64)
    samples_per_prompt: int = 4  # k responses to each prompt in a batch (batch_size / k distinct prompts)
    ppo_epochs: int = 1  # passes over each batch (paper: 1)
    lr: float = 2e-4  # policy learning rate; linear decay to 0 over the iterations
    lr_warmup: int = 24  # the policy's lr ramps up over its first N optimizer steps (Adam's first steps are sign-sized)
    vf_lr: float = 5e-4  # value model learning rate (0 = same as lr); linear decay to 0
    value_warmup: int = 5  # first N iterations train only the value model (unclipped), policy frozen
    kl_coef: float = 0.1  # beta: per-token KL penalty against the SFT model (paper: 0.02; deviation 4)
    ptx_coef: float = 0.0  # gamma_ptx: weight of the pretraining LM loss (0 = plain PPO; paper 27.8)
    ptx_batch_size: int = 8  # pretraining windows per optimizer step (per rank)
    lam: float = 0.95  # GAE lambda (gamma is 1: the bandit has no discount)
    cliprange: float = 0.2  # epsilon of the policy ratio clip and of the value clip (the paper: 0.2 both)
    vf_coef: float = 0.1  # weight of the value loss
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


def masked_whiten(x, mask):
    """(x - mean) / std over the masked entries, with the BIASED variance (unbiased=False), as
    lm-human-preferences does (TRL divides by n - 1). Under torchrun each rank whitens its own."""
    n = mask.sum().clamp(min=1)
    mean = (x * mask).sum() / n
    var = ((x - mean) ** 2 * mask).sum() / n  # biased: divide by n, not n - 1
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
    ratio = torch.exp(log_ratio)  # (B, R), 1 (to rounding) on the first minibatch of the first epoch
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
def rollout(policy, ref, value, prompt_ids, score_fn, cfg, tok, generator):
    """Steps 2-3 for a batch of prompts (token-id lists) -> model.generate's dict, plus (B, R):
    mask, logprobs (the sampler's), ref_logprobs, values; (B,): scores, rm_raw = score_fn(out)."""
    dev = next(policy.parameters()).device.type
    policy.eval()
    with autocast(dev):
        # 2. the policy answers each prompt, stopping at EOS
        out = generate(policy, prompt_ids, cfg.max_new_tokens, tok.eot_id, tok.pad_id,
                       temperature=cfg.temperature, generator=generator)
        tokens, attn, P = out["tokens"], out["attn_mask"], out["prompt_len"]  # (B, T), (B, T), int
        mask = out["response_mask"].float()  # (B, R)

        # 3. score: the RM at the last token; the EOS trick for responses that ran out of room
        rm_raw = score_fn(out).float()  # (B,)
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


def compute_advantages(roll, cfg):
    """Steps 4-5: adds rewards, kl, advantages (whitened) and returns, each (B, R), to `roll`."""
    mask = roll["mask"]
    # 4. per-token KL penalty; the score added at the last response token
    rewards, kl = kl_rewards(roll["logprobs"], roll["ref_logprobs"], roll["scores"], mask, cfg.kl_coef)  # (B, R)
    # 5. GAE and returns (gamma = 1: the bandit has no discount), advantages whitened
    adv, returns = gae(rewards, roll["values"], mask, 1.0, cfg.lam)  # (B, R) each
    roll.update(rewards=rewards, kl=kl, advantages=masked_whiten(adv, mask), returns=returns)
    return roll


def minibatch_loss(policy, value, roll, idx, cfg, value_only=False):
    """Step 6 for the rollouts `idx` of `roll` -> (loss, stats named as in the log): clipped value
    and policy losses; in the value warm-up the value loss alone, unclipped (the policy does not run)."""
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
                      entropy=masked_mean(entropy, mask), vf_clipfrac=vf_clipfrac, ratio_max=(ratio * mask).max())


def learning_rates(cfg, it, policy_step):
    """(policy lr, value lr) at iteration `it` (from 0), the policy's `policy_step`-th optimizer
    step (from 1): both decay linearly to 0 over the iterations (lr_at's step is the iteration
    here), and the policy's also ramps up over its first --lr_warmup optimizer steps (deviation 2)."""
    ramp = min(1.0, policy_step / cfg.lr_warmup) if cfg.lr_warmup and policy_step > 0 else 1.0
    return lr_at(it, cfg.iters, cfg.lr) * ramp, lr_at(it, cfg.iters, cfg.vf_lr or cfg.lr)


def ppo_update(policy, value, opt, roll, cfg, it, ptx=None):
    """Steps 6-7: --ppo_epochs passes over `roll` in shuffled minibatches, one optimizer step each
    (policy and value together), plus PPO-ptx's LM loss on windows of ptx = (stream, length,
    generator). -> the minibatches' mean stats."""
    value_only = it < cfg.value_warmup
    policy.train()  # dropout is 0 in PPO: this states the intent more than it changes anything
    device, B = roll["tokens"].device, len(roll["tokens"])
    mb_size = max(1, B * cfg.minibatch_size // cfg.batch_size)  # this rank's share of a minibatch
    steps_per_iter = cfg.ppo_epochs * math.ceil(B / mb_size)
    params = [p for g in opt.param_groups for p in g["params"]]
    mb_stats, step = [], 0
    # 6. PPO epochs over shuffled minibatches: one optimizer step each, policy and value together
    for epoch in range(cfg.ppo_epochs):
        perm = torch.randperm(B).to(device)  # the global torch RNG: seeded with seed + rank
        for s in range(0, B, mb_size):
            step += 1
            policy_step = (it - cfg.value_warmup) * steps_per_iter + step  # <= 0 in the value warm-up
            opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = learning_rates(cfg, it, policy_step)
            loss, st = minibatch_loss(policy, value, roll, perm[s : s + mb_size], cfg, value_only)

            # 7. PPO-ptx: the pretraining LM loss joins the same step (gamma_ptx * -log pi(x))
            st["ptx_loss"] = torch.zeros((), device=device)
            if ptx is not None and not value_only:
                stream, ctx, gen = ptx
                # new windows every step, from a CPU generator seeded by the rollouts' one (which
                # may live on the GPU, where the windows' indices are not drawn)
                ptx_gen = torch.Generator().manual_seed(int(torch.randint(1 << 30, (1,), generator=gen,
                                                                          device=gen.device)))
                x, y = get_batch(stream, cfg.ptx_batch_size, ctx, ptx_gen)
                with autocast(device.type):
                    _, st["ptx_loss"] = policy(x.to(device), y.to(device))
                loss = loss + cfg.ptx_coef * st["ptx_loss"]
            check_loss(loss, f"ppo iteration {it + 1}", step, cfg.lr, cfg.out)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            mb_stats.append({k: v.detach().float() for k, v in st.items()})  # read back once, after the epochs
            sync_gradients(params)  # under torchrun: the mean over the ranks (one process: nothing)
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
    out = {k: torch.stack([st[k] for st in mb_stats]).mean().item() for k in mb_stats[0] if k != "ratio_max"}
    if not value_only:
        out["ratio_max"] = torch.stack([st["ratio_max"] for st in mb_stats]).max().item()
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
# the models, the data and the reward; what a practitioner without a gold judge watches


def check_config(cfg, world):
    if cfg.reward not in ("rm", "gold"):
        die(f"--reward must be 'rm' (the reward model) or 'gold' (the oracle diagnostic), got {cfg.reward!r}", 2)
    if cfg.batch_size % (world * cfg.samples_per_prompt) or cfg.batch_size % cfg.minibatch_size:
        die(f"--batch_size ({cfg.batch_size}) must be divisible by ranks x --samples_per_prompt ({world} x "
            f"{cfg.samples_per_prompt}) and by --minibatch_size ({cfg.minibatch_size})", 2)


def load_models(cfg, device):
    """The policy (trained) and its frozen reference, both SFT; the frozen reward model; the
    value model, a trained copy of the RM (the paper); one optimizer, a group for each."""
    policy, tok, _ = load_policy(cfg.policy, device, dropout=0.0)  # dropout off in PPO
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    rm, rm_ckpt = load_reward_model(cfg.rm, device)
    if rm_ckpt.get("tokenizer") != tok.to_dict():  # it would read the policy's token ids as other words
        die(f"{cfg.rm} was trained with another tokenizer than {cfg.policy}: train the RM from this SFT model")
    rm.requires_grad_(False)
    value = copy.deepcopy(rm).train().requires_grad_(True)
    value.lm_coef.requires_grad_(False)  # the value is the head alone (forward); lm_coef is for score
    groups = [dict(params=list(policy.parameters()), lr=cfg.lr),
              dict(params=list(value.parameters()), lr=cfg.vf_lr or cfg.lr)]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), weight_decay=0.0, eps=1e-5)  # nanoGPT's betas, TRL's eps
    print(f"policy {policy.num_params() / 1e6:.2f}M params | RM demonstration mean {rm_ckpt.get('demo_mean', 0):.3f}")
    return policy, ref, rm, value, opt, tok


def load_data(cfg, tok, block_size):
    """The PPO prompts that fit, and the pretraining tokens of the ptx term (or None)."""
    try:
        recs = load_prompts(cfg.prompts)
        ptx_stream = encode_docs(tok, read_corpus(cfg.ptx_data)) if cfg.ptx_coef > 0 else None
    except DataError as e:
        die(str(e))
    max_prompt = block_size - cfg.max_new_tokens
    recs = [r for r in recs if len(render(tok, r["prompt"])[0]) <= max_prompt]
    if not recs:
        die(f"{cfg.prompts}: no prompt fits in {max_prompt} tokens")
    if cfg.reward == "gold" and not has_meta(recs):
        die(f"--reward=gold needs the world's prompts (with 'meta'); {cfg.prompts} has none", 2)
    print(f"data: {len(recs)} PPO prompts"
          + (f", {len(ptx_stream):,} pretraining tokens for ptx" if ptx_stream is not None else "")
          + ("" if has_meta(recs) else "; no 'meta' in the prompts, so no gold score is logged"))
    return recs, ptx_stream


def reward_function(cfg, rm, tok, device):
    """reward(out, batch) -> (B,): the reward model's score of each rollout (`out` from
    model.generate), or with --reward=gold the ORACLE's: the gold judge's score in about the
    RM's units (demonstrations near 0, a spread of about 1)."""
    if cfg.reward == "gold":
        print("ORACLE: the reward is the gold judge's score, which no real project has (ppo.py, deviation 5)")
        return lambda out, batch: (torch.tensor([judge(r, t)["score"] for r, t in zip(
            batch, decode_responses(tok, out))], device=device) - GOLD_CENTRE) / GOLD_SPREAD

    def rm_score(out, batch):
        P = out["prompt_len"]  # rollout layout: left-padded prompt (B, P), then the response (B, R)
        response_mask = torch.cat([torch.zeros_like(out["attn_mask"][:, :P]),
                                   out["response_mask"].to(out["attn_mask"].dtype)], 1)  # (B, T)
        return rm.score(out["tokens"], out["attn_mask"], response_mask)
    return rm_score


def health_warnings(stats):
    """The classic RLHF bugs, seen in one iteration's stats -> the warnings to print."""
    warn = []
    if stats["kl"] < -0.5:  # k1 averages to KL >= 0 when the sampler and the recomputation agree
        warn.append(f"mean KL is negative ({stats['kl']:.3f}): the sampling settings and the log-prob "
                    "recomputation disagree (temperature? top-k/top-p? dropout on? different padding/positions?)")
    if stats.get("ratio_max", 0.0) > 10:
        warn.append(f"PPO ratio reached {stats['ratio_max']:.1f}: the learning rate is too high")
    return warn


def log_iteration(stats, iters, log_path, write=print):
    """One iteration's stats: a JSON line of the log (a new log at iteration 1), the
    fixed-format line, and a WARNING line for each health check it fails."""
    with open(log_path, "a" if stats["iter"] > 1 else "w") as f:
        f.write(json.dumps(stats) + "\n")
    write(("ORACLE " if "reward_source" in stats else "") + log_line(stats["iter"], iters, **{
        key: stats[key] for key in ("rm_score", "score", "kl", "kl_k3", "reward", "pg_loss", "vf_loss", "clipfrac",
                                    "approxkl", "entropy", "explained_var", "resp_len", "eos_rate", "ptx_loss", "gold")
        if key in stats}))
    for w in health_warnings(stats):
        write(f"WARNING iter {stats['iter']}: {w}")


# -----------------------------------------------------------------------------
# the loop: rollout -> advantages -> ppo_update, log, checkpoint


def main():
    cfg = parse_config(PPOConfig())
    # under torchrun N copies of this run, each on its own prompts; one process: rank 0, world 1
    device, rank, world = ddp_setup(get_device(cfg.device))
    check_config(cfg, world)
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | ranks {world}")
    seed_everything(cfg.seed + rank)  # minibatch order; each rank its own
    policy, ref, rm, value, opt, tok = load_models(cfg, device)
    recs, ptx_stream = load_data(cfg, tok, policy.config.block_size)
    reward, oracle, gold_known = reward_function(cfg, rm, tok, device), cfg.reward == "gold", has_meta(recs)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + rank)  # the rollouts' (and ptx windows') draws
    ptx = (ptx_stream, policy.config.block_size // 2, gen) if ptx_stream is not None else None  # half-context windows
    rng, start, history = random.Random(cfg.seed + rank), 0, []  # which prompts: each rank its own
    ck = resume(cfg.out, "ppo", device, policy, opt) if cfg.resume else None
    if ck:
        value.load_state_dict(ck["value_model"])
        start, history = ck["iter"], ck["history"]
        gen.set_state(ck["gen_state"])
        rng.setstate(ck["py_rng"])
    log_path, k = os.path.splitext(cfg.out)[0] + "_log.jsonl", cfg.samples_per_prompt
    every = max(1, cfg.iters // SHOW_SAMPLES)  # iterations between printed samples
    t_start, bar = time.time(), tqdm(range(start, cfg.iters), initial=start, total=cfg.iters, desc="ppo",
                                     dynamic_ncols=True, disable=rank > 0 or None)
    for it in bar:
        # 1. a batch of prompts, k answers each (under torchrun: this rank's share of the batch)
        batch = [r for r in rng.sample(recs, min(cfg.batch_size // k // world, len(recs))) for _ in range(k)]
        t0, prompt_ids = clock(device), [render(tok, r["prompt"])[0] for r in batch]
        score = lambda out: reward(out, batch)  # noqa: E731  the RM (or the ORACLE) on this batch
        roll = rollout(policy, ref, value, prompt_ids, score, cfg, tok, gen)  # steps 2-3
        roll = compute_advantages(roll, cfg)  # steps 4-5
        stats, t1 = rollout_stats(roll), clock(device)
        stats.update(ppo_update(policy, value, opt, roll, cfg, it, ptx))  # steps 6-7
        stats.update(kl_coef=cfg.kl_coef, t_rollout=t1 - t0, t_update=clock(device) - t1)  # steps 2-5, 6-7
        texts = decode_responses(tok, roll)
        if gold_known:  # measurement only: the noise-free gold judge (PPO never sees it, unless ORACLE)
            stats["gold"] = sum(judge(r, t)["score"] for r, t in zip(batch, texts)) / len(batch)
        stats = ddp_mean(stats)  # the logged numbers: the mean over the ranks
        if rank > 0:  # rank 0 alone logs and writes checkpoints
            continue
        stats.update(iter=it + 1, elapsed_s=time.time() - t_start,
                     phase="value_warmup" if it < cfg.value_warmup else "ppo",
                     **({"reward_source": "gold (ORACLE)"} if oracle else {}))
        history.append(stats)
        log_iteration(stats, cfg.iters, log_path, bar.write)
        if it == 0 or (it + 1) % every == 0:
            show_samples(batch, texts, [f"score {roll['scores'][i].item():+.2f}, kl {roll['kl'][i].sum().item():.2f}"
                                        for i in range(min(2, len(batch)))], write=bar.write)
        # atomic checkpoint after every good iteration: an interrupted run loses at most one
        save_checkpoint(dict(stage="ppo", model=policy.state_dict(), model_config=asdict(policy.config),
                             tokenizer=tok.to_dict(), config=asdict(cfg), value_model=value.state_dict(),
                             optimizer=opt.state_dict(), iter=it + 1, history=history,
                             gen_state=gen.get_state(), py_rng=rng.getstate()), cfg.out)
    bar.close()
    if history and rank == 0:
        h0, h1 = history[0], history[-1]
        print(f"done in {time.time() - t_start:.0f}s: RM score {h0['score']:+.3f} -> {h1['score']:+.3f} | "
              f"KL {h1['kl']:.3f}" + (f" | gold {h0['gold']:.3f} -> {h1['gold']:.3f}" if "gold" in h1 else "")
              + f" | saved {cfg.out}, log {log_path}")
    ddp_cleanup()


if __name__ == "__main__":
    main()
