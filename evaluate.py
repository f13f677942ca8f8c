"""
Step 4: evaluate -- every model answers the same held-out prompts, simulated labelers judge.

Each checkpoint is sampled the same way (temperature, seed, max_new_tokens) unless its
--models entry names a temperature (`sft_greedy=out/sft.pt@0`: a cheaper way to a sharper
policy, which RL has to beat too, since PPO also lowers the entropy), and its answers are
compared with the reference model's (SFT by default) by labelers: once by the training
labelers (the people whose comparisons trained the RM) and once by the held-out labelers
(who never produced training data). That is the y axis of the paper's Figure 1. The
noise-free gold judge adds what real labelers annotated as metadata (Figure 4: failed the
task, ignored a constraint, hallucinated, inappropriate), the truthfulness and toxicity
checks, and the alignment tax (held-out LM loss and fact-completion accuracy: our "public
NLP benchmarks").

    python evaluate.py                                      # every stage's default outputs
    python evaluate.py --max_prompts=40 --models=base=out/base.pt,sft=out/sft.pt,ppo_ptx=out/ppo_ptx.pt
    python evaluate.py --models=base=out/base.pt,prompted=out/base.pt,sft=out/sft.pt --ppo_logs=
    python evaluate.py --prompts=my_prompts.jsonl --rm=out/rm.pt --models=sft=out/sft.pt,ppo=out/ppo.pt \
        --probes= --heldout_corpus=my_text.txt          # your own prompts: judged by a reward model

A model named `prompted...` is the base checkpoint with the few-shot examples of
--fewshot put in front of every prompt: the paper's "prompted GPT-3". It is asked in the
few-shot page's own format ("Question: <prompt>" / "Answer:") and its answer is the
rest of that line: the base model never saw the chat tokens that `render` adds.
Prompts without the world's `meta` (your own, public data) can be judged by neither the
gold judge nor the simulated labelers; then --rm is required and the report is by that
reward model instead (`rm_judged`): mean RM score per model, win rates vs the reference
by RM score, and the alignment tax if --heldout_corpus / --probes are given.

This file measures; its helpers are the package evaluation/. evaluation/metrics.py holds the
arithmetic on answers and logs (win rates, Wilson intervals, the gold judge's rates, PPO log
summaries), evaluation/claims.py judges the paper's claims, evaluation/report.py writes
report.md, results.json (every number) and responses.jsonl (every answer with its gold
score) into --out_dir, and evaluation/figures.py four PNGs if matplotlib is installed
(requirements-plot.txt). The prompted base model's few-shot page: evaluation/fewshot.py.

Deviations from the paper:
1. Labelers are simulated (data/labelers.py): preferences come from a fixed rubric plus
   per-labeler taste and noise, so we can also read the noise-free gold score.
2. One labeler judges each prompt (round-robin over the group); the paper had several.
3. The prompted base model sees the prompt as a Q&A page, not in the chat format the
   other models get (the paper prompted GPT-3 with plain text, too).
4. Win rates are pairwise against a reference model's single sample per prompt, with a
   Wilson 95% interval on the mean preference (ties count 0.5), see metrics.win_rate.
5. TruthfulQA / RealToxicityPrompts / SQuAD etc. are replaced by measurements on our
   synthetic world: unanswerable closed-QA prompts, invented insult words, the held-out
   corpus loss and fact-completion probes.
"""

import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from common import die, encode_docs, get_device, parse_config, precision_name, print_config, seed_everything
from data import DataError, has_meta, load_probes, load_prompts, read_corpus
from data.labelers import heldout_labelers, train_labelers
from evaluation.claims import claims_table
from evaluation.fewshot import fewshot_examples, fit_fewshot, qa_prompt, sample_prompted
from evaluation.metrics import generalisation, gold_metrics, summarise_ppo_logs, win_rates, win_summary
from evaluation.report import (RM_JUDGE_NOTE, print_summary, render_rm_report, rm_table, side_by_side, write_files,
                               write_outputs)
from policy import (heldout_loss, load_policy, load_reward_model, logprob_texts, probe_accuracy, sample_responses,
                    score_texts)
from tokenizer import Tokenizer, render

