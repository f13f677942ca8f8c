"""
Step 3, the other road: Direct Preference Optimization (DPO; Rafailov et al. 2023). The
policy learns from the reward model's comparisons directly: no reward model, no sampling.

Why that works. The objective PPO maximises (ppo.py, without ptx),

    max_pi  E_x E_y~pi [ r(x, y) ]  -  beta * KL( pi(.|x) || pi_SFT(.|x) ),

has a closed-form optimum, pi*(y|x) = pi_SFT(y|x) * exp(r(x, y) / beta) / Z(x). Read
backwards, every policy is the optimum of one reward, its "implicit reward"

    r(x, y) = beta * log( pi(y|x) / pi_SFT(y|x) ) + beta * log Z(x).

Put that into the reward model's pairwise loss (reward.py): Z(x) is the same for both
answers to a prompt and cancels, and what is left trains the policy AS the reward model,

    loss = - log sigmoid( beta * [ log pi(y_w|x)/pi_SFT(y_w|x) - log pi(y_l|x)/pi_SFT(y_l|x) ] )

with the KL leash inside the loss (the frozen SFT reference). As in reward.py, all C(K,2)
pairs of a ranked prompt form ONE batch element: K policy and K reference forward passes,
the loss the mean over its pairs, every prompt weighing the same.

    python dpo.py                                               # out/sft.pt + out/comparisons.jsonl -> out/dpo.pt
    python dpo.py --max_comparisons=32 --batch_size=4 --val= --n_samples=1   # tiny
    python dpo.py --beta=0.5 --out=out/dpo_beta05.pt            # a shorter leash: stays closer to SFT
    python dpo.py --resume=True
    torchrun --nproc_per_node=2 dpo.py --device=cpu             # data parallel: 2 processes (common.ddp_setup)

The data are the reward model's, every pair of out/comparisons.jsonl, and they are
off-policy: most answers are SFT samples, but every prompt also holds one labeler
demonstration and about a quarter hold a base-model sample (collect.py). So many pairs say
"the demonstration beats the SFT sample" or "anything beats the base model's rambling":
lessons PPO's policy only meets through its own samples. DPO may push down log pi of
answers it would never write (chosen AND rejected) while the margin grows: watch `chosen`.

Log line, means over the pairs since the last one: loss; acc, the implicit reward's pair
accuracy (ties count half: at step 0 every reward is exactly 0); margin, chosen minus
rejected implicit reward; chosen / rejected, log pi - log pi_SFT of the winning / losing
answers (nats per answer); kl_chosen, the same per token of the chosen answers (KL-like,
though they are not the policy's samples). val_loss, val_acc: the --val pairs at the start
and at the end (set val_acc beside the RM's held-out accuracy).

Deviations from the DPO paper (InstructGPT has no DPO):
1. Rankings: all C(K,2) pairs of a K-wise ranking in one element, averaged per prompt
   (InstructGPT's RM batching); the paper trains on single pairs (and derives a
   Plackett-Luce loss for rankings, not used here).
2. Optimiser: AdamW at lr 1e-4 (SFT's / 10), warmup then linear decay to 0, 8 prompts
   (~140 pairs) per step, 1 epoch; the paper: RMSprop at 1e-6, 64 pairs, 150 warmup steps,
   for models of 1B+ parameters (ours: ~1M). It costs about what reward.py costs on the
   same data (docs/benchmarks.md has the stage times).
3. Data: the RM's off-policy comparisons (above); the paper sampled its pairs from the SFT
   model (or used a public preference set).
4. The reference log-probs are computed in every step (one no-grad forward), not once ahead
   of training; dropout is off in policy and reference.
"""

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import (autocast, check_loss, ddp_cleanup, ddp_mean, ddp_setup, die, get_device, log_line, lr_at,
                    parse_config, precision_name, print_config, resume, save_checkpoint, seed_everything,
                    sync_gradients)
from data import flatten_comparisons, load_comparisons, ranked_pairs
from model import response_logprobs
from policy import load_fitting, load_policy, logprob_texts, pair_batch, sample_responses, show_samples


