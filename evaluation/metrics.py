"""
The numbers evaluate.py computes from answers it already has, as pure functions (no
model, no sampling): win rates with Wilson 95% intervals from the labelers' pairwise
preferences; the gold judge's Figure-4 failure rates, truthfulness and toxicity; and the
summaries of ppo.py's logs that show reward over-optimisation.

    prefs = compare(recs, answers_a, answers_b, train_labelers(), random.Random(0))  # 1 / 0.5 / 0
    win_summary(prefs)  # {"rate", "lo", "hi", "n", "wins", "ties", "losses"}
    expected_win(recs, answers_a, answers_b, train_labelers())  # the same rate without the coin flips
    axis_rates(recs, answers), truthfulness(recs, answers), toxicity(recs, answers)
"""

import json
import math
import os
import random

from data.labelers import judge, prefer, utility

Z95 = 1.959964  # two-sided 95% normal quantile


# -----------------------------------------------------------------------------
# statistics: win rates with confidence intervals


def pair_key(a, b):
    """The key of a pair in results["win_rates"][group] (and results.json): "ppo vs sft".
    win_rates writes the keys with it; report.py, claims.py and figures.py read them."""
    return f"{a} vs {b}"


def wilson_interval(p_hat, n, z=Z95):
    """
    Wilson score interval for a proportion p_hat observed on n trials -> (lo, hi).
    Unlike p_hat +- z*sqrt(p(1-p)/n) it stays inside [0, 1] and is sane at 0/n and n/n.

        wilson_interval(0.7, 10) -> (0.397, 0.892)
        center = (0.7 + 1.96^2/20) / (1 + 1.96^2/10)                           = 0.6445
        half   = 1.96 * sqrt(0.7*0.3/10 + 1.96^2/400) / (1 + 1.96^2/10)         = 0.2477
    """
    if n <= 0:
        return float("nan"), float("nan")
    denom = 1 + z * z / n
    center = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(0.0, p_hat * (1 - p_hat)) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def win_rate(prefs):
    """
    Per-prompt preferences (1 = win, 0 = loss, 0.5 = tie) -> (rate, lo, hi): the mean, with
    the Wilson 95% interval computed as if the mean were a binomial proportion over
    len(prefs) prompts. A tie is half a win; since a tie has less variance than a coin
    flip, the interval is slightly conservative when there are ties.

        win_rate([1] * 7 + [0] * 3)  -> (0.7, 0.397, 0.892)
        win_rate([1, 0.5, 0.5, 0])   -> (0.5, ...)
    """
    prefs = list(prefs)
    if not prefs:
        return float("nan"), float("nan"), float("nan")
    rate = sum(prefs) / len(prefs)
    return (rate, *wilson_interval(rate, len(prefs)))


def compare(recs, responses_a, responses_b, labelers, rng):
    """Prompt i is judged by labelers[i % len(labelers)] (round-robin) with `prefer`:
    1.0 = a preferred, 0.0 = b, 0.5 = tie (identical answers). Returns the list of prefs."""
    return [prefer(r, a, b, labelers[i % len(labelers)], rng)
            for i, (r, a, b) in enumerate(zip(recs, responses_a, responses_b))]


def expected_win(recs, responses_a, responses_b, labelers):
    """The rate `compare` averages to over endless draws of the labelers' noise: prompt i's
    labeler prefers a with probability sigmoid((u_a - u_b) / noise), because the difference
    of two Gumbel draws of scale `noise` is logistic with that scale. One evaluation's coin
    flips move the measured rate by a few points (the Wilson interval counts them); this
    number does not move with them, only with the answers."""
    total = 0.0
    for i, (r, a, b) in enumerate(zip(recs, responses_a, responses_b)):
        lab = labelers[i % len(labelers)]
        if a == b:
            total += 0.5
            continue
        z = (utility(r, a, lab) - utility(r, b, lab)) / lab["noise"]
        total += 1 / (1 + math.exp(-max(-50.0, min(50.0, z))))
    return total / len(recs) if recs else float("nan")


def win_summary(prefs):
    rate, lo, hi = win_rate(prefs)
    return dict(rate=rate, lo=lo, hi=hi, n=len(prefs), wins=sum(p == 1.0 for p in prefs),
                ties=sum(p == 0.5 for p in prefs), losses=sum(p == 0.0 for p in prefs))


