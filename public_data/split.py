"""
Split one comparisons file (yours, or one public_data.convert wrote) into what the stages read:
a training and a validation set for reward.py, prompts for ppo.py, prompts for evaluate.py.

    python -m public_data.split out/hh_rm.jsonl out/gpt2 [--val_frac=0.05] [--seed=0] [--max_eval=500]

writes into OUT_DIR:
    comparisons_train.jsonl   reward.py --data      (the prompts not held out)
    comparisons_val.jsonl     reward.py --val       (held-out prompts: RM accuracy)
    ppo_prompts.jsonl         ppo.py --prompts      ({"id", "prompt", "category"} of the training prompts)
    eval_prompts.jsonl        evaluate.py --prompts (at most --max_eval of the held-out prompts)

The split is by prompt text, seeded: two comparisons of the same prompt never fall on both
sides, and PPO never trains on a prompt that the evaluation asks.
"""
import os
import random
import sys

from data.loaders import DataError, load_comparisons, write_jsonl


def prompt_records(comps):
    """One {"id", "prompt", "category"} per distinct prompt, in the order prompts first appear."""
    out = {}
    for c in comps:
        out.setdefault(c["prompt"], {"id": c["id"], "prompt": c["prompt"], "category": c["category"]})
    return list(out.values())


def split(path, out_dir, val_frac=0.05, seed=0, max_eval=500):
    """-> {file name: record count}. Raises DataError for a malformed file or too few prompts."""
    comps = load_comparisons(path)
    prompts = sorted({c["prompt"] for c in comps})
    if len(prompts) < 2:
        raise DataError(f"{path}: {len(prompts)} distinct prompt(s); need at least 2 to hold some out")
    random.Random(seed).shuffle(prompts)
    held = set(prompts[: max(1, round(len(prompts) * val_frac))])
    train = [c for c in comps if c["prompt"] not in held]
    val = [c for c in comps if c["prompt"] in held]
    files = {"comparisons_train.jsonl": train, "comparisons_val.jsonl": val,
             "ppo_prompts.jsonl": prompt_records(train), "eval_prompts.jsonl": prompt_records(val)[:max_eval]}
    for name, recs in files.items():
        write_jsonl(os.path.join(out_dir, name), recs)
    return {name: len(recs) for name, recs in files.items()}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    pos = [a for a in argv if not a.startswith("--")]
    opts = {"val_frac": 0.05, "seed": 0, "max_eval": 500}
    for a in (a for a in argv if a.startswith("--")):
        key, _, val = a[2:].partition("=")
        if key not in opts or not val:
            sys.exit(f"error: unknown or empty option {a!r} (options: --val_frac=F --seed=N --max_eval=N)")
        try:
            opts[key] = type(opts[key])(val)
        except ValueError:
            sys.exit(f"error: {a!r}: expected a {type(opts[key]).__name__}")
    if len(pos) != 2:
        sys.exit(__doc__.strip().split("\n\n")[1] + "\nerror: expected COMPARISONS OUT_DIR")
    if not 0 < opts["val_frac"] < 1 or opts["max_eval"] < 1:
        sys.exit(f"error: expected 0 < --val_frac < 1 and --max_eval >= 1, got {opts['val_frac']} and {opts['max_eval']}")
    try:
        counts = split(pos[0], pos[1], **opts)
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"split {pos[0]} -> {pos[1]}/: " + ", ".join(f"{n} {k}" for k, n in counts.items()))


if __name__ == "__main__":
    main()
