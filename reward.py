"""
Step 2: the reward model (RM), trained on ranked comparisons -- paper Section 3.5.

RM = the SFT trunk with its unembedding replaced by a scalar head; the score of
(prompt, response) is the head's value at the last real token (the EOT). A labeler ranked
K responses to one prompt; every one of the C(K,2) pairs says "y_w beat y_l", and

    loss = - 1/C(K,2) * sum over pairs of log sigmoid( r(x, y_w) - r(x, y_l) )

All C(K,2) pairs of one prompt form ONE batch element, computed from K forward passes
(not C(K,2)): batching per prompt is cheaper, and shuffling pairs across the dataset made
the paper's RM overfit within one epoch (docs/exercises.md has the lines that shuffle them).

    python reward.py                                     # out/sft.pt + out/comparisons.jsonl -> out/rm.pt
    python reward.py --epochs=1 --max_comparisons=64     # tiny
    python reward.py --data=my_rankings.jsonl            # your own {prompt, responses, ranking}
    torchrun --nproc_per_node=2 reward.py --device=cpu     # data parallel: 2 processes (common.ddp_setup)

After training, the head is normalised (the loss is shift- and nearly scale-invariant;
this pins both): a gain so that the SFT policy's own samples score with std 1 (Ziegler et
al.'s `normalize_after`), then a bias so that the labelers' demonstrations score mean 0
(the paper). Then beta, the no-EOS penalty and the value clip of PPO have a known scale:
"1" is one standard deviation of the SFT policy's reward. Gain and bias live in the head's
weights in the checkpoint: PPO needs nothing else.

Deviations from the paper:
1. The paper's RM is 6B, trained 1 epoch at LR 9e-6, batch 64 prompts; ours is the tiny
   SFT model, 1 epoch at a larger LR, batch 8 prompts, LR decayed linearly to 0
   (Ziegler et al.; the paper used a cosine schedule).
2. Comparisons come from simulated labelers (data/labelers.py), so we can also report the
   RM's correlation with the noise-free gold score -- measurement only.
3. The comparisons mix SFT samples, base-model samples and one labeler demonstration per
   prompt (collect.py); accuracy is reported on all held-out pairs (the paper's figure)
   AND on pairs of two SFT samples (what PPO needs the RM to rank).
4. The score has one more input than the paper's (--lm_feature, on by default): the
   trunk's own mean log-likelihood of the response, weighted by a learned coefficient
   (model.ScalarModel.score says why). --lm_feature=False is the paper's RM exactly.
"""

import math
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common import (autocast, check_loss, ddp_cleanup, ddp_setup, die, get_device, log_line, lr_at, parse_config,
                    precision_name, print_config, resume, save_checkpoint, seed_everything, sync_gradients)
from data import flatten_comparisons, load_comparisons, load_demonstrations, ranked_pairs
from data.labelers import judge
from model import ScalarModel, GPTConfig
from policy import load_fitting, load_policy, rm_batch, score_texts


NORM_SAMPLES = 2000  # SFT samples whose spread sets the gain (more: slower, the same std to 2 digits)


@dataclass
class RewardConfig:
    init: str = "out/sft.pt"  # the SFT policy whose trunk the RM starts from
    data: str = "out/comparisons.jsonl"  # {prompt, responses[K], ranking (best first), labeler}
    val: str = "out/comparisons_val.jsonl"  # held-out prompts, training labelers ("" = none)
    val_heldout: str = "out/comparisons_val_heldout.jsonl"  # same prompts, held-out labelers ("" = none)
    demos: str = "data/world/sft.jsonl"  # demonstrations: their mean score is set to 0 after training
    out: str = "out/rm.pt"
    epochs: int = 1  # the paper: 1 (its RM overfits after that)
    batch_size: int = 8  # prompts per step (each with K responses and C(K,2) pairs), over all ranks
    grad_accum: int = 1  # split each batch into N micro-batches: same step, 1/N of the activation memory
    grad_checkpoint: bool = False  # recompute each block's activations in backward (less memory, slower)
    compile: bool = False  # torch.compile the training forward (CUDA; slow to warm up on CPU)
    lr: float = 3e-4  # peak; linear decay to 0 (Ziegler et al.)
    warmup_steps: int = 10
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    lm_feature: bool = True  # add the trunk's own mean log-likelihood of the response to the score (False = paper)
    max_comparisons: int = 0  # use only the first N comparisons (0 = all)
    log_interval: int = 20
    seed: int = 1337
    device: str = "auto"
    resume: bool = False


