"""
The evaluation report's figures: four a teacher can put on slides, each drawn from
evaluate.py's `results` alone with matplotlib's Agg backend (no display needed). matplotlib
is optional (requirements-plot.txt): without it `make_figures` draws nothing and says so.

    note = make_figures(results, "out/eval")  # "Figures: ![winrate.png](winrate.png), ..."
"""

import os

from evaluation.metrics import pair_key

FIGURES = ("winrate.png", "overoptimization.png", "behaviour.png", "alignment_tax.png")
NO_MATPLOTLIB = "matplotlib not installed: the report has no figures (pip install -r requirements-plot.txt)"

# Figure 4's axes, in the order drawn: results["models"][name]["axes"][key] is a fraction. Any
# other fraction-valued key in "axes" is drawn after these, under its own name.
AXES = (("fails_task", "did not attempt\nthe task"), ("ignores_constraint", "broke an explicit\nconstraint"),
        ("hallucinates", "hallucinated\na fact"), ("inappropriate", "inappropriate\nlanguage"),
        ("filler", "filler\nphrase"))
FAMILY_COLOR = {"base": "#9e9e9e", "prompted": "#cfcfcf", "sft": "#1f77b4", "ppo": "#ff7f0e", "ppo_ptx": "#2ca02c",
                "ppo_oracle": "#d62728"}
OTHER_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _finite(x):
    return isinstance(x, (int, float)) and x == x and abs(x) != float("inf")


def model_colors(results):
    """{model: (colour, hatch)}: one colour per family (an unknown family, e.g. a DPO model, gets
    one of its own), hatched for the two no-RL baselines (greedy SFT, best-of-N) and, cross-hatched,
    for the oracle diagnostic (trained on the gold judge, which no real project has)."""
    special = {results.get("roles", {}).get(r) for r in ("sft_greedy", "best_of_n")} - {None}
    extra, out = {}, {}
    for name, m in results["models"].items():
        fam = m.get("family", "other")
        if fam not in FAMILY_COLOR and fam not in extra:
            extra[fam] = OTHER_COLORS[len(extra) % len(OTHER_COLORS)]
        out[name] = (FAMILY_COLOR.get(fam) or extra[fam], "//" if name in special else "xx" if fam == "ppo_oracle" else None)
    return out


def model_label(name, m):
    return f"{name}\n{m['params'] / 1e6:.2f}M" if _finite(m.get("params")) else name


def make_figures(results, out_dir):
    """
    PNG figures into out_dir with matplotlib's Agg backend (no display needed); returns the
    note report.md cites. Without matplotlib nothing is drawn and the note says so (it starts
    with "matplotlib", which evaluate.py prints). Every figure draws what `results` has and
    skips what it lacks (a model, an axis, a PPO log, a gold score), so a run without some
    stage still gets the others:
      winrate.png           win rate vs the reference per model, both labeler groups, 95% intervals
      overoptimization.png  RM score and gold score over PPO iterations, per run; gold vs KL
      behaviour.png         Figure 4's failure rates per model (the gold judge)
      alignment_tax.png     held-out LM loss (and fact completion) per model
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return NO_MATPLOTLIB
    with plt.rc_context({"font.size": 10, "axes.spines.top": False, "axes.spines.right": False}):
        paths = [f(plt, results, out_dir) for f in (_fig_winrate, _fig_overoptimization, _fig_behaviour,
                                                    _fig_alignment_tax)]
    paths = [p for p in paths if p]
    if not paths:
        return "Figures: none (nothing to draw in these results)"
    return "Figures: " + ", ".join(f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in paths)


def _percent():
    from matplotlib.ticker import PercentFormatter
    return PercentFormatter(1.0, decimals=0)


def _bars(ax, names, values, colors, width=0.8, offset=0.0, **kw):
    """One bar per model at x = 0..n-1 (+ offset), in its family's colour and hatch."""
    xs = [i + offset for i in range(len(names))]
    bars = ax.bar(xs, values, width, color=[colors[n][0] for n in names], edgecolor="black", linewidth=0.5, **kw)
    for b, n in zip(bars, names):
        if colors[n][1]:
            b.set_hatch(colors[n][1])
    return xs