DEFAULT_MODELS = ("base_large=out/base_large.pt,base=out/base.pt,prompted=out/base.pt,sft=out/sft.pt,"
                  "ppo=out/ppo.pt,ppo_ptx=out/ppo_ptx.pt")


@dataclass
class EvalConfig:
    models: str = DEFAULT_MODELS  # comma-separated name=checkpoint[@temperature]; "prompted*" = base + few-shot
    reference: str = "sft"  # the model every other one is compared against (the paper: 175B SFT)
    prompts: str = "data/world/eval_prompts.jsonl"  # held-out prompts {id, prompt, category, split, lang, meta}
    fewshot: str = "data/world/fewshot.txt"  # plain-text few-shot prefix for the "prompted" models
    heldout_corpus: str = "data/world/corpus_heldout.txt"  # alignment tax: LM loss on held-out text ("" = skip)
    probes: str = "data/world/probes.jsonl"  # alignment tax: fact-completion probes ("" = skip)
    ppo_logs: str = "out/ppo_log.jsonl,out/ppo_ptx_log.jsonl,out/ppo_beta0_log.jsonl"  # for RM vs gold over KL
    out_dir: str = "out/eval"  # report.md, results.json, responses.jsonl, figures
    temperature: float = 0.7  # the same sampling for every model
    rm: str = ""  # reward model for a best-of-N row: the reference model's best of N samples by RM score
    best_of: int = 4  # N of that row (with --rm)
    max_new_tokens: int = 48
    max_prompts: int = 0  # evaluate a seeded random subset of N prompts (0 = all)
    heldout_batches: int = 20  # batches of 16 windows for the held-out loss
    n_samples: int = 6  # prompts shown side by side in the report (distinct categories)
    seed: int = 1337
    device: str = "auto"


FAMILIES = ["base", "prompted", "sft", "ppo", "ppo_ptx", "ppo_oracle", "dpo"]  # what model_family tells apart ("other" aside)
GENERALISATION_SPLITS = ("heldout_category", "lang2")  # eval_prompts.jsonl splits outside the training mix


# -----------------------------------------------------------------------------
# which model plays which part


def model_family(name, ckpt):
    """base / prompted / sft / ppo / ppo_ptx / dpo, from the name (prompted) and the checkpoint."""
    if name.startswith("prompted"):
        return "prompted"
    stage = ckpt.get("stage")
    if stage in ("pretrain", "hf"):
        return "base"
    if stage == "sft":
        return "sft"
    if stage == "ppo":
        if ckpt.get("config", {}).get("reward") == "gold":  # trained on the gold judge: a diagnostic, not PPO
            return "ppo_oracle"
        return "ppo_ptx" if ckpt.get("config", {}).get("ptx_coef", 0) > 0 else "ppo"
    if stage == "dpo":
        return "dpo"
    for fam in ("ppo_oracle", "ppo_ptx", "ppo", "dpo", "sft", "base"):  # unknown stage: trust the name
        if name.startswith(fam):
            return fam
    return "other"


def assign_roles(models):
    """
    {name: {"family", "params"}} (in --models order) -> {role: name} for the claims:
    each family's model is the one named exactly like the family, else its first;
    "large_base" is the biggest base model if it is bigger than the "base" one.
    """
    roles = {}
    for fam in FAMILIES:
        names = [n for n, m in models.items() if m["family"] == fam]
        if names:
            roles[fam] = fam if fam in names else names[0]
    bases = [n for n, m in models.items() if m["family"] == "base"]
    if bases:
        big = max(bases, key=lambda n: models[n]["params"])
        if models[big]["params"] > models[roles["base"]]["params"]:
            roles["large_base"] = big
    greedy = [n for n, m in models.items() if m["family"] == "sft" and m.get("temperature") == 0 and
              n != roles.get("sft")]
    if greedy:
        roles["sft_greedy"] = greedy[0]
    return roles


# -----------------------------------------------------------------------------
# the measurements, one function per step of main()


