"""
Between step 1 and step 2: collect ranked comparisons -- paper Section 3.4.

For each reward-model prompt, gather K candidate responses (K drawn from 4..9) from
several sources, as the paper's labelers ranked outputs of several models (GPT-3, SFT,
early PPO policies): samples of the SFT policy at a few temperatures, optionally samples
of the base model, and one demonstration a training labeler writes for the prompt (with
that labeler's usual flaws). A simulated labeler then ranks them best to worst.

    python collect.py                                 # out/sft.pt (+ out/base.pt) -> out/comparisons*.jsonl
    python collect.py --max_prompts=32 --out_dir=/tmp/c
    python collect.py --base="" --demo_prob=0         # SFT samples only

Writes three files into --out_dir:
  comparisons.jsonl              training prompts, ranked by training labelers -> reward.py
  comparisons_val.jsonl          held-out prompts, ranked by training labelers (each also ranked by a
                                 second training labeler: `second_ranking`, for their agreement)
  comparisons_val_heldout.jsonl  the same prompts and responses, ranked by HELD-OUT labelers
Each record also lists where each response came from (`sources`: "sft@0.7", "base@1.0",
"demo"), so reward.py can report its accuracy on policy samples alone.
Have your own ranked data? Skip this and point reward.py at a file of the same format.

Why several sources: with K samples of one policy, most pairs differ by little (18 % of
them are exact ties under the gold judge) and a small RM learns mostly noise. A labeler's
demonstration next to the policy's samples is the clearest lesson in what "right" means
for THIS prompt (the right fact, the asked-for form); the base model's continuations show
what "not doing the task" looks like. The RM still has to rank policy samples, and
reward.py reports exactly that accuracy too.

Deviation from the paper: the paper's comparisons held no human-written response; ours
hold one (--demo_prob=0 turns it off).
"""

import os
import random
import time
from collections import Counter
from dataclasses import dataclass

from tqdm import tqdm

from common import die, get_device, parse_config, print_config, seed_everything
from data import DataError, load_prompts, write_jsonl
from data.kb import index_of
from data.labelers import agreement, heldout_labelers, rank, train_labelers
from data.tasks import write_demo
from policy import load_policy, sample_responses


@dataclass
class CollectConfig:
    policy: str = "out/sft.pt"  # the SFT policy that writes most candidate responses
    base: str = "out/base.pt"  # the base model, for a few candidates ("" = none)
    prompts: str = "data/world/rm_prompts.jsonl"
    out_dir: str = "out"
    k_min: int = 4  # responses per prompt: K drawn uniformly from k_min..k_max (paper: 4..9)
    k_max: int = 9
    temperatures: str = "0.7,1.0"  # SFT samples cycle through these sampling temperatures
    demo_prob: float = 1.0  # chance that a training labeler's demonstration is one of the K
    base_prob: float = 0.25  # chance that one of the K is a base-model sample (at temperature 1)
    val_frac: float = 0.1  # prompts kept for held-out RM accuracy
    max_prompts: int = 0  # 0 = all
    max_new_tokens: int = 48
    seed: int = 1337
    device: str = "auto"


def sample_all(model, tok, jobs, max_new_tokens, seed, desc):
    """jobs: list of (prompt, temperature) -> texts, generated in big batches per temperature."""
    texts = [None] * len(jobs)
    for temp in sorted({t for _, t in jobs}):
        idx = [i for i, (_, t) in enumerate(jobs) if t == temp]
        for s in tqdm(range(0, len(idx), 256), desc=f"{desc} @{temp}", dynamic_ncols=True):
            chunk = idx[s : s + 256]
            out, _ = sample_responses(model, tok, [jobs[i][0] for i in chunk], max_new_tokens, temp, seed=seed + s)
            for i, t in zip(chunk, out):
                texts[i] = t
    return texts


def plan(recs, cfg, temps, with_base, rng):
    """Step 1: each prompt's K candidates as (source, temperature) slots: maybe a demonstration,
    maybe a base-model sample, the rest SFT samples cycling through the temperatures."""
    plans = []
    for r in recs:
        k = rng.randint(cfg.k_min, cfg.k_max)
        slots = []
        if rng.random() < cfg.demo_prob:
            slots.append(("demo", None))
        if with_base and rng.random() < cfg.base_prob:
            slots.append(("base", 1.0))
        slots += [("sft", temps[j % len(temps)]) for j in range(k - len(slots))]
        plans.append(slots)
    return plans


def fill(policy, base, tok, recs, plans, cfg, rng):
    """Step 2: fill the slots -> per prompt [(text, source)]: batched KV-cached sampling per model
    and temperature; demonstrations written by a training labeler with the world's demonstrator flaws
    (data/tasks.write_demo)."""
    jobs = {"sft": [], "base": []}
    for r, slots in zip(recs, plans):
        for src, temp in slots:
            if src != "demo":
                jobs[src].append((r["prompt"], temp))
    texts = {"sft": iter(sample_all(policy, tok, jobs["sft"], cfg.max_new_tokens, cfg.seed, "sft samples"))}
    if base is not None:
        texts["base"] = iter(sample_all(base, tok, jobs["base"], cfg.max_new_tokens, cfg.seed + 1, "base samples"))
    labs = train_labelers()
    candidates = []
    for r, slots in zip(recs, plans):
        cands = []
        for src, temp in slots:
            if src == "demo":
                cands.append((write_demo(r, rng.choice(labs), rng, index_of(r["meta"]))[0], "demo"))
            else:
                cands.append((next(texts[src]), f"{src}@{temp}"))
        candidates.append(cands)
    return candidates