def _fig_winrate(plt, results, out_dir):
    """1. Paper Figure 1 as bars: each model's win rate against the reference (SFT), by the
    training labelers (solid) and the held-out labelers (pale), with Wilson 95% intervals."""
    ref, models, wr = results["reference"], results["models"], results.get("win_rates", {})
    groups = [(g, lbl) for g, lbl in (("train", "training labelers"), ("heldout", "held-out labelers")) if wr.get(g)]
    names = [n for n in models if n != ref and any(_finite((wr[g].get(pair_key(n, ref)) or {}).get("rate"))
                                                   for g, _ in groups)]
    if not names:
        return None
    colors = model_colors(results)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 1.5), 4.5))
    width = 0.8 / len(groups)
    for k, (g, lbl) in enumerate(groups):
        ws = [wr[g].get(pair_key(n, ref)) or {} for n in names]
        ys = [w["rate"] if _finite(w.get("rate")) else 0.0 for w in ws]
        err = [[y - w.get("lo", y) if _finite(w.get("lo")) else 0 for y, w in zip(ys, ws)],
               [w.get("hi", y) - y if _finite(w.get("hi")) else 0 for y, w in zip(ys, ws)]]
        xs = _bars(ax, names, ys, colors, width, (k - (len(groups) - 1) / 2) * width, alpha=1.0 if k == 0 else 0.45,
                   label=lbl)
        ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axhline(0.5, color="black", ls="--", lw=1, label=f"50% = as good as {ref}")
    ax.set_xticks(range(len(names)), [model_label(n, models[n]) for n in names], fontsize=9)
    ax.set_ylim(0, 1.08)  # room for the legend
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.yaxis.set_major_formatter(_percent())
    ax.set(ylabel=f"preferred to {ref} (win rate)", title=f"Win rate against {ref}, 95% intervals (paper Figure 1)")
    ax.legend(loc="upper left", fontsize=9, frameon=False, ncol=len(groups) + 1)
    return _save(fig, out_dir, "winrate.png")


def _smooth(xs, w=5):
    """Running mean over the last w points (one PPO batch is 16 prompts: noisy); NaN stays a gap."""
    out = []
    for i in range(len(xs)):
        win = [x for x in xs[max(0, i - w + 1) : i + 1] if x == x]
        out.append(sum(win) / len(win) if win and xs[i] == xs[i] else float("nan"))
    return out


def _fig_overoptimization(plt, results, out_dir):
    """2. Reward over-optimisation: per PPO run, the RM's raw score (what PPO maximises, left axis)
    and the gold score (what we want, right axis) over the iterations, each the mean of the last
    5 iterations over that iteration's batch (dots); the value warm-up shaded; last panel, gold
    against the KL from SFT for every run."""
    logs = {p: rows for p, rows in (results.get("ppo_log_rows") or {}).items() if rows}
    if not logs:
        return None
    from matplotlib.ticker import MaxNLocator
    has_gold = any(_finite(r.get("gold")) for rows in logs.values() for r in rows)
    n = len(logs) + has_gold
    ncols = min(n, 3)  # at most three panels a row, so the figure stays slide-shaped
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.4), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.set_visible(False)
    axes = axes[:n]
    for k, (path, rows) in enumerate(logs.items()):
        label = os.path.basename(path).replace("_log.jsonl", "").replace(".jsonl", "")
        # the oracle diagnostic (ppo.py --reward=gold) logs the gold judge's rescaled score as its "RM score"
        oracle = any(str(r.get("reward_source", "")).startswith("gold") for r in rows)
        reward_label = "reward = gold judge (ORACLE)" if oracle else "RM score (raw)"
        ax = axes[k]
        it = [r.get("iter", i + 1) for i, r in enumerate(rows)]
        rm = [r.get("rm_score", r.get("score")) for r in rows]
        rm = [x if _finite(x) else float("nan") for x in rm]  # a gap in the line
        warm = [i for i, r in zip(it, rows) if r.get("phase") == "value_warmup"]
        if warm:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.92", lw=0)
            ax.text(min(warm) - 0.4, 0.98, "value\nwarm-up", transform=ax.get_xaxis_transform(), va="top", fontsize=8,
                    color="0.4")
        ax.plot(it, rm, "o", ms=2.5, alpha=0.3, color="C0")
        ax.plot(it, _smooth(rm), "-", color="C0", lw=2, label=reward_label)
        ax.set(xlabel="PPO iteration", title=label + (" (ORACLE)" if oracle else ""))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(reward_label, color="C0")
        ax.tick_params(axis="y", colors="C0")
        gold = [r["gold"] if _finite(r.get("gold")) else float("nan") for r in rows]
        if any(g == g for g in gold):
            ax2 = ax.twinx()
            ax2.spines["right"].set_visible(True)
            ax2.plot(it, gold, "s", ms=2.5, alpha=0.3, color="C3")
            ax2.plot(it, _smooth(gold), "-", color="C3", lw=2, label="gold score")
            ax2.set_ylabel("gold score (1-7)", color="C3")
            ax2.tick_params(axis="y", colors="C3")
            if k == 0:
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = ax2.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8, frameon=False)
    if has_gold:
        ax = axes[-1]
        for k, (path, rows) in enumerate(logs.items()):
            pts = [(r["kl"], r["gold"]) for r in rows if _finite(r.get("kl")) and _finite(r.get("gold"))]
            if pts:  # points, not a line: KL is not monotone in the iteration
                ax.plot(*zip(*pts), "o", ms=3.5, alpha=0.6, color=f"C{k + 4}",
                        label=os.path.basename(path).replace("_log.jsonl", ""))
        # the evaluated models too, DPO among them (it has no rollouts to log): their mean gold at the
        # evaluation temperature against the KL of their own evaluation answers (evaluate.kl_to_reference)
        evals = [(n, m) for n, m in results.get("models", {}).items()
                 if _finite(m.get("kl_ref_answer")) and _finite(m.get("mean_gold")) and m.get("family") != "base"]
        for j, (name, m) in enumerate(evals):
            ax.plot(m["kl_ref_answer"], m["mean_gold"], "*", ms=12, color=f"C{j}", markeredgecolor="k",
                    label=f"{name} (evaluation)")
        ax.set(xlabel="KL(policy || SFT) per response, nats", ylabel="gold score (1-7)",
               title="gold vs KL (dots: PPO rollouts, T = 1; stars: evaluation)")
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Reward over-optimisation: what PPO optimises (RM) vs what we want (gold), means of 5 iterations",
                 fontsize=11)
    return _save(fig, out_dir, "overoptimization.png")