def parse_models(cfg):
    """--models "name=path[@T],..." -> ({name: path}, {name: temperature}) for the entries
    that name one; dies on a malformed entry, a repeated name, a missing checkpoint or a
    --reference that is not among the names."""
    specs, temps = {}, {}
    for item in (s.strip() for s in cfg.models.split(",")):
        if not item:
            continue
        if "=" not in item:
            die(f"--models: expected name=path, got {item!r}", 2)
        name, path = (s.strip() for s in item.split("=", 1))
        if name in specs:
            die(f"--models: model name {name!r} appears twice", 2)
        if "@" in path:  # name=path@T: this model samples at temperature T (e.g. sft_greedy=out/sft.pt@0)
            path, t = path.rsplit("@", 1)
            try:
                temps[name] = float(t)
            except ValueError:
                die(f"--models: {item!r}: expected name=path@temperature, got temperature {t!r}", 2)
        specs[name] = path
    if not specs:
        die("--models is empty", 2)
    if cfg.reference not in specs:
        die(f"--reference={cfg.reference!r} is not one of the --models names {list(specs)}", 2)
    for name, path in specs.items():
        if not (os.path.isfile(path) or os.path.isdir(path)):
            die(f"checkpoint '{path}' for model '{name}' not found (run the stage that writes it, or drop it "
                "from --models)")
    return specs, temps


def load_data(cfg, specs):
    """-> (prompt records, held-out corpus docs or None, probes, few-shot page or "")."""
    try:
        recs = load_prompts(cfg.prompts)
        held_docs = read_corpus(cfg.heldout_corpus) if cfg.heldout_corpus else None
        probes = load_probes(cfg.probes) if cfg.probes else []
    except DataError as e:
        die(str(e))
    if cfg.max_prompts and cfg.max_prompts < len(recs):
        keep = sorted(random.Random(cfg.seed).sample(range(len(recs)), cfg.max_prompts))
        recs = [recs[i] for i in keep]
    fewshot = ""
    if any(n.startswith("prompted") for n in specs):
        if not os.path.isfile(cfg.fewshot):
            die(f"--fewshot: file '{cfg.fewshot}' not found (needed by the 'prompted' model)")
        with open(cfg.fewshot, encoding="utf-8") as f:
            fewshot = f.read()
    return recs, held_docs, probes, fewshot


def load_models(cfg, specs, temps, device):
    """-> (loaded, models): loaded = {path: (model, tok, ckpt)}, each path loaded once
    ("prompted" shares the base weights); models = {name: {"path", "family", "params",
    "block_size", "temperature"}}, to which the later steps add their measurements."""
    loaded, models = {}, {}
    for name, path in specs.items():
        if path not in loaded:
            loaded[path] = load_policy(path, device, dropout=0.0)
        model, tok, ckpt = loaded[path]
        models[name] = dict(path=path, family=model_family(name, ckpt), params=model.num_params(),
                            block_size=model.config.block_size, temperature=temps.get(name, cfg.temperature))
        print(f"model {name:>12}: {path} | {models[name]['family']} | {model.num_params() / 1e6:.2f}M params")
    return loaded, models


def prompts_that_fit(cfg, recs, loaded, models):
    """Every model must see the same prompts: keep those that fit every context window
    (a prompted model must fit the question, and at least the page with no example)."""
    def fits(name, r):
        tok, room = loaded[models[name]["path"]][1], models[name]["block_size"] - cfg.max_new_tokens
        if models[name]["family"] == "prompted":
            return len(tok.encode(qa_prompt("", r["prompt"]))) <= room
        return len(render(tok, r["prompt"])[0]) <= room

    before = len(recs)
    recs = [r for r in recs if all(fits(n, r) for n in models)]
    if not recs:
        die(f"{cfg.prompts}: no prompt fits in the models' context with --max_new_tokens={cfg.max_new_tokens}")
    if len(recs) < before:
        print(f"dropped {before - len(recs)} of {before} prompts: too long for a model's context window")
    return recs


def fewshot_prefixes(cfg, recs, loaded, models, fewshot):
    """{prompted model: one few-shot page per prompt, as many whole examples as fit}."""
    prefixes = {}
    for name, m in models.items():
        if m["family"] == "prompted":
            tok, room = loaded[m["path"]][1], m["block_size"] - cfg.max_new_tokens
            fitted = [fit_fewshot(tok, fewshot, r["prompt"], room) for r in recs]
            prefixes[name] = [f for f, _ in fitted]
            print(f"{name}: {sum(k for _, k in fitted) / len(fitted):.1f} of {len(fewshot_examples(fewshot))} "
                  "few-shot examples on average before each prompt")
    return prefixes