def comparison_loss(scores, groups):
    """
    The paper's loss, the one routine this file exists for.

    scores: (N,) RM scores of all responses in the batch, prompt after prompt.
    groups: per prompt, (offset of its first response in `scores`, its ranking best first).
    Returns (mean over prompts of the per-prompt loss, pair accuracy).

    For one prompt with K responses: K scores (one forward pass each, already done),
    C(K,2) pairwise differences r_w - r_l, loss = -mean log sigmoid(r_w - r_l). The mean is
    the 1/C(K,2) normaliser: a prompt with 9 responses weighs as much as one with 4.
    """
    losses, correct, total = [], 0, 0
    for offset, ranking in groups:
        pairs = torch.tensor(ranked_pairs(ranking), device=scores.device) + offset  # (C, 2) absolute indices
        diff = scores[pairs[:, 0]] - scores[pairs[:, 1]]  # (C,) r(x, y_w) - r(x, y_l)
        losses.append(-F.logsigmoid(diff).mean())  # -1/C(K,2) * sum log sigmoid
        correct += (diff > 0).sum().item()
        total += len(diff)
    return torch.stack(losses).mean(), correct / max(1, total)


def ranking_agreement(comps):
    """How often two labelers order a pair the same way: over the comparisons that carry a
    second labeler's ranking of the same responses ("second_ranking", collect.py writes it
    for the held-out prompts), the fraction of the C(K,2) pairs both rankings agree on.
    It is the ceiling an RM's pair accuracy against one labeler can hope to reach.
        ranking_agreement([{"ranking": [0, 1, 2], "second_ranking": [0, 2, 1]}]) -> 2/3
    Returns (agreement, number of pairs); (nan, 0) if no comparison has a second ranking."""
    agree = total = 0
    for c in comps:
        if "second_ranking" not in c:
            continue
        pos = {i: k for k, i in enumerate(c["second_ranking"])}  # response index -> its place, 2nd labeler
        for w, l in ranked_pairs(c["ranking"]):
            agree += pos[w] < pos[l]
            total += 1
    return (agree / total if total else float("nan")), total


@torch.no_grad()
def evaluate_comparisons(rm, tok, comps, device):
    """Pair accuracy of the RM against the labelers' rankings, and the mean loss."""
    rm.eval()
    prompts, responses, groups = flatten_comparisons(comps)
    loss, acc = comparison_loss(score_texts(rm, tok, prompts, responses, device), groups)
    rm.train()
    return acc, loss.item()


def sft_pairs_only(comps):
    """The same comparisons restricted to the SFT policy's samples (by each record's
    `sources`, written by collect.py); records without sources are kept whole."""
    out = []
    for c in comps:
        if "sources" not in c:
            out.append(c)
            continue
        keep = [i for i, s in enumerate(c["sources"]) if s.startswith("sft")]
        if len(keep) >= 2:
            pos = {i: n for n, i in enumerate(keep)}
            out.append({**c, "responses": [c["responses"][i] for i in keep],
                        "ranking": [pos[i] for i in c["ranking"] if i in pos]})
    return out