def _fig_behaviour(plt, results, out_dir):
    """3. Paper Figure 4: one panel per failure axis of the gold judge, one bar per model."""
    models = results["models"]
    names = [n for n, m in models.items() if isinstance(m.get("axes"), dict)]
    if not names:
        return None
    known = dict(AXES)
    keys = [k for k, _ in AXES if any(_finite(models[n]["axes"].get(k)) for n in names)]
    keys += sorted({k for n in names for k, v in models[n]["axes"].items() if k not in known and not k.startswith("n")
                    and _finite(v) and 0 <= v <= 1})  # a new axis, drawn under its key
    if not keys:
        return None
    colors = model_colors(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(max(3.2 * len(keys), 0.55 * len(names) * len(keys)), 4.2),
                             sharey=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        vals = [models[n]["axes"].get(key) for n in names]
        _bars(ax, names, [v if _finite(v) else 0.0 for v in vals], colors)
        for i, v in enumerate(vals):  # the value on each bar; "n/a" where this model has no such axis
            ax.text(i, (v if _finite(v) else 0.0) + 0.01, f"{v:.0%}" if _finite(v) else "n/a", ha="center",
                    va="bottom", fontsize=7, rotation=90 if len(names) > 6 else 0)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        title = known.get(key, key.replace("_", " "))
        if key == "ignores_constraint" and any(models[n]["axes"].get("n_constraint") for n in names):
            title += f" (n={models[names[0]]['axes'].get('n_constraint')})"
        ax.set_title(title, fontsize=10)
    axes[0][0].set_ylim(0, 1.15)  # room for the labels above a bar at 100%
    axes[0][0].set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    axes[0][0].yaxis.set_major_formatter(_percent())
    axes[0][0].set_ylabel("share of answers (lower is better)")
    fig.suptitle("Behaviour by the gold judge (paper Figure 4), held-out prompts", fontsize=11)
    return _save(fig, out_dir, "behaviour.png")


def _fig_alignment_tax(plt, results, out_dir):
    """4. The alignment tax: what each model costs plain language modelling -- next-token loss on
    the held-out corpus (lower is better) and, where measured, greedy fact completion."""
    models = results["models"]
    names = [n for n, m in models.items() if _finite(m.get("heldout_loss"))]
    if not names:
        return None
    probes = [n for n in names if _finite(models[n].get("probe_acc"))]
    colors = model_colors(results)
    fig, axes = plt.subplots(1, 1 + bool(probes), figsize=(max(6.0, 0.9 * len(names) + 1.5) * (1 + bool(probes)) / 1.4,
                                                           4.2), squeeze=False)
    ax = axes[0][0]
    losses = [models[n]["heldout_loss"] for n in names]
    xs = _bars(ax, names, losses, colors)
    for x, v in zip(xs, losses):
        ax.text(x, v, f"{v:.3f}", ha="center", va="bottom", fontsize=8)
    lo, hi = min(losses), max(losses)
    ax.set_ylim(max(0.0, lo - 0.6 * (hi - lo) - 0.05 * lo), hi + 0.15 * (hi - lo) + 0.02 * hi)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=9)
    ax.set(ylabel="held-out LM loss, nats/token", title="Held-out corpus loss (lower is better)")
    if probes:
        ax = axes[0][1]
        accs = [models[n]["probe_acc"] for n in probes]
        xs = _bars(ax, probes, accs, colors)
        for x, v in zip(xs, accs):
            ax.text(x, v, f"{v:.0%}", ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.yaxis.set_major_formatter(_percent())
        ax.set_xticks(range(len(probes)), probes, rotation=45, ha="right", fontsize=9)
        ax.set(ylabel="facts completed correctly", title="Fact completion (higher is better)")
    fig.suptitle("The alignment tax: what fine-tuning costs the language model", fontsize=11)
    return _save(fig, out_dir, "alignment_tax.png")


def _save(fig, out_dir, name):
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
