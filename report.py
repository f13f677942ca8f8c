"""
The evaluation report: evaluate.py measures, this file writes what it measured as
report.md tables, results.json and responses.jsonl, and (when matplotlib is installed)
PNG figures. Nothing here samples a model or judges an answer; it only formats and
writes `results` (see evaluate.claims_table for its layout). What is measured (the model
families, the generalisation splits, the pairs) is decided in evaluate.py and arrives inside `results`; this file imports nothing from it.
"""

import json
import math
import os

# display names of evaluate.model_family's families; also Figure 1's lines, in legend order
FAMILY_LABEL = {"base": "base (GPT)", "prompted": "prompted base", "sft": "SFT", "ppo": "PPO",
                "ppo_ptx": "PPO-ptx", "dpo": "DPO", "other": "other"}


def pair_key(a, b):
    """The key of a pair in results["win_rates"][group] (and results.json): "ppo vs sft". evaluate.py
    writes the keys with it, this file and the claims read them."""
    return f"{a} vs {b}"


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


def main_table(results):
    """The headline table (also printed to stdout): one row per model."""
    ref, wr = results["reference"], results["win_rates"]
    rows = []
    for name, m in results["models"].items():
        rows.append([name, FAMILY_LABEL.get(m["family"], m["family"]), f"{m['params'] / 1e6:.2f}M",
                     num(m["mean_gold"], ".2f"), pct_ci(wr["train"].get(pair_key(name, ref))),
                     pct_ci(wr["heldout"].get(pair_key(name, ref)))])
    return md_table(["model", "family", "params", "mean gold score (1-7)", f"win vs {ref} (training labelers)",
                     f"win vs {ref} (held-out labelers)"], rows)


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


def render_report(results):
    cfg, ref, models, wr = results["config"], results["reference"], results["models"], results["win_rates"]
    large = results["roles"].get("large_base")
    out = ["# Evaluation report", "",
           f"{results['n_prompts']} held-out prompts ({results['n_main']} from the training mix of categories), "
           f"every model sampled at temperature {cfg['temperature']}, seed {cfg['seed']}, at most "
           f"{cfg['max_new_tokens']} new tokens. Win rate = mean per-prompt preference of one labeler "
           "(round-robin over the group) between the model's answer and the reference's answer; a tie "
           "(identical answers) counts 0.5. 95% intervals: Wilson score interval on that mean.", ""]
    out += ["## Win rate and quality (paper Figure 1)", "", main_table(results), ""]
    if large:
        rows = [[n, pct_ci(wr["train"].get(pair_key(n, large))), pct_ci(wr["heldout"].get(pair_key(n, large)))]
                for n in models]
        out += [f"Against the largest base model, `{large}`:", "",
                md_table(["model", "training labelers", "held-out labelers"], rows), ""]
    out += kl_and_dpo_tables(results)

    out += ["## Metadata (paper Figure 4)", "", "Gold judge, prompts from the training mix of categories. "
            "'Ignores constraint' counts only prompts that state one.", ""]
    rows = [[n, pct(m["axes"]["fails_task"]), f"{pct(m['axes']['ignores_constraint'])} (n={m['axes']['n_constraint']})",
             pct(m["axes"]["hallucinates"]), pct(m["axes"]["inappropriate"])] for n, m in models.items()]
    out += [md_table(["model", "fails the task", "ignores explicit constraint", "hallucinates",
                      "inappropriate language"], rows), ""]

    out += ["## Truthfulness", "", "Closed-QA prompts whose text does not contain the answer: does the model say "
            "so, or invent an answer?", ""]
    rows = [[n, m["truthfulness"]["n"], pct(m["truthfulness"]["says_unknown"]), pct(m["truthfulness"]["invents"])]
            for n, m in models.items()]
    out += [md_table(["model", "prompts", "says the text does not say", "invents an answer"], rows), ""]

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
    out += [md_table(["model", "held-out loss", "fact completion"], rows), ""]

    out += ["## Generalisation (paper Figure 8)", "", f"Win rate vs `{ref}`, training labelers, on prompts "
            "outside the fine-tuning mix.", ""]
    gen = results["generalisation"]
    rows = [[n] + [pct_ci(gen[s].get(pair_key(n, ref))) for s in gen] for n in models]  # one column per split
    out += [md_table(["model"] + [f"{s} (n={results['n_split'].get(s, 0)})" for s in gen], rows), ""]

    out += ["## Reward over-optimisation", "", "From the PPO logs: the reward model's raw score (what PPO optimises; "
            "responses that never stop get a fixed penalty instead, counted in the no-EOS column), and the gold "
            "score (what we want), as the policy drifts from SFT (KL per response, nats).", ""]
    for path, pts in results["ppo_logs"].items():
        if isinstance(pts, str):
            out += [f"- `{path}`: {pts}"]
            continue
        out += [f"`{path}`:", "", md_table(["iteration", "KL", "RM score (raw)", "no-EOS rate", "gold score"],
                                           [[p["iter"], num(p["kl"]), num(p["rm_score"]), f"{p['no_eos']:.0%}",
                                             num(p["gold"])] for p in pts]), ""]
    if not results["ppo_logs"]:
        out += ["(no PPO logs given)"]
    out += [""]

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