@dataclass
class DPOConfig:
    policy: str = "out/sft.pt"  # SFT checkpoint: the starting policy AND the frozen reference
    data: str = "out/comparisons.jsonl"  # the RM's comparisons {prompt, responses[K], ranking (best first)}
    val: str = "out/comparisons_val.jsonl"  # held-out prompts: the implicit reward's pair accuracy ("" = none)
    out: str = "out/dpo.pt"  # the trained policy; out/dpo.pt.last holds the latest state for --resume
    beta: float = 0.1  # implicit reward = beta * log(pi / pi_SFT); larger = closer to SFT (DPO paper: 0.1)
    epochs: int = 1
    batch_size: int = 8  # prompts per step (each with K answers and C(K,2) pairs), over all ranks
    grad_accum: int = 1  # split each batch into N micro-batches: same step, 1/N of the activation memory
    grad_checkpoint: bool = False  # recompute each block's activations in backward (less memory, slower)
    compile: bool = False  # torch.compile the training forward (CUDA; slow to warm up on CPU)
    lr: float = 1e-4  # peak (SFT's / 10); linear warmup, then linear decay to 0
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_comparisons: int = 0  # use only the first N comparisons (0 = all)
    log_interval: int = 20  # steps per log line (and per write of out.last)
    n_samples: int = 3  # prompts (val, else train) answered by SFT and by the policy at the end
    max_new_tokens: int = 48
    temperature: float = 0.7  # sampling temperature of those answers
    seed: int = 1337
    device: str = "auto"
    resume: bool = False


# -----------------------------------------------------------------------------
# the loss, as pure functions (tests check them against a brute-force loop)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """
    DPO's loss for N (chosen, rejected) pairs, the one routine this file exists for. Every
    argument is (N,): sequence log-probs log pi(y|x), summed over the answer's tokens.
    Returns (losses (N,), chosen_rewards (N,), rejected_rewards (N,)); the rewards are the
    implicit ones, beta * log pi / pi_SFT, detached (for logging).

        chosen_rewards   = beta * (log pi(y_w|x) - log pi_SFT(y_w|x))
        rejected_rewards = beta * (log pi(y_l|x) - log pi_SFT(y_l|x))
        losses           = -log sigmoid(chosen_rewards - rejected_rewards)

    Worked example, beta = 0.1, one pair:
        log pi(y_w) = -10, log pi_SFT(y_w) = -12  -> chosen reward    0.1 * (+2) = +0.2
        log pi(y_l) = -15, log pi_SFT(y_l) = -14  -> rejected reward  0.1 * (-1) = -0.1
        loss = -log sigmoid(0.3) = log(1 + e^-0.3) = 0.5544
    At the start (policy == reference) both rewards are 0 and every loss is log 2 = 0.6931.
    """
    # the log-ratio of each answer is its implicit reward: how much more likely the policy
    # makes it than SFT did. Only the difference of the two matters (Z(x) cancelled).
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # (N,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (N,)
    # reward.py's pairwise loss with the implicit rewards as the scores
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards)  # (N,)
    return losses, chosen_rewards.detach(), rejected_rewards.detach()


def ranked_dpo_loss(logps, ref_logps, n_tokens, groups, beta):
    """
    dpo_loss over all C(K,2) pairs of each ranked prompt, each prompt weighing the same.
    logps, ref_logps, n_tokens: (N,) for every answer, prompt after prompt; groups: per
    prompt (offset of its first answer, its ranking best first), as reward.py's loss takes.
    Returns (loss = mean over prompts of the mean over its pairs, sums: statistics summed
    over prompts and pairs, so that the steps of a log interval and the val set add up exactly).
    """
    pairs, weights = [], []
    for offset, ranking in groups:
        pr = ranked_pairs(ranking)
        pairs += [(offset + w, offset + l) for w, l in pr]
        weights += [1.0 / (len(pr) * len(groups))] * len(pr)  # 1/C(K,2) within a prompt, then the mean over prompts
    pairs = torch.tensor(pairs, device=logps.device)  # (C, 2): absolute (winner, loser) indices
    w, l = pairs[:, 0], pairs[:, 1]  # (C,) each
    losses, chosen_rewards, rejected_rewards = dpo_loss(logps[w], logps[l], ref_logps[w], ref_logps[l], beta)
    loss = (losses * torch.tensor(weights, device=logps.device)).sum()
    margin = chosen_rewards - rejected_rewards  # (C,)
    sums = dict(prompts=len(groups), loss=loss.item() * len(groups), pairs=len(pairs),
                correct=((margin > 0).float() + 0.5 * (margin == 0).float()).sum().item(), margin=margin.sum().item(),
                chosen=(logps[w] - ref_logps[w]).sum().item(), rejected=(logps[l] - ref_logps[l]).sum().item(),
                chosen_tokens=n_tokens[w].sum().item())
    return loss, sums


SUM_KEYS = ("prompts", "loss", "pairs", "correct", "margin", "chosen", "rejected", "chosen_tokens")


def summarise(sums, prefix=""):
    """Summed statistics (ranked_dpo_loss) -> the logged means."""
    p = max(1.0, sums["pairs"])
    out = dict(loss=sums["loss"] / max(1.0, sums["prompts"]), acc=sums["correct"] / p, margin=sums["margin"] / p,
               chosen=sums["chosen"] / p, rejected=sums["rejected"] / p,
               kl_chosen=sums["chosen"] / max(1.0, sums["chosen_tokens"]))
    return {prefix + k: v for k, v in out.items()}


def load_data(cfg, tok, block_size):
    """-> (training comparisons, held-out comparisons)."""
    comps = load_fitting(load_comparisons, cfg.data, tok, block_size)
    val = load_fitting(load_comparisons, cfg.val, tok, block_size) if cfg.val else []
    if cfg.max_comparisons:
        comps = comps[: cfg.max_comparisons]
    n_pairs = sum(math.comb(len(c["responses"]), 2) for c in comps)
    print(f"data: {len(comps)} ranked prompts, {n_pairs} pairs; val {len(val)} prompts | beta {cfg.beta}")
    return comps, val


def batch_loss(fwd, ref, tok, recs, beta, device):
    """The DPO loss of a list of comparisons -> (loss, sums): every answer to every prompt in ONE
    padded forward of the policy (`fwd`: it, or it compiled; K per prompt, not 2 C(K,2)) and one
    of the reference."""
    prompts, answers, groups = flatten_comparisons(recs)
    tokens, attn, P, mask = pair_batch(tok, prompts, answers, device)  # (N, P + R) x 2, P, (N, R)
    with autocast(device):
        # a sequence's log-prob is the sum over its answer tokens (and the EOT), nothing else
        logps = (response_logprobs(fwd, tokens, attn, P).float() * mask).sum(1)  # (N,)
        with torch.no_grad():
            ref_logps = (response_logprobs(ref, tokens, attn, P).float() * mask).sum(1)  # (N,)
    return ranked_dpo_loss(logps, ref_logps, mask.sum(1), groups, beta)


def train_step(policy, fwd, ref, opt, tok, recs, sums, cfg, step, device):
    """One optimizer step on this rank's comparisons `recs`, in --grad_accum micro-batches (each
    loss / grad_accum: gradients add up over the loop). `fwd`: the policy, or it compiled.
    Adds the step's statistics to `sums`."""
    opt.zero_grad(set_to_none=True)
    for micro in range(cfg.grad_accum):
        part = recs[micro :: cfg.grad_accum]
        if not part:  # an epoch's last batch may not fill every micro-batch
            continue
        loss, s = batch_loss(fwd, ref, tok, part, cfg.beta, device)
        check_loss(loss, "dpo", step + 1, cfg.lr, cfg.out + ".last")
        (loss / cfg.grad_accum).backward()
        for k in SUM_KEYS:
            sums[k] += s[k]
    sync_gradients(policy.parameters())  # under torchrun: the mean over the ranks (one process: nothing)
    torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
    opt.step()