def sample_all(cfg, recs, loaded, models, prefixes, bs=64):
    """{name: one answer per prompt}: every model sampled the same way (same prompts, seed
    per batch), at its own temperature (cfg.temperature unless --models named one)."""
    responses = {}
    bar = tqdm(total=len(models) * math.ceil(len(recs) / bs), desc="sampling", dynamic_ncols=True)
    t0 = time.time()
    for name, m in models.items():
        model, tok, _ = loaded[m["path"]]
        texts = []
        for i in range(0, len(recs), bs):
            prompts = [r["prompt"] for r in recs[i : i + bs]]
            if name in prefixes:
                t = sample_prompted(model, tok, prompts, prefixes[name][i : i + bs], cfg.max_new_tokens,
                                    m["temperature"], seed=cfg.seed + i)
            else:
                t, _ = sample_responses(model, tok, prompts, cfg.max_new_tokens, m["temperature"], batch_size=bs,
                                        seed=cfg.seed + i)
            texts.extend(t)
            bar.update(1)
        responses[name] = texts
    bar.close()
    print(f"sampled {len(recs)} answers from each of {len(models)} models in {time.time() - t0:.0f}s")
    return responses


def best_of_n(cfg, recs, model, tok, rm, rm_tok, device, bs=64):
    """The best of cfg.best_of samples of `model` per prompt by the score of the reward model
    `rm` (which reads text with its own tokenizer, rm_tok) -> one answer per prompt. Sampled at
    cfg.temperature with seeds of their own."""
    cands, scores = [], []
    for s in range(cfg.best_of):
        texts, _ = sample_responses(model, tok, [r["prompt"] for r in recs], cfg.max_new_tokens, cfg.temperature,
                                    batch_size=bs, seed=cfg.seed + 7919 * (s + 1))
        cands.append(texts)
        scores.append(score_texts(rm, rm_tok, [r["prompt"] for r in recs], texts, device, bs).cpu())
    best = torch.stack(scores).argmax(0).tolist()  # (n_prompts,) which sample the RM prefers
    return [cands[b][i] for i, b in enumerate(best)]


def alignment_tax(cfg, models, loaded, held_docs, probes, device):
    """Adds "heldout_loss" and "probe_acc" to every model entry (None where skipped), measured
    once per checkpoint, on the same windows for all. Returns the window length (None without
    a held-out corpus)."""
    ctx = min([128] + [m["block_size"] for m in models.values()]) if held_docs is not None else None
    tax = {}
    for m in models.values():
        if m["path"] not in tax:
            model, tok, _ = loaded[m["path"]]
            loss = acc = None
            if held_docs is not None:
                stream = encode_docs(tok, held_docs)
                c = min(ctx, len(stream) - 3)
                loss = heldout_loss(model, stream, c, 16, cfg.heldout_batches, device) if c > 8 else None
            if probes:
                acc = probe_accuracy(model, tok, probes, device)[0]
            tax[m["path"]] = (loss, acc)
        m["heldout_loss"], m["probe_acc"] = tax[m["path"]]
    return ctx


def kl_to_reference(cfg, recs, loaded, models, responses, device):
    """Adds "kl_ref" (nats per token) and "kl_ref_answer" (nats per answer) to every model
    entry: the mean of log pi(y|x) - log pi_ref(y|x) over the model's own answers y to
    `recs`, both at the model's sampling temperature -- k1, the estimate of KL(pi || pi_ref)
    that PPO logs, here on the evaluation prompts. None where it means nothing: the prompted
    base (another input format), greedy decoding, best-of-N (not one policy's samples), another
    tokenizer. Answers are re-encoded from their text, and the closing EOT counts also for an
    answer that ran out of room (policy.logprob_texts)."""
    ref = models[cfg.reference]
    ref_model, ref_tok, _ = loaded[ref["path"]]
    prompts = [r["prompt"] for r in recs]
    for name, m in models.items():
        model, tok, _ = loaded[m["path"]]
        m["kl_ref"] = m["kl_ref_answer"] = None
        if (m["family"] == "prompted" or m.get("best_of") or not m["temperature"] > 0
                or tok.to_dict() != ref_tok.to_dict()):
            continue
        if m["path"] == ref["path"]:  # the reference itself: the same distribution twice
            m["kl_ref"] = m["kl_ref_answer"] = 0.0
            continue
        lp, n_tok = logprob_texts(model, tok, prompts, responses[name], device, m["temperature"])  # (N,) each
        lp_ref, _ = logprob_texts(ref_model, tok, prompts, responses[name], device, m["temperature"])  # (N,)
        m["kl_ref"] = (lp - lp_ref).sum().item() / max(1, n_tok.sum().item())
        m["kl_ref_answer"] = (lp - lp_ref).mean().item()


