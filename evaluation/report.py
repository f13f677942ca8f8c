"""
The evaluation report: evaluate.py measures, claims.py judges the paper's claims, this file
writes both as report.md tables (and the summary printed at the end), results.json and
responses.jsonl; figures.py draws the PNG figures. Nothing here samples a model or judges
an answer; it only formats and writes `results` (built in evaluate.main, step 8). What is
measured (the model families, the generalisation splits, the pairs) is decided in
evaluate.py and arrives inside `results`; this file imports nothing from it.
"""

import json
import math
import os

from evaluation.figures import make_figures
from evaluation.metrics import pair_key

# display names of evaluate.model_family's families; also Figure 1's lines, in legend order
FAMILY_LABEL = {"base": "base (GPT)", "prompted": "prompted base", "sft": "SFT", "ppo": "PPO",
                "ppo_ptx": "PPO-ptx", "ppo_oracle": "ORACLE: PPO-ptx on the gold judge", "dpo": "DPO",
                "other": "other"}


def pct(x):
    return "-" if x is None or x != x else f"{x:.1%}"


def pct_ci(w):
    return "-" if w is None or w["rate"] != w["rate"] else f"{w['rate']:.1%} [{w['lo']:.1%}, {w['hi']:.1%}]"


def num(x, fmt=".3f"):
    return "-" if x is None or x != x else format(x, fmt)


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def md_cell(text, limit=240):
    text = " ".join(str(text).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return (text or "(empty)").replace("|", "\\|")


RM_JUDGE_NOTE = ("Judged by the reward model {rm}, not by people: the prompts carry no `meta`, so neither the gold "
                 "judge nor the simulated labelers apply. PPO was trained to raise this very score, so its rows are "
                 "flattered, as is best-of-N (chosen by the same model); a reward model trained on other comparisons "
                 "is a fairer judge.")


def rm_table(results):
    """The table of an evaluation judged by a reward model (evaluate.rm_judged)."""
    ref, rows = results["reference"], []
    for name, m in results["models"].items():
        rows.append([name, f"{m['rm_score']:+.3f}", "-" if name == ref else pct_ci(m["win_vs_reference_by_rm"]),
                     f"{m['words']:.1f}", num(m["heldout_loss"]), pct(m["probe_acc"])])
    return md_table(["model", "mean RM score", f"win vs {ref} by RM [95% CI]", "words", "held-out LM loss", "probes"],
                    rows)


def render_rm_report(results):
    """report.md of an evaluation judged by a reward model: the note on that judge, the table, samples."""
    lines = ["# Evaluation by a reward model", "", results["note"], "",
             f"{results['n_prompts']} prompts from {results['prompts']}; every model sampled at its temperature "
             "with the same seeds.", "", rm_table(results), "", "## Samples", ""]
    for s in results["samples"]:
        lines.append(f"**{md_cell(s['prompt'])}**\n")
        lines += [f"- {n} ({a['score']:+.2f}): {md_cell(a['response'])}" for n, a in s["answers"].items()] + [""]
    return "\n".join(lines) + "\n"


def wins_ties(w):
    """'106 / 135 / 83 (56.1%)': wins / ties / losses and the win rate over the decisive pairs alone."""
    if not w or "wins" not in w:
        return "-"
    decisive = w["wins"] + w["losses"]
    return f"{w['wins']} / {w['ties']} / {w['losses']} ({pct(w['wins'] / decisive) if decisive else '-'})"


def main_table(results):
    """The headline table (also printed to stdout): one row per model. A tie is an identical
    answer (half a win); the last column says how many there were and the decisive-only rate."""
    ref, wr = results["reference"], results["win_rates"]
    rows = []
    for name, m in results["models"].items():
        w = wr["train"].get(pair_key(name, ref))
        rows.append([name, FAMILY_LABEL.get(m["family"], m["family"]), f"{m['params'] / 1e6:.2f}M",
                     num(m["mean_gold"], ".2f"), pct_ci(w), pct((w or {}).get("expected")),
                     pct_ci(wr["heldout"].get(pair_key(name, ref))), wins_ties(w) if name != ref else "-"])
    return md_table(["model", "family", "params", "mean gold score (1-7)", f"win vs {ref} (training labelers)",
                     "expected", f"win vs {ref} (held-out labelers)", "wins / ties / losses (decisive only)"], rows)


def kl_and_dpo_tables(results):
    """Markdown lines: how far each model moved from the reference (evaluate.kl_to_reference),
    and, with a DPO model, DPO against PPO and PPO-ptx head to head."""
    ref, roles, wr, out = results["reference"], results["roles"], results["win_rates"], []
    kl = {n: m for n, m in results["models"].items() if m.get("kl_ref") is not None}
    if kl:
        out += [f"## KL to {ref}", "", f"How far each model moved from `{ref}`: the mean of log pi(y|x) - log "
                f"pi_{ref}(y|x) over its own answers to the prompts of the training mix, both at the model's "
                "sampling temperature (k1, the estimator PPO logs per answer on its training prompts at its own "
                "temperature). PPO holds it down with a per-token penalty in its reward, DPO with the reference "
                "inside its loss.", ""]
        rows = [[n, num(m["kl_ref"], ".4f"), num(m["kl_ref_answer"]), num(m["mean_gold"], ".2f"),
                 pct_ci(wr["train"].get(pair_key(n, ref)))] for n, m in kl.items()]
        out += [md_table(["model", "KL per token", "KL per answer", "mean gold score",
                          f"win vs {ref} (training labelers)"], rows), ""]
    if "dpo" in roles:
        rows = [[f"{roles['dpo']} vs {roles[f]}", pct_ci(wr["train"].get(pair_key(roles["dpo"], roles[f]))),
                 pct_ci(wr["heldout"].get(pair_key(roles["dpo"], roles[f])))] for f in ("ppo", "ppo_ptx") if f in roles]
        out += ["## DPO beside PPO", "", "Both start from the same SFT model and learn from the same comparisons: "
                "PPO through the reward model and its own samples, DPO (Rafailov et al. 2023) from the labelers' "
                "pairs directly, with no reward model and no sampling. Head to head, the win rate of the DPO "
                "model's answer:", ""]
        out += [md_table(["pair", "training labelers", "held-out labelers"], rows) if rows else
                "(no PPO model in this evaluation)", ""]
    return out


def win_rate_tables(results):
    """Markdown lines: the headline table (paper Figure 1), then every model against the largest base."""
    wr, large = results["win_rates"], results["roles"].get("large_base")
    out = ["## Win rate and quality (paper Figure 1)", "", main_table(results), ""]
    if large:
        rows = [[n, pct_ci(wr["train"].get(pair_key(n, large))), pct_ci(wr["heldout"].get(pair_key(n, large)))]
                for n in results["models"]]
        out += [f"Against the largest base model, `{large}`:", "",
                md_table(["model", "training labelers", "held-out labelers"], rows), ""]
    return out


def gold_judge_tables(models):
    """Markdown lines: the gold judge's tables, one row per model -- Figure 4's metadata,
    truthfulness, toxicity, and the alignment tax."""
    out = ["## Metadata (paper Figure 4)", "", "Gold judge, prompts from the training mix of categories. "
           "'Ignores constraint' counts only prompts that state one.", ""]
    rows = [[n, pct(m["axes"]["fails_task"]), f"{pct(m['axes']['ignores_constraint'])} (n={m['axes']['n_constraint']})",
             pct(m["axes"]["hallucinates"]), pct(m["axes"]["inappropriate"]), pct(m["axes"].get("filler"))]
            for n, m in models.items()]
    out += [md_table(["model", "fails the task", "ignores explicit constraint", "hallucinates",
                      "inappropriate language", "filler phrase"], rows), ""]

    out += ["## Truthfulness", "", "Prompts that invite a made-up answer (a text that does not contain the answer, "
            "a person who does not exist, a false premise): does the model invent one? And on the unanswerable "
            "ones, does it say it does not know?", ""]
    rows = [[n, m["truthfulness"]["n"], pct(m["truthfulness"]["invents"]), m["truthfulness"].get("n_unanswerable", "-"),
             pct(m["truthfulness"]["says_unknown"])] for n, m in models.items()]
    out += [md_table(["model", "trap prompts", "invents an answer", "unanswerable", "says it does not know"],
                     rows), ""]

    out += ["## Toxicity", "", "Answers containing an insult word (toxic), or an insult or rude phrase "
            "(inappropriate), by what the prompt asks about tone.", ""]
    rows = [[n, pct(m["toxicity"]["respectful"]["toxic"]), pct(m["toxicity"]["none"]["toxic"]),
             pct(m["toxicity"]["respectful"]["inappropriate"]), pct(m["toxicity"]["none"]["inappropriate"])]
            for n, m in models.items()]
    some = next(iter(models.values()))["toxicity"]
    out += [md_table(["model", f"toxic, asked respectful (n={some['respectful']['n']})",
                      f"toxic, no tone instruction (n={some['none']['n']})",
                      "inappropriate, respectful", "inappropriate, no instruction"], rows), ""]

    out += ["## Alignment tax", "", "Next-token loss on the held-out corpus (lower is better) and greedy "
            "fact-completion accuracy: what RLHF may cost on plain language modelling.", ""]
    rows = [[n, num(m["heldout_loss"]), pct(m["probe_acc"])] for n, m in models.items()]
    return out + [md_table(["model", "held-out loss", "fact completion"], rows), ""]


def generalisation_table(results):
    """Markdown lines: win rate vs the reference on each split outside the training mix (Figure 8)."""
    ref, gen = results["reference"], results["generalisation"]
    out = ["## Generalisation (paper Figure 8)", "", f"Win rate vs `{ref}`, training labelers, on prompts "
           "outside the fine-tuning mix.", ""]
    rows = [[n] + [pct_ci(gen[s].get(pair_key(n, ref))) for s in gen] for n in results["models"]]  # a column a split
    return out + [md_table(["model"] + [f"{s} (n={results['n_split'].get(s, 0)})" for s in gen], rows), ""]


def ppo_log_tables(ppo_logs):
    """Markdown lines: per PPO log, the RM score and the gold score at a few iterations (or why it was skipped)."""
    out = ["## Reward over-optimisation", "", "From the PPO logs: the reward model's raw score (what PPO optimises; "
           "responses that never stop get a fixed penalty instead, counted in the no-EOS column), and the gold "
           "score (what we want), as the policy drifts from SFT (KL per response, nats).", ""]
    for path, pts in ppo_logs.items():
        if isinstance(pts, str):
            out += [f"- `{path}`: {pts}"]
            continue
        out += [f"`{path}`:", "", md_table(["iteration", "KL", "RM score (raw)", "no-EOS rate", "gold score"],
                                           [[p["iter"], num(p["kl"]), num(p["rm_score"]), f"{p['no_eos']:.0%}",
                                             num(p["gold"])] for p in pts]), ""]
    if not ppo_logs:
        out += ["(no PPO logs given)"]
    return out + [""]


def render_report(results):
    """report.md of an evaluation by the simulated labelers and the gold judge: the tables in
    the order of the paper's Section 4, the claims (claims.claims_table), samples, figures."""
    cfg = results["config"]
    out = ["# Evaluation report", "",
           f"{results['n_prompts']} held-out prompts ({results['n_main']} from the training mix of categories), "
           f"every model sampled at temperature {cfg['temperature']}, seed {cfg['seed']}, at most "
           f"{cfg['max_new_tokens']} new tokens. Win rate = mean per-prompt preference of one labeler "
           "(round-robin over the group) between the model's answer and the reference's answer; a tie "
           "(identical answers) counts 0.5. 95% intervals: Wilson score interval on that mean. 'Expected': "
           "the same rate averaged over the labelers' noise (metrics.expected_win), which one evaluation's "
           "coin flips do not move; the answers' own sampling still does.", ""]
    out += win_rate_tables(results)
    out += kl_and_dpo_tables(results)
    out += gold_judge_tables(results["models"])
    out += generalisation_table(results)
    out += ppo_log_tables(results["ppo_logs"])

    out += ["## Paper claim vs our measure", ""]
    rows = [[c["claim"], c["paper"], c["measured"], {True: "met", False: "not met", None: "-"}[c["met"]] +
             (f" ({c['note']})" if c["note"] else "")] for c in results["claims"]]
    out += [md_table(["claim", "paper", "ours", "verdict"], rows), ""]

    out += ["## Samples side by side", ""]
    for s in results["samples"]:
        out += [f"**[{s['category']}, {s['split']}]** {md_cell(s['prompt'], 400)}", ""]
        out += [md_table(["model", "gold", "answer"], [[n, f"{a['score']:.2f}", md_cell(a["response"])]
                                                       for n, a in s["answers"].items()]), ""]
    if results.get("figures_note"):
        out += [results["figures_note"], ""]
    return "\n".join(out)


def pick_samples(recs, k):
    """The first prompt of each category, in file order, up to k."""
    seen, out = set(), []
    for i, r in enumerate(recs):
        if r["category"] not in seen:
            seen.add(r["category"])
            out.append(i)
        if len(out) == k:
            break
    return out


def side_by_side(recs, models, responses, k):
    """The report's samples: the first prompt of each of k categories, every model's answer and gold score."""
    return [dict(prompt=recs[i]["prompt"], category=recs[i]["category"], split=recs[i].get("split"),
                 answers={n: dict(response=responses[n][i], score=models[n]["gold"][i]["score"]) for n in models})
            for i in pick_samples(recs, k)]


def print_summary(results, out_dir):
    """The headline table and every claim's verdict, to stdout, after report.md is written."""
    print()
    print(main_table(results))
    print()
    for c in results["claims"]:
        verdict = {True: "MET", False: "not met", None: "skipped"}[c["met"]]
        print(f"{verdict:>8} | {c['claim']}: {c['measured']}" + (f" ({c['note']})" if c["note"] else ""))
    if results["figures_note"].startswith("matplotlib"):
        print(results["figures_note"])
    print(f"wrote {os.path.join(out_dir, 'report.md')}, results.json, responses.jsonl")


# -----------------------------------------------------------------------------
# the files

def write_outputs(results, ppo_log_rows, recs, responses, models, out_dir):
    """report.md (with the figures, whose note it cites), results.json and responses.jsonl."""
    os.makedirs(out_dir, exist_ok=True)
    results["ppo_log_rows"] = ppo_log_rows  # for the figures only: not written to results.json
    results["figures_note"] = make_figures(results, out_dir)
    del results["ppo_log_rows"]
    write_files(out_dir, render_report(results), results, [
        dict(id=r.get("id"), category=r["category"], split=r.get("split"), prompt=r["prompt"],
             answers={n: dict(response=responses[n][i], gold=models[n]["gold"][i]) for n in models})
        for i, r in enumerate(recs)])


def _json_safe(x):
    """NaN/inf -> None, so results.json is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_files(out_dir, report, results, response_rows):
    """report.md, results.json and responses.jsonl (one row per prompt) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(_json_safe(results), f, indent=1)
    with open(os.path.join(out_dir, "responses.jsonl"), "w") as f:
        for row in response_rows:
            f.write(json.dumps(row) + "\n")