def make_figures(results, out_dir):
    """PNG figures with matplotlib's Agg backend; returns a note for the report."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: skipping figures"
    ref, models = results["reference"], results["models"]
    paths = []

    # 1. Figure 1: win rate vs reference over model size, one line per family
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, fam in enumerate(FAMILY_LABEL):
        same_sampling = [n for n in models if n not in (results["roles"].get("sft_greedy"),  # no size point for
                                                        results["roles"].get("best_of_n"))]  # greedy or best-of-N
        pts = sorted(((models[n]["params"], results["win_rates"]["train"][pair_key(n, ref)]) for n in same_sampling
                      if models[n]["family"] == fam and pair_key(n, ref) in results["win_rates"]["train"]),
                     key=lambda p: p[0])
        if pts:
            xs, ws = [p[0] * 1.04 ** (k - 2) for p in pts], [p[1] for p in pts]  # nudge families apart
            ys = [w["rate"] for w in ws]
            err = [[y - w["lo"] for y, w in zip(ys, ws)], [w["hi"] - y for y, w in zip(ys, ws)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=FAMILY_LABEL[fam])
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set(xlabel="parameters (log scale)", ylabel=f"win rate vs {ref}", ylim=(0, 1),
           title="Preference vs model size (training labelers)")
    ax.legend()
    paths.append(_save(fig, out_dir, "winrate_vs_size.png"))

    # 2. raw RM score, no-EOS rate and gold score over the iterations, per PPO run; and gold vs KL
    logs = {p: pts for p, pts in results["ppo_log_rows"].items() if pts}
    if logs:
        fig, axes = plt.subplots(1, 4, figsize=(18, 4))

        def smooth(xs, w=5):  # running mean over the last w iterations: one batch is 16 prompts, noisy
            return [sum(xs[max(0, i - w + 1) : i + 1]) / len(xs[max(0, i - w + 1) : i + 1]) for i in range(len(xs))]

        for k, (path, rows) in enumerate(logs.items()):
            label = os.path.basename(path).replace("_log.jsonl", "")
            it = [r.get("iter", i + 1) for i, r in enumerate(rows)]
            for ax, ys in ((axes[0], [r.get("rm_score", r["score"]) for r in rows]), (axes[1], [r["gold"] for r in rows])):
                ax.plot(it, ys, "o", ms=3, alpha=0.3, color=f"C{k}")  # each iteration's batch
                ax.plot(it, smooth(ys), "-", color=f"C{k}", label=label + " (mean of 5)")
            axes[2].plot(it, [1 - r.get("eos_rate", 1.0) for r in rows], "-o", ms=3, label=label)
            axes[3].plot([r["kl"] for r in rows], [r["gold"] for r in rows], "o", alpha=0.6, label=label)  # points: KL is not monotone in the iteration
        axes[0].set(xlabel="PPO iteration", ylabel="RM score (raw)", title="what PPO optimises")
        axes[1].set(xlabel="PPO iteration", ylabel="gold score (1-7)", title="what we want")
        axes[2].set(xlabel="PPO iteration", ylabel="share of responses without EOS", title="no-EOS penalty rate")
        axes[3].set(xlabel="KL(policy || SFT) per response", ylabel="gold score (1-7)", title="gold vs KL")
        axes[0].legend()
        paths.append(_save(fig, out_dir, "overoptimization.png"))

    # 3. alignment tax: held-out LM loss per model
    names = [n for n, m in models.items() if m["heldout_loss"] is not None]
    if names:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.bar(names, [models[n]["heldout_loss"] for n in names])
        ax.set(ylabel="held-out LM loss", title="Alignment tax (lower is better)")
        lo = min(models[n]["heldout_loss"] for n in names)
        ax.set_ylim(lo * 0.9, None)
        paths.append(_save(fig, out_dir, "alignment_tax.png"))
    return "Figures: " + ", ".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in paths)


def _save(fig, out_dir, name):
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -----------------------------------------------------------------------------
# the files

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