def pairs_to_judge(cfg, models, roles, temps):
    """Every model vs the reference (and vs the largest base), plus the pairs the claims need:
    PPO-ptx vs base and SFT, the RL models vs the cheap tricks (own temperature, best-of-N);
    and DPO vs PPO and PPO-ptx, for the report's side-by-side."""
    pairs = [(n, cfg.reference) for n in models]
    if "large_base" in roles:
        pairs += [(n, roles["large_base"]) for n in models]
    for a, b in (("ppo_ptx", "base"), ("ppo_ptx", "sft"), ("dpo", "ppo"), ("dpo", "ppo_ptx")):  # DPO beside PPO
        if a in roles and b in roles:
            pairs.append((roles[a], roles[b]))
    for n in list(temps) + ([roles["best_of_n"]] if "best_of_n" in roles else []):
        pairs += [(roles[f], n) for f in ("ppo", "ppo_ptx") if f in roles]
    return list(dict.fromkeys(pairs))


def rm_judged(cfg, recs, loaded, models, responses, rm, rm_tok, held_docs, probes, device):
    """The evaluation for prompts without `meta`: every model's answers scored by the reward
    model `rm` (--rm), win rates vs the reference by RM score (1 = higher, 0.5 = equal),
    response lengths, and the alignment tax where a corpus / probes are given.
    Writes report.md (report.render_rm_report), results.json and responses.jsonl."""
    prompts = [r["prompt"] for r in recs]
    scores = {name: score_texts(rm, rm_tok, prompts, responses[name], device).tolist() for name in models}
    alignment_tax(cfg, models, loaded, held_docs, probes, device)
    for name, m in models.items():
        s, ref = scores[name], scores[cfg.reference]
        m["rm_score"] = sum(s) / len(s)
        m["words"] = sum(len(t.split()) for t in responses[name]) / len(recs)
        m["win_vs_reference_by_rm"] = win_summary([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(s, ref)])
    samples = [dict(prompt=recs[i]["prompt"], answers={n: dict(response=responses[n][i], score=scores[n][i])
                                                       for n in models}) for i in range(min(cfg.n_samples, len(recs)))]
    results = dict(config=asdict(cfg), judge="reward_model", note=RM_JUDGE_NOTE.format(rm=cfg.rm), prompts=cfg.prompts,
                   reference=cfg.reference, n_prompts=len(recs), models=models, samples=samples)
    write_files(cfg.out_dir, render_rm_report(results), results, [dict(id=r["id"], prompt=r["prompt"], answers={
        n: dict(response=responses[n][i], rm_score=scores[n][i]) for n in models}) for i, r in enumerate(recs)])
    print("\n" + rm_table(results) + "\n\n" + results["note"])
    print(f"wrote {os.path.join(cfg.out_dir, 'report.md')}, results.json, responses.jsonl")


# -----------------------------------------------------------------------------