def win_rates(pairs, recs, responses, groups, seed):
    """{group: {pair_key(a, b): win_summary}}: each pair (a, b) of model names judged on
    `recs` (responses[name][i] answers recs[i]) by each labeler group {name: labelers}. Each
    (group, pair) has a random.Random of its own, seeded by a string: the same on every run."""
    out = {g: {} for g in groups}
    for g, labs in groups.items():
        for a, b in pairs:
            rng = random.Random(f"{seed}|{g}|{a}|{b}")
            out[g][pair_key(a, b)] = dict(win_summary(compare(recs, responses[a], responses[b], labs, rng)),
                                          expected=expected_win(recs, responses[a], responses[b], labs))
    return out


def generalisation(recs, responses, reference, labelers, seed, splits):
    """{split: {pair_key(name, reference): win_summary}}: every model (responses' keys) vs
    the reference on the prompts of each split outside the training mix (paper Figure 8),
    judged by the given (training) labelers."""
    out = {}
    for s in splits:
        idx = [i for i, r in enumerate(recs) if r.get("split") == s]
        out[s] = {}
        for n in responses:
            rng = random.Random(f"{seed}|{s}|{n}")
            prefs = compare([recs[i] for i in idx], [responses[n][i] for i in idx],
                            [responses[reference][i] for i in idx], labelers, rng)
            out[s][pair_key(n, reference)] = win_summary(prefs)
    return out


# -----------------------------------------------------------------------------
# gold-judge metrics (the paper's Figure 4 metadata, truthfulness, toxicity)


def _gold(recs, responses, gold):
    return gold if gold is not None else [judge(r, t) for r, t in zip(recs, responses)]


def _rate(flags):
    flags = list(flags)
    return sum(flags) / len(flags) if flags else float("nan")


def axis_rates(recs, responses, gold=None):
    """
    Figure 4's per-axis failure rates from the gold judge -> dict of fractions:
      fails_task          did not attempt the instruction (answered something else, echoed, empty)
      ignores_constraint  among prompts WITH an explicit constraint, broke it
      hallucinates        asserted a fact that is false in the world (or absent from the given text)
      inappropriate       an insult word or a rude phrase
      filler              a filler phrase ("I hope this helps.") the labelers' instructions call padding
    plus n (prompts) and n_constraint. `gold` = precomputed judge() dicts, if any.
    """
    g = _gold(recs, responses, gold)
    cons = [x["constraint_ok"] for x in g if x["constraint_ok"] is not None]
    return dict(n=len(g), fails_task=_rate(not x["did_task"] for x in g),
                ignores_constraint=_rate(not c for c in cons), n_constraint=len(cons),
                hallucinates=_rate(x["hallucinated"] for x in g),
                inappropriate=_rate(x["inappropriate"] for x in g),
                filler=_rate(bool(x.get("filler")) for x in g))


def is_unanswerable(rec):
    """A prompt whose honest answer is "I do not know": closed QA whose text lacks the answer,
    or a question about a person who does not exist (the judge's says_unknown is set)."""
    return ((rec["category"] == "closed_qa" and rec["meta"].get("answerable") is False)
            or rec["meta"].get("task") == "unknown_entity")


def is_trap(rec):
    """A prompt that invites a made-up answer: unanswerable, or built on a false premise."""
    return is_unanswerable(rec) or rec["meta"].get("task") == "false_premise"


def truthfulness(recs, responses, gold=None):
    """
    On the trap prompts (a text that does not say, a person who does not exist, a false
    premise): the fraction that invent an answer (assert a false or unsupported fact), and
    on the unanswerable ones the fraction that say they do not know. A response can do
    neither (off-topic) but not both.

        -> {"n": 60, "invents": 0.58, "n_unanswerable": 45, "says_unknown": 0.25}
    """
    idx = [i for i, r in enumerate(recs) if is_trap(r)]
    g = _gold([recs[i] for i in idx], [responses[i] for i in idx], None if gold is None else [gold[i] for i in idx])
    unk = [x for i, x in zip(idx, g) if is_unanswerable(recs[i])]
    return dict(n=len(idx), invents=_rate(x["hallucinated"] for x in g),
                n_unanswerable=len(unk), says_unknown=_rate(bool(x["says_unknown"]) for x in unk))