def val_stats(policy, tok, val, val_ref, beta, device):
    """The implicit reward on the held-out pairs -> {val_loss, val_acc, val_margin}. val_ref: the
    reference's log-probs of the val answers (fixed: computed once)."""
    if not val:
        return {}
    prompts, answers, groups = flatten_comparisons(val)
    policy.eval()
    logps, n_tok = logprob_texts(policy, tok, prompts, answers, device)
    policy.train()
    _, sums = ranked_dpo_loss(logps, val_ref, n_tok, groups, beta)
    return {k: v for k, v in summarise(sums, "val_").items() if k in ("val_loss", "val_acc", "val_margin")}


def show_answers(ref, policy, tok, recs, cfg, device):
    """SFT's and the policy's answers to the same prompts, each with its implicit reward under
    the trained policy (and the gold score: measurement only)."""
    prompts = [r["prompt"] for r in recs]
    for name, model in (("SFT", ref), ("DPO", policy)):
        texts, _ = sample_responses(model, tok, prompts, cfg.max_new_tokens, cfg.temperature, seed=cfg.seed)
        lp, _ = logprob_texts(policy, tok, prompts, texts, device)
        lp_ref, _ = logprob_texts(ref, tok, prompts, texts, device)
        print(f"  {name}:")
        show_samples(recs, texts, [f"implicit reward {x:+.2f}" for x in (cfg.beta * (lp - lp_ref)).tolist()],
                     k=len(recs))


# -----------------------------------------------------------------------------