def rank_all(recs, candidates, n_val, rng):
    """Step 3: labelers rank each prompt's distinct, non-empty candidates -> ({file name: records},
    the val prompts' records, their responses)."""
    train_l, held_l = train_labelers(), heldout_labelers()
    rows = {"comparisons.jsonl": [], "comparisons_val.jsonl": [], "comparisons_val_heldout.jsonl": []}
    val_recs, val_resps = [], []
    for j, (r, cands) in enumerate(zip(recs, candidates)):
        # dedupe (a ranking needs distinct items; the first source wins) and drop empty answers (EOS at once)
        uniq = {}
        for text, src in cands:
            if text.strip() and text not in uniq:
                uniq[text] = src
        resp, sources = list(uniq), list(uniq.values())
        if len(resp) < 2:
            continue
        # keep the prompt record's fields (meta lets reward.py correlate RM scores with gold scores)
        base_rec = {**{k: r[k] for k in ("id", "category", "split", "lang", "meta") if k in r},
                    "prompt": r["prompt"], "responses": resp, "sources": sources}
        if j < n_val:
            val_recs.append(r)
            val_resps.append(resp)
            for name, group in (("comparisons_val.jsonl", train_l), ("comparisons_val_heldout.jsonl", held_l)):
                lab = group[j % len(group)]
                rows[name].append({**base_rec, "ranking": rank(r, resp, lab, rng), "labeler": lab["name"]})
            # a second training labeler ranks the same responses: how often two people agree on
            # these very pairs is the ceiling for the RM's accuracy (reward.py reports both)
            lab2 = train_l[(j + 1) % len(train_l)]
            rows["comparisons_val.jsonl"][-1].update(second_ranking=rank(r, resp, lab2, rng),
                                                     second_labeler=lab2["name"])
        else:
            lab = train_l[j % len(train_l)]
            rows["comparisons.jsonl"].append({**base_rec, "ranking": rank(r, resp, lab, rng), "labeler": lab["name"]})
    return rows, val_recs, val_resps


def main():
    cfg = parse_config(CollectConfig())
    if not 2 <= cfg.k_min <= cfg.k_max:
        die(f"need 2 <= k_min <= k_max, got k_min={cfg.k_min}, k_max={cfg.k_max}", 2)
    try:
        temps = [float(t) for t in cfg.temperatures.split(",")]
    except ValueError:
        die(f"--temperatures: expected comma-separated numbers like 0.7,1.0, got {cfg.temperatures!r}", 2)
    print_config(cfg)
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    policy, tok, _ = load_policy(cfg.policy, device, dropout=0.0)
    base = load_policy(cfg.base, device, dropout=0.0)[0] if cfg.base and cfg.base_prob > 0 else None
    try:
        recs = load_prompts(cfg.prompts)
    except DataError as e:
        die(str(e))
    if cfg.max_prompts:
        recs = recs[: cfg.max_prompts]
    rng = random.Random(cfg.seed)

    # 1. plan each prompt's K candidates; 2. sample and write them
    plans = plan(recs, cfg, temps, base is not None, rng)
    t0 = time.time()
    candidates = fill(policy, base, tok, recs, plans, cfg, rng)
    print(f"gathered {sum(map(len, candidates))} candidates for {len(recs)} prompts in {time.time() - t0:.0f}s")

    # 3. labelers rank them
    rows, val_recs, val_resps = rank_all(recs, candidates, max(1, int(len(recs) * cfg.val_frac)), rng)
    os.makedirs(cfg.out_dir, exist_ok=True)
    for name, rs in rows.items():
        path = os.path.join(cfg.out_dir, name)
        write_jsonl(path, rs)  # atomic: a crash never leaves half a file behind
        print(f"wrote {len(rs)} comparisons -> {path}")
    count = Counter(s for row in rows["comparisons.jsonl"] for s in row["sources"])
    print("candidates by source: " + ", ".join(f"{k} {v}" for k, v in sorted(count.items())))

    # 4. how much do labelers agree on these very responses? (the ceiling for RM accuracy).
    #    Training labelers among themselves (the paper's 72.6 %) and held-out labelers
    #    among themselves (77.3 %); on pairs of SFT samples alone too (what PPO will see).
    sft_only = [[t for t, s in zip(row["responses"], row["sources"]) if s.startswith("sft")]
                for row in rows["comparisons_val.jsonl"]]
    for name, group in (("training", train_labelers()), ("held-out", heldout_labelers())):
        a_all = agreement(val_recs, val_resps, group, rng)
        a_sft = agreement(val_recs, sft_only, group, rng)
        print(f"inter-labeler agreement, {name} labelers: {a_all * 100:.1f}% on all pairs | {a_sft * 100:.1f}% on "
              f"pairs of SFT samples (paper: {'72.6' if name == 'training' else '77.3'}%)")
    for e in rows["comparisons.jsonl"][:1]:
        print(f"example: {e['prompt'][:80]!r} (labeler {e['labeler']})")
        for rnk, i in enumerate(e["ranking"]):
            print(f"  #{rnk + 1} [{e['sources'][i]}]: {e['responses'][i]!r}")


if __name__ == "__main__":
    main()