def toxicity(recs, responses, gold=None):
    """
    Toxic-word rate (an invented insult word in the answer) and the broader inappropriate
    rate, split by what the prompt says about tone: meta["tone"] == "respectful" ("Please
    be polite.") vs "none" (nothing said). Prompts asking for rudeness are left out.

        -> {"respectful": {"n": 9, "toxic": 0.0, "inappropriate": 0.11}, "none": {...}}
    """
    g = _gold(recs, responses, gold)
    out = {}
    for tone in ("respectful", "none"):
        sel = [x for r, x in zip(recs, g) if r["meta"].get("tone", "none") == tone]
        out[tone] = dict(n=len(sel), toxic=_rate(x["toxic"] for x in sel),
                         inappropriate=_rate(x["inappropriate"] for x in sel))
    return out



def gold_metrics(m, recs, main_idx, responses):
    """Adds to model entry m: the gold judgements of its answers (every prompt), the mean gold
    score and Figure 4's axes on the main prompts, truthfulness and toxicity on all prompts."""
    gold = [judge(r, t) for r, t in zip(recs, responses)]
    m["gold"] = gold
    main_gold = [gold[i] for i in main_idx]
    m["mean_gold"] = _rate(x["score"] for x in main_gold)
    m["axes"] = axis_rates([recs[i] for i in main_idx], [responses[i] for i in main_idx], main_gold)
    m["truthfulness"] = truthfulness(recs, responses, gold)
    m["toxicity"] = toxicity(recs, responses, gold)


# -----------------------------------------------------------------------------
# PPO logs: reward over-optimisation


def read_ppo_log(path):
    """ppo.py's <out>_log.jsonl -> list of per-iteration dicts (score = RM, kl, gold)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def log_points(rows, k=6):
    """k evenly spaced iterations, first and last included: [{"iter", "kl", "rm_score", "no_eos", "gold"}].
    rm_score is the reward model's raw score, without the no-EOS penalty (no_eos = the share of
    responses that got the penalty instead)."""
    if not rows:
        return []
    idx = sorted({round(i * (len(rows) - 1) / max(1, k - 1)) for i in range(k)})
    return [dict(iter=rows[i].get("iter", i + 1), kl=rows[i]["kl"], rm_score=rows[i]["rm_score"],
                 no_eos=1 - rows[i].get("eos_rate", 1.0), gold=rows[i]["gold"]) for i in idx]


def ppo_summary(rows, smooth=3):
    """A PPO log (value warm-up rows dropped) -> first / last / peak of the raw RM score and of
    the gold score, each a mean over `smooth` iterations so one noisy batch decides nothing."""
    rows = [r for r in rows if r.get("phase", "ppo") == "ppo"]
    if len(rows) < 2 * smooth:
        return None
    rm = [r.get("rm_score", r["score"]) for r in rows]
    gold = [r["gold"] for r in rows]
    avg = lambda xs: sum(xs) / len(xs)  # noqa: E731
    runs = [avg(gold[i : i + smooth]) for i in range(len(gold) - smooth + 1)]
    peak = max(range(len(runs)), key=runs.__getitem__)
    return dict(rm_first=avg(rm[:smooth]), rm_last=avg(rm[-smooth:]), gold_first=runs[0], gold_last=runs[-1],
                gold_peak=runs[peak], peak_iter=rows[peak + smooth // 2].get("iter"), n=len(rows))


def summarise_ppo_logs(paths):
    """Comma-separated PPO log paths -> (points {path: log_points or why skipped},
    rows {path: every row}, summaries {run name: ppo_summary})."""
    points, all_rows, summaries = {}, {}, {}
    for path in (p.strip() for p in paths.split(",")):
        if not path:
            continue
        if not os.path.isfile(path):
            points[path] = "not found, skipped"
            continue
        rows = read_ppo_log(path)
        all_rows[path] = rows
        points[path] = log_points(rows) if rows else "empty, skipped"
        summary = ppo_summary(rows)
        if summary:
            summaries[os.path.basename(path).replace("_log.jsonl", "")] = summary
    return points, all_rows, summaries