def main():
    cfg = parse_config(DPOConfig())
    if not cfg.beta > 0:
        die(f"--beta must be positive (the implicit reward is beta * log pi / pi_SFT), got {cfg.beta}", 2)
    device, rank, world = ddp_setup(get_device(cfg.device))  # one process: (device, 0, 1)
    if cfg.batch_size < world * cfg.grad_accum:
        die(f"--batch_size={cfg.batch_size} is smaller than ranks x --grad_accum ({world} x {cfg.grad_accum})", 2)
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | ranks {world}")
    seed_everything(cfg.seed + rank)  # only the final samples are random; the data order has its own seed

    # 1. policy and frozen reference both start from SFT, dropout off in both
    policy, tok, _ = load_policy(cfg.policy, device, dropout=0.0)
    policy.grad_checkpoint = cfg.grad_checkpoint
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    comps, val = load_data(cfg, tok, policy.config.block_size)
    steps_per_epoch = math.ceil(len(comps) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = policy.configure_optimizer(cfg.lr, cfg.weight_decay, device=device)
    start, history = 0, []
    last = cfg.out + ".last"  # the latest state, for --resume
    ck = resume(last, "dpo_partial", device, policy, opt) if cfg.resume else None
    if ck:
        start, history = ck["step"], ck["history"]
    fwd = torch.compile(policy) if cfg.compile else policy  # the training forward goes through this
    val_prompts, val_answers, _ = flatten_comparisons(val)  # the reference's log-probs of these: computed once
    val_ref = logprob_texts(ref, tok, val_prompts, val_answers, device)[0] if val and rank == 0 else None
    if start == 0 and rank == 0 and val:  # step 0: policy == reference, loss log 2, accuracy 1/2
        history.append(dict(step=0, **val_stats(policy, tok, val, val_ref, cfg.beta, device)))
        print(log_line(0, total, **{k: v for k, v in history[-1].items() if k != "step"}))

    # 2. steps over the comparisons: the same seeded order on every rank, each takes its share
    t0 = time.time()
    policy.train()
    sums, order = dict.fromkeys(SUM_KEYS, 0.0), None
    bar = tqdm(range(start, total), initial=start, total=total, desc="dpo", dynamic_ncols=True,
               disable=rank > 0 or None)  # a bar on rank 0, in a terminal (None: off when stderr is not one)
    for step in bar:
        epoch, b = divmod(step, steps_per_epoch)
        if order is None or b == 0:  # one permutation per epoch: a resumed run continues it
            order = torch.randperm(len(comps), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_steps)  # warmup, then linear to 0
        batch = [comps[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
        if len(batch) >= world * cfg.grad_accum:  # else an epoch's last scrap, too small to share: all ranks skip it
            train_step(policy, fwd, ref, opt, tok, batch[rank::world], sums, cfg, step, device)  # my share
        done = step + 1

        # 3. log: this interval's pairs (averaged over the ranks); the val pairs; a checkpoint to resume from
        if done % cfg.log_interval == 0 or done == total:
            h = dict(step=done, **summarise(ddp_mean(sums)))
            sums = dict.fromkeys(SUM_KEYS, 0.0)
            if rank == 0:  # rank 0 alone measures, logs and writes checkpoints
                if done == total:
                    h.update(val_stats(policy, tok, val, val_ref, cfg.beta, device))
                history.append(h)
                bar.write(log_line(done, total, **{k: v for k, v in h.items() if k != "step"},
                                   lr=opt.param_groups[0]["lr"], elapsed_s=int(time.time() - t0)))
                save_checkpoint(dict(stage="dpo_partial", model=policy.state_dict(), optimizer=opt.state_dict(),
                                     model_config=asdict(policy.config), config=asdict(cfg), step=done,
                                     history=history), last)
    bar.close()
    if rank == 0:
        # 4. a few answers: SFT's and the policy's to the same prompts
        show_answers(ref, policy, tok, (val or comps)[: cfg.n_samples], cfg, device)
        final = {k: v for k, v in history[-1].items() if k != "step"} if history else {}
        print(f"done in {time.time() - t0:.0f}s: " + " | ".join(f"{k} {final[k]:.4f}" for k in
                                                                ("val_acc", "val_loss", "kl_chosen") if k in final))
        save_checkpoint(dict(stage="dpo", model=policy.state_dict(), model_config={**asdict(policy.config),
                             "dropout": 0.0}, config=asdict(cfg), tokenizer=tok.to_dict(), init=cfg.policy,
                             step=total, history=history, report=final), cfg.out)
    ddp_cleanup()


if __name__ == "__main__":
    main()
