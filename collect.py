"""
Between step 1 and step 2: collect ranked comparisons -- paper Section 3.4.

For each reward-model prompt, sample K responses (K drawn from 4..9) from the SFT policy
with batched KV-cached generation, and have a simulated labeler rank them best to worst.

    python collect.py                                 # out/sft.pt -> out/comparisons*.jsonl
    python collect.py --max_prompts=32 --out_dir=/tmp/c

Writes three files into --out_dir:
  comparisons.jsonl              training prompts, ranked by training labelers -> reward.py
  comparisons_val.jsonl          held-out prompts, ranked by training labelers
  comparisons_val_heldout.jsonl  the same prompts and responses, ranked by HELD-OUT labelers
Have your own ranked data? Skip this and point reward.py at a file of the same format.

Deviation from the paper: it ranked outputs of several models (GPT-3, SFT, early PPO);
we sample all K from the SFT policy, at temperature 1 for variety.
"""

import json
import os
import random
import time
from dataclasses import dataclass

from tqdm import tqdm

from common import die, get_device, parse_config, print_config, seed_everything
from data import DataError, load_prompts
from data.labelers import agreement, heldout_labelers, rank, train_labelers
from sft import load_policy, sample_responses


@dataclass
class CollectConfig:
    policy: str = "out/sft.pt"  # the SFT policy that writes the candidate responses
    prompts: str = "data/world/rm_prompts.jsonl"
    out_dir: str = "out"
    k_min: int = 4  # responses per prompt: K drawn uniformly from k_min..k_max (paper: 4..9)
    k_max: int = 9
    val_frac: float = 0.1  # prompts kept for held-out RM accuracy
    max_prompts: int = 1000  # 0 = all (1000 of the 1500 keep the default pipeline within budget)
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 1337
    device: str = "auto"


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def main():
    cfg = parse_config(CollectConfig())
    if not 2 <= cfg.k_min <= cfg.k_max:
        die(f"need 2 <= k_min <= k_max, got k_min={cfg.k_min}, k_max={cfg.k_max}", 2)
    print_config(cfg)
    device = get_device(cfg.device)
    seed_everything(cfg.seed)
    model, tok, _ = load_policy(cfg.policy, device, dropout=0.0)
    try:
        recs = load_prompts(cfg.prompts)
    except DataError as e:
        die(str(e))
    if cfg.max_prompts:
        recs = recs[: cfg.max_prompts]
    rng = random.Random(cfg.seed)
    ks = [rng.randint(cfg.k_min, cfg.k_max) for _ in recs]

    # 1. sample K responses per prompt: flatten to one list, generate in big batches
    t0 = time.time()
    flat = [r["prompt"] for r, k in zip(recs, ks) for _ in range(k)]
    texts = []
    for i in tqdm(range(0, len(flat), 256), desc="sampling", dynamic_ncols=True):
        t, _ = sample_responses(model, tok, flat[i : i + 256], cfg.max_new_tokens, cfg.temperature,
                                seed=cfg.seed + i)
        texts.extend(t)
    print(f"sampled {len(flat)} responses for {len(recs)} prompts in {time.time() - t0:.0f}s")

    # 2. labelers rank them
    train_l, held_l = train_labelers(), heldout_labelers()
    n_val = max(1, int(len(recs) * cfg.val_frac))
    rows = {"comparisons.jsonl": [], "comparisons_val.jsonl": [], "comparisons_val_heldout.jsonl": []}
    val_recs, val_resps = [], []
    pos = 0
    for j, (r, k) in enumerate(zip(recs, ks)):
        # dedupe (a ranking needs distinct items) and drop empty answers (EOS at once)
        resp = [t for t in dict.fromkeys(texts[pos : pos + k]) if t.strip()]
        pos += k
        if len(resp) < 2:
            continue
        # keep the prompt record's fields (meta lets reward.py correlate RM scores with gold scores)
        base = {**{k: r[k] for k in ("id", "category", "split", "lang", "meta") if k in r},
                "prompt": r["prompt"], "responses": resp}
        if j < n_val:
            val_recs.append(r)
            val_resps.append(resp)
            lab = train_l[j % len(train_l)]
            rows["comparisons_val.jsonl"].append({**base, "ranking": rank(r, resp, lab, rng), "labeler": lab["name"]})
            lab = held_l[j % len(held_l)]
            rows["comparisons_val_heldout.jsonl"].append({**base, "ranking": rank(r, resp, lab, rng),
                                                          "labeler": lab["name"]})
        else:
            lab = train_l[j % len(train_l)]
            rows["comparisons.jsonl"].append({**base, "ranking": rank(r, resp, lab, rng), "labeler": lab["name"]})
    os.makedirs(cfg.out_dir, exist_ok=True)
    for name, rs in rows.items():
        write_jsonl(os.path.join(cfg.out_dir, name), rs)
        print(f"wrote {len(rs)} comparisons -> {os.path.join(cfg.out_dir, name)}")

    # 3. how much do labelers agree on these very responses? (the ceiling for RM accuracy)
    a_train = agreement(val_recs, val_resps, train_l, rng)
    a_held = agreement(val_recs, val_resps, train_l + held_l, rng)
    print(f"inter-labeler agreement on pairs: training labelers {a_train * 100:.1f}% | "
          f"incl. held-out labelers {a_held * 100:.1f}% (paper: 72.6% / 77.3%)")
    ex = rows["comparisons.jsonl"][:1]
    for e in ex:
        print(f"example: {e['prompt'][:80]!r}")
        for rnk, i in enumerate(e["ranking"]):
            print(f"  #{rnk + 1}: {e['responses'][i]!r}")


if __name__ == "__main__":
    main()