def pearson(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    a, b = a - a.mean(), b - b.mean()
    return (a * b).sum().item() / max(1e-12, math.sqrt((a * a).sum().item() * (b * b).sum().item()))


def reward_model_from(cfg, device):
    """RM = the SFT trunk + a fresh scalar head (the SFT unembedding is simply not used) -> (rm, tok)."""
    policy, tok, _ = load_policy(cfg.init, device, dropout=0.0)
    rm = ScalarModel(GPTConfig(**asdict(policy.config))).to(device)
    rm.trunk.load_state_dict(policy.state_dict())
    if cfg.lm_feature:  # start at "reward = head + the SFT model's mean log-likelihood of the answer"
        with torch.no_grad():
            rm.lm_coef.fill_(1.0)
    rm.lm_coef.requires_grad_(cfg.lm_feature)  # unused (0) in the paper's RM
    rm.trunk.grad_checkpoint = cfg.grad_checkpoint
    return rm, tok


def load_data(cfg, tok, block_size):
    """-> (training comparisons, val (training labelers), val (held-out labelers), demonstrations)."""
    comps = load_fitting(load_comparisons, cfg.data, tok, block_size)
    val = load_fitting(load_comparisons, cfg.val, tok, block_size) if cfg.val else []
    val_h = load_fitting(load_comparisons, cfg.val_heldout, tok, block_size) if cfg.val_heldout else []
    demos = load_fitting(load_demonstrations, cfg.demos, tok, block_size) if cfg.demos else []
    if cfg.max_comparisons:
        comps = comps[: cfg.max_comparisons]
    n_pairs = sum(math.comb(len(c["responses"]), 2) for c in comps)
    print(f"data: {len(comps)} ranked prompts, {n_pairs} pairs; val {len(val)} (training labelers), "
          f"{len(val_h)} (held-out labelers)")
    return comps, val, val_h, demos


def batch_loss(score, tok, comps, device):
    """The mean comparison loss (and pair accuracy) of a batch of ranked prompts: K forward
    passes per prompt, all the batch's answers in one padded forward. `score`: rm.score (or
    it compiled)."""
    prompts, responses, groups = flatten_comparisons(comps)
    scores = score(*rm_batch(tok, prompts, responses, device))  # (N,)
    return comparison_loss(scores.float(), groups)


def normalise(rm, tok, comps, demos, device):
    """
    Step 2d, after training: a gain so the SFT policy's samples score with std 1 (Ziegler et
    al.), then a bias so the labelers' demonstrations score mean 0 (the paper). Both go into the head:
        r' = gain * (r - demo_mean) = (gain * w) . h + gain * (b - demo_mean)
    -> the statistics, printed and stored in the checkpoint.
    """
    rm.eval()
    stats = dict(demo_mean=float("nan"), demo_std=float("nan"), bias_shift=0.0, gain=1.0)
    # the SFT policy's own samples, which collect.py marks in `sources`; comparisons without
    # sources (your own, public data) have only other people's answers: all of them stand in
    sft_samples = [(c["prompt"], r) for c in comps for r, s in zip(c["responses"], c.get("sources") or
                                                                   ["sft"] * len(c["responses"])) if
                   s.startswith("sft")][:NORM_SAMPLES]
    if sft_samples:
        sft_scores = score_texts(rm, tok, *map(list, zip(*sft_samples)), device)
        gain = 1.0 / sft_scores.std().clamp(min=1e-6).item()
        with torch.no_grad():
            rm.head.weight.mul_(gain)
            rm.head.bias.mul_(gain)
            rm.lm_coef.mul_(gain)
        stats["gain"] = gain
    if demos:
        demo_scores = score_texts(rm, tok, [d["prompt"] for d in demos], [d["response"] for d in demos], device)
        shift = demo_scores.mean().item()
        with torch.no_grad():
            rm.head.bias -= shift
        stats.update(demo_mean=(demo_scores - shift).mean().item(), demo_std=demo_scores.std().item(),
                     bias_shift=-shift)
    if sft_samples:  # the score is linear in the head: no need to score them again
        s = sft_scores * gain + stats["bias_shift"]
        stats.update(sft_mean=s.mean().item(), sft_std=s.std().item())
    stats["lm_coef"] = rm.lm_coef.item()
    print("normalised: " + " | ".join(f"{k} {v:+.3f}" for k, v in stats.items()) +
          "  (demonstrations mean 0, SFT samples std 1)")
    return stats


def final_report(rm, tok, val, val_h, device):
    """
    Step 2e: accuracy against the training labelers and the held-out labelers, on all pairs
    and on pairs of SFT samples alone, the labelers' own agreement, and the correlation with
    the gold score (measurement only); prints one held-out prompt's ranking -> the report dict.
    """
    report = {}
    for name, cs in (("train_labelers", val), ("heldout_labelers", val_h)):
        if cs:
            report[f"acc_{name}"] = evaluate_comparisons(rm, tok, cs, device)[0]
            report[f"acc_{name}_sft_pairs"] = evaluate_comparisons(rm, tok, sft_pairs_only(cs), device)[0]
    agree, n_pairs = ranking_agreement(val)
    if n_pairs:  # the same pairs, ranked again by another training labeler
        report["labeler_agreement"] = agree
    if val:
        prompts, responses, _ = flatten_comparisons(val)
        scores = score_texts(rm, tok, prompts, responses, device).tolist()
        if all("meta" in c for c in val):  # our collected comparisons carry the judge's metadata
            gold = [judge(c, r)["score"] for c in val for r in c["responses"]]
            report["gold_corr"] = pearson(scores, gold)
            is_sft = [s.startswith("sft") for c in val for s in c.get("sources", ["sft"] * len(c["responses"]))]
            report["gold_corr_sft"] = pearson([x for x, k in zip(scores, is_sft) if k],
                                              [g for g, k in zip(gold, is_sft) if k])
        c = val[0]  # a sample: one held-out prompt, its responses in the labeler's order, with RM scores
        print(f"sample: {c['prompt'][:90]!r} (labeler {c['labeler']})")
        for rank_i, j in enumerate(c["ranking"]):
            extra = f" | gold {judge(c, c['responses'][j])['score']:.2f}" if "meta" in c else ""
            src = f" [{c['sources'][j]}]" if "sources" in c else ""
            print(f"  #{rank_i + 1} RM {scores[j]:+.2f}{extra}{src} | {c['responses'][j][:90]!r}")
    print("reward model on held-out prompts: " + " | ".join(f"{k} {v:.3f}" for k, v in report.items()))
    print("  (paper: 72.4% within the training labelers' group, 69.6% on held-out labelers; two labelers agreed on "
          "72.6% of pairs" + (f"; ours on these pairs: {agree:.1%} of {n_pairs})" if n_pairs else ")"))
    return report


def main():
    cfg = parse_config(RewardConfig())
    device, rank, world = ddp_setup(get_device(cfg.device))  # one process: (device, 0, 1)
    if cfg.batch_size < world * cfg.grad_accum:
        die(f"--batch_size={cfg.batch_size} is smaller than ranks x --grad_accum ({world} x {cfg.grad_accum})", 2)
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | ranks {world}")

    # 2a. RM = SFT trunk + a fresh scalar head, initialised alike on every rank
    seed_everything(cfg.seed)
    rm, tok = reward_model_from(cfg, device)
    seed_everything(cfg.seed + rank)  # from here each rank its own random numbers (the batch order has its own)
    comps, val, val_h, demos = load_data(cfg, tok, rm.trunk.config.block_size)

    # 2b. a batch element is a whole ranked prompt with all its pairs (the paper)
    steps_per_epoch = math.ceil(len(comps) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    opt = rm.trunk.configure_optimizer(cfg.lr, cfg.weight_decay, device=device)
    opt.add_param_group({"params": list(rm.head.parameters()) + ([rm.lm_coef] if cfg.lm_feature else []),
                         "weight_decay": 0.0})
    epoch, step, history = 0, 0, []
    last = cfg.out + ".last"  # the latest epoch, for --resume
    ck = resume(last, "reward_partial", device, rm, opt) if cfg.resume else None
    if ck:
        epoch, step, history = ck["epoch"], ck["step"], ck["history"]
    score = torch.compile(rm.score) if cfg.compile else rm.score  # the training forward goes through this

    # 2c. epochs over the ranked prompts: one optimizer step per batch
    t0 = time.time()
    rm.train()
    while epoch < cfg.epochs:
        order = list(range(len(comps)))
        random.Random(cfg.seed + epoch).shuffle(order)  # each epoch its own order, the same on every rank
        bar = tqdm(range(steps_per_epoch), desc=f"rm epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                   disable=rank > 0 or None)
        for b in bar:
            batch = [comps[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            if len(batch) < world * cfg.grad_accum:  # an epoch's last scrap, too small to share: all ranks skip it
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_steps)  # warmup, then linear to 0
            mine = batch[rank::world]  # this rank's share of the batch
            opt.zero_grad(set_to_none=True)
            for micro in range(cfg.grad_accum):  # the same step in N parts: 1/N of the activation memory
                with autocast(device):
                    loss, acc = batch_loss(score, tok, mine[micro :: cfg.grad_accum], device)
                check_loss(loss, "reward", step + 1, cfg.lr, last)
                (loss / cfg.grad_accum).backward()
            sync_gradients(rm.parameters())  # under torchrun: the mean over the ranks (one process: nothing)
            torch.nn.utils.clip_grad_norm_(rm.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            if step % cfg.log_interval == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
        epoch += 1
        if rank > 0:  # rank 0 alone evaluates and writes checkpoints
            continue
        tr_acc, tr_loss = evaluate_comparisons(rm, tok, comps[:500], device)
        v_acc, v_loss = evaluate_comparisons(rm, tok, val, device) if val else (float("nan"),) * 2
        history.append(dict(epoch=epoch, train_acc=tr_acc, train_loss=tr_loss, val_acc=v_acc, val_loss=v_loss))
        print(log_line(epoch, cfg.epochs, train_loss=tr_loss, train_acc=tr_acc, val_loss=v_loss, val_acc=v_acc,
                       elapsed_s=int(time.time() - t0)))
        save_checkpoint(dict(stage="reward_partial", model=rm.state_dict(), model_config=asdict(rm.trunk.config),
                             optimizer=opt.state_dict(), epoch=epoch, step=step, history=history), last)

    if rank == 0:
        # 2d. normalise the head's scale and offset; 2e. report on held-out prompts
        stats = normalise(rm, tok, comps, demos, device)
        report = final_report(rm, tok, val, val_h, device)
        save_checkpoint(dict(stage="reward", model=rm.state_dict(), model_config=asdict(rm.trunk.config),
                             config=asdict(cfg), tokenizer=tok.to_dict(), init=cfg.init, history=history,
                             report=report, **stats), cfg.out)
        print(f"saved {cfg.out} in {time.time() - t0:.0f}s")
    ddp_cleanup()


if __name__ == "__main__":
    main()