def main():
    cfg = parse_config(EvalConfig())
    print_config(cfg)
    specs, temps = parse_models(cfg)
    device = get_device(cfg.device)
    print(f"device {device} | precision {precision_name(device)}")
    seed_everything(cfg.seed)

    # 1. data: the held-out prompts (optionally a seeded subset), corpus, probes, few-shot prefix
    recs, held_docs, probes, fewshot = load_data(cfg, specs)
    if not has_meta(recs) and not cfg.rm:
        die(f"{cfg.prompts}: the prompts carry no 'meta', so neither the gold judge nor the simulated labelers "
            "can score answers; pass --rm=out/rm.pt to compare the models by a reward model", 2)

    # 2. models: each path loaded once; the prompts every model can answer; few-shot pages
    loaded, models = load_models(cfg, specs, temps, device)
    roles = assign_roles(models)
    recs = prompts_that_fit(cfg, recs, loaded, models)
    prefixes = fewshot_prefixes(cfg, recs, loaded, models, fewshot)
    main_idx = [i for i, r in enumerate(recs) if r.get("split") not in GENERALISATION_SPLITS]
    n_split = {s: sum(r.get("split") == s for r in recs) for s in GENERALISATION_SPLITS}
    print(f"data: {len(recs)} eval prompts ({len(main_idx)} main, "
          + ", ".join(f"{n} {s}" for s, n in n_split.items()) + f"), {len(probes)} probes")

    # 3. sample every model the same way: same prompts, temperature, seed per batch
    responses = sample_all(cfg, recs, loaded, models, prefixes)

    # 3b. best-of-N by the reward model: N samples of the reference model, keep the one the RM
    #     likes best. No training at all: it shows what the RM's ranking is worth by itself,
    #     at a known KL cost (at most log N - (N - 1) / N nats), and PPO has to match it.
    rm, rm_ckpt = load_reward_model(cfg.rm, device) if cfg.rm else (None, {})
    rm_tok = Tokenizer.from_dict(rm_ckpt["tokenizer"]) if rm is not None else None  # it reads text its own way
    if rm is not None and cfg.best_of > 1:
        name = f"{cfg.reference}_best_of_{cfg.best_of}"
        model, tok, _ = loaded[models[cfg.reference]["path"]]
        responses[name] = best_of_n(cfg, recs, model, tok, rm, rm_tok, device)
        models[name] = dict(models[cfg.reference], best_of=cfg.best_of)  # same checkpoint, size, temperature
        roles["best_of_n"] = name
        print(f"{name}: the best of {cfg.best_of} samples of {cfg.reference} by {cfg.rm}")

    if not has_meta(recs):  # your own prompts: the reward model is the only judge
        return rm_judged(cfg, recs, loaded, models, responses, rm, rm_tok, held_docs, probes, device)

    # 4. gold judgements and per-model metrics (Figure 4's axes on the main prompts, the rest on all)
    for name, m in models.items():
        gold_metrics(m, recs, main_idx, responses[name])
    main_recs = [recs[i] for i in main_idx]  # the prompts of the training mix of categories
    main_responses = {n: [r[i] for i in main_idx] for n, r in responses.items()}

    # 5. alignment tax: held-out LM loss (same windows for all) and fact completion, per checkpoint
    ctx = alignment_tax(cfg, models, loaded, held_docs, probes, device)
    kl_to_reference(cfg, main_recs, loaded, models, main_responses, device)  # how far each moved

    # 6. pairwise preferences: every model vs the reference (and vs the largest base), by
    # training and by held-out labelers; plus the pairs the claims need; then the splits
    # outside the training mix
    groups = {"train": train_labelers(), "heldout": heldout_labelers()}
    wins = win_rates(pairs_to_judge(cfg, models, roles, temps), main_recs, main_responses, groups, cfg.seed)
    gen = generalisation(recs, responses, cfg.reference, groups["train"], cfg.seed, GENERALISATION_SPLITS)

    # 7. PPO logs: RM score and gold score vs KL
    log_pts, log_rows, log_summaries = summarise_ppo_logs(cfg.ppo_logs)

    # 8. report: the claims checked against the numbers, then report.md, results.json, responses.jsonl
    results = dict(config=asdict(cfg), reference=cfg.reference, roles=roles, n_prompts=len(recs),
                   n_main=len(main_idx), n_split=n_split, heldout_ctx=ctx,
                   models={n: {k: v for k, v in m.items() if k != "gold"} for n, m in models.items()},
                   win_rates=wins, generalisation=gen, ppo_logs=log_pts, ppo_summaries=log_summaries,
                   samples=side_by_side(recs, models, responses, cfg.n_samples), rm_report=rm_ckpt.get("report", {}))
    results["claims"] = claims_table(results)
    write_outputs(results, log_rows, recs, responses, models, cfg.out_dir)
    print_summary(results, cfg.out_dir)


if __name__ == "__main__":
    main()
