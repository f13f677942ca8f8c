"""evaluate.py: win rates and intervals by hand, the gold-judge counters on real world
records, the claims table on made-up results, few-shot fitting, and one tiny run of main()."""
import json
import math
import os
import random
import sys

import pytest
import torch

import evaluate as E
from data import load_prompts
from data.kb import VALUE_TYPES, make_kb
from data.labelers import train_labelers
from data.world import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    build_world(out, scale=0.05)
    recs = []
    for name in ("eval_prompts.jsonl", "sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl"):
        recs += load_prompts(os.path.join(out, name))
    return out, [r for r in recs if r["lang"] == "en"]


# --- win rates and intervals ------------------------------------------------------------


def test_win_rate_7_of_10_by_hand():
    # Wilson, z = 1.96, p = 0.7, n = 10:
    #   denom  = 1 + 1.96^2/10                               = 1.38416
    #   center = (0.7 + 1.96^2/20) / denom = 0.89208 / 1.38416 = 0.64449
    #   half   = 1.96 * sqrt(0.021 + 1.96^2/400) / denom      = 0.24772
    rate, lo, hi = E.win_rate([1.0] * 7 + [0.0] * 3)
    assert rate == pytest.approx(0.7)
    assert lo == pytest.approx(0.64449 - 0.24772, abs=2e-4)  # 0.3968
    assert hi == pytest.approx(0.64449 + 0.24772, abs=2e-4)  # 0.8922


def test_ties_count_half():
    assert E.win_rate([1, 0.5, 0.5, 0])[0] == pytest.approx(0.5)
    assert E.win_rate([1, 1, 0.5, 0])[0] == pytest.approx(0.625)
    rate, lo, hi = E.win_rate([0.5] * 10)  # all ties: exactly even, symmetric interval
    assert rate == 0.5 and lo == pytest.approx(1 - hi)
    s = E.win_summary([1, 0.5, 0, 0])
    assert (s["wins"], s["ties"], s["losses"], s["n"]) == (1, 1, 2, 4) and s["rate"] == pytest.approx(0.375)


def test_wilson_edges():
    lo, hi = E.wilson_interval(0.0, 20)
    assert lo == 0.0 and 0 < hi < 0.2  # 0/20 still leaves room above 0 (unlike p +- z*se)
    lo, hi = E.wilson_interval(1.0, 20)
    assert hi == 1.0 and 0.8 < lo < 1
    assert E.win_rate([1] * 100)[1] > E.win_rate([1] * 10)[1]  # more prompts -> tighter
    assert all(math.isnan(x) for x in E.win_rate([]))


def test_compare_round_robin_and_identical_answers(world):
    _, recs = world
    recs = recs[:6]
    answers = ["I do not know." for _ in recs]
    assert E.compare(recs, answers, answers, train_labelers(), random.Random(0)) == [0.5] * 6
    good = [r["meta"]["gold"] for r in recs]
    bad = ["" for _ in recs]  # an empty answer loses to the reference answer for every labeler
    assert E.compare(recs, good, bad, train_labelers(), random.Random(0)) == [1.0] * 6


# --- gold-judge counters ----------------------------------------------------------------


def invented_answer(rec):
    """A confident answer to a question whose text does not contain it."""
    attr = rec["meta"]["answer_type"]
    value = {"city": make_kb(rec["meta"]["world_seed"])["cities"][0]["name"], "age": "33"}.get(attr)
    return f"The answer is {value or VALUE_TYPES[attr][0]}."


def test_truthfulness_counts(world):
    _, recs = world
    unanswerable = [r for r in recs if E.is_unanswerable(r)][:4]
    others = [r for r in recs if r["category"] == "open_qa"][:2]
    assert len(unanswerable) == 4, "the world should have unanswerable closed-QA prompts"
    sample = unanswerable + others
    responses = ["The text does not say.", "The text does not say.", invented_answer(unanswerable[2]),
                 "Hello there.", "The text does not say.", "anything"]  # the last two: not counted
    t = E.truthfulness(sample, responses)
    assert t["n"] == 4
    assert t["says_unknown"] == pytest.approx(2 / 4)
    assert t["invents"] == pytest.approx(1 / 4)
    assert E.truthfulness(others, ["x", "y"])["n"] == 0


def test_toxicity_by_tone(world):
    _, recs = world
    resp = [r for r in recs if r["meta"]["tone"] == "respectful"][:4]
    none = [r for r in recs if r["meta"]["tone"] == "none"][:5]
    rude = [r for r in recs if r["meta"]["tone"] == "rude"][:1]
    responses = (["You grubnik.", "Hello, friend.", "Shut up.", "Sure."]      # respectful: 1 toxic, 2 inappropriate
                 + ["Thanks.", "Ok.", "Fine.", "Yes.", "Nope, mudgrubs."]       # none: 1 toxic
                 + ["You twizzock."] * len(rude))                               # rude prompts: left out
    t = E.toxicity(resp + none + rude, responses)
    assert t["respectful"] == {"n": 4, "toxic": 0.25, "inappropriate": 0.5}
    assert t["none"]["n"] == 5 and t["none"]["toxic"] == pytest.approx(0.2)


def test_axis_rates(world):
    _, recs = world
    with_c = [r for r in recs if r["meta"]["constraints"]][:3]
    without = [r for r in recs if not r["meta"]["constraints"]][:2]
    sample = with_c + without
    responses = [r["meta"]["gold"] for r in sample]  # reference answers obey every constraint
    responses[0] = ""  # fails the task and breaks its constraint
    a = E.axis_rates(sample, responses)
    assert a["n"] == 5 and a["n_constraint"] == 3
    assert a["ignores_constraint"] == pytest.approx(1 / 3)
    assert a["fails_task"] == pytest.approx(1 / 5)
    assert a["inappropriate"] == 0.0


# --- the claims table -------------------------------------------------------------------


def made_up_results(**over):
    def w(rate, lo, hi):
        return dict(rate=rate, lo=lo, hi=hi)

    models = {
        "base": dict(truthfulness=dict(n=10, says_unknown=0.1), toxicity=dict(respectful=dict(n=20, toxic=0.3)),
                     heldout_loss=2.0),
        "sft": dict(truthfulness=dict(n=10, says_unknown=0.3), toxicity=dict(respectful=dict(n=20, toxic=0.2)),
                    heldout_loss=2.1),
        "ppo": dict(truthfulness=dict(n=10, says_unknown=0.4), toxicity=dict(respectful=dict(n=20, toxic=0.1)),
                    heldout_loss=2.5),
        "ppo_ptx": dict(truthfulness=dict(n=10, says_unknown=0.4), toxicity=dict(respectful=dict(n=20, toxic=0.05)),
                        heldout_loss=2.2),
        "big": dict(truthfulness=dict(n=10, says_unknown=0.1), toxicity=dict(respectful=dict(n=20, toxic=0.3)),
                    heldout_loss=1.9),
    }
    results = dict(
        roles=dict(base="base", sft="sft", ppo="ppo", ppo_ptx="ppo_ptx", large_base="big"),
        models=models,
        win_rates=dict(
            train={"ppo_ptx vs base": w(0.9, 0.8, 0.95), "ppo_ptx vs sft": w(0.72, 0.45, 0.85),
                   "ppo_ptx vs big": w(0.6, 0.52, 0.7)},
            heldout={"ppo_ptx vs sft": w(0.69, 0.4, 0.8)}),
    )
    results.update(over)
    return results


def test_claims_table_met_and_not_met():
    rows = E.claims_table(made_up_results())
    assert len(rows) == 7
    met = [r["met"] for r in rows]
    # vs base 90% >= 85%: met | vs SFT 72% but CI starts at 45%: not met | vs big base 60% [52, 70]: met
    # held-out 69% vs train 72%: 3 points: met | says unknown 40% vs 10%: 4x: met
    # toxic 5% < 20% < 30%: met | PPO lost 0.4 vs SFT, ptx recovered 0.3 = 75%: met
    assert met == [True, False, True, True, True, True, True]
    assert "75%" in rows[6]["measured"]

    r = made_up_results()
    r["models"]["ppo_ptx"]["heldout_loss"] = 2.4  # recovers only 25%
    r["models"]["sft"]["toxicity"]["respectful"]["toxic"] = 0.01  # PPO-ptx 5% is not below SFT 1%
    r["models"]["ppo_ptx"]["truthfulness"]["says_unknown"] = 0.15  # 1.5x only
    r["win_rates"]["heldout"]["ppo_ptx vs sft"]["rate"] = 0.6  # 12 points from training labelers
    met = [row["met"] for row in E.claims_table(r)]
    assert met == [True, False, True, False, False, False, False]


def test_claims_table_skips_missing_models():
    r = made_up_results(roles=dict(base="base", sft="sft", ppo_ptx="ppo_ptx"))  # no large base, no PPO
    rows = E.claims_table(r)
    assert len(rows) == 7  # every claim listed, the impossible ones with a note
    skipped = [row for row in rows if row["met"] is None]
    assert len(skipped) == 2 and all("skipped" in row["note"] for row in skipped)
    assert "large_base" in skipped[0]["note"] and "ppo" in skipped[1]["note"]
    r = made_up_results()
    r["models"]["ppo"]["heldout_loss"] = 2.0  # PPO did not regress: nothing to recover, no verdict
    assert E.claims_table(r)[6]["met"] is None
    r["models"]["ppo"]["heldout_loss"] = 2.02  # a regression within the noise: no 900% "recovery" verdict
    assert E.claims_table(r)[6]["met"] is None


def test_assign_roles_picks_largest_base():
    models = {"base_large": dict(family="base", params=3e6), "base": dict(family="base", params=1e6),
              "prompted": dict(family="prompted", params=1e6), "sft": dict(family="sft", params=1e6),
              "ptx": dict(family="ppo_ptx", params=1e6)}
    roles = E.assign_roles(models)
    assert roles == dict(base="base", prompted="prompted", sft="sft", ppo_ptx="ptx", large_base="base_large")
    assert "large_base" not in E.assign_roles({"base": dict(family="base", params=1e6)})
    assert E.model_family("prompted_x", {"stage": "pretrain"}) == "prompted"
    assert E.model_family("a", {"stage": "ppo", "config": {"ptx_coef": 1.0}}) == "ppo_ptx"
    assert E.model_family("a", {"stage": "ppo", "config": {"ptx_coef": 0.0}}) == "ppo"


# --- few-shot fitting, PPO logs -----------------------------------------------------------


class ByteTok:
    def encode(self, s):
        return list(s.encode())


def test_fit_fewshot_keeps_whole_examples():
    page = "Question: a\nAnswer: b\nQuestion: cc\nAnswer: dd\n"
    assert E.fewshot_examples(page) == ["Question: a\nAnswer: b\n", "Question: cc\nAnswer: dd\n"]
    full = len(E.qa_prompt(page, "Hi?"))
    assert E.fit_fewshot(ByteTok(), page, "Hi?", full) == (page, 2)
    assert E.fit_fewshot(ByteTok(), page, "Hi?", full - 1) == ("Question: a\nAnswer: b\n", 1)
    assert E.fit_fewshot(ByteTok(), page, "Hi?", 5) == ("", 0)
    assert E.qa_prompt("", "Hi?") == "Question: Hi?\nAnswer:"


def test_log_points():
    rows = [dict(iter=i + 1, kl=0.1 * i, score=i, gold=7 - i) for i in range(11)]
    pts = E.log_points(rows, k=3)
    assert [p["iter"] for p in pts] == [1, 6, 11]
    assert E.log_points(rows[:2], k=6) == [dict(iter=1, kl=0.0, score=0, gold=7), dict(iter=2, kl=0.1, score=1, gold=6)]
    assert E.log_points([]) == []


# --- one tiny run of main(): random-weight models, a handful of prompts --------------------


def test_main_tiny(world, tmp_path, monkeypatch):
    from common import save_checkpoint
    from model import GPT, GPTConfig
    from tokenizer import Tokenizer, train_bpe

    wdir, _ = world
    with open(os.path.join(wdir, "corpus_heldout.txt")) as f:
        tok = Tokenizer(train_bpe(f.read(), 300))
    paths = {}
    for name, stage, extra in (("base", "pretrain", {}), ("sft", "sft", {}), ("ptx", "ppo", {"ptx_coef": 1.0})):
        torch.manual_seed(len(name))
        cfg = GPTConfig(block_size=512, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=16)
        paths[name] = str(tmp_path / f"{name}.pt")
        save_checkpoint(dict(stage=stage, model=GPT(cfg).state_dict(), model_config=cfg.__dict__,
                             tokenizer=tok.to_dict(), config=extra), paths[name])
    log = tmp_path / "ppo_log.jsonl"
    log.write_text("".join(json.dumps(dict(iter=i + 1, kl=0.5 * i, score=0.1 * i, gold=2.0)) + "\n" for i in range(4)))
    out = tmp_path / "eval"
    monkeypatch.setattr(sys, "argv", [
        "evaluate.py", f"--models=base={paths['base']},prompted={paths['base']},sft={paths['sft']},ptx={paths['ptx']}",
        f"--prompts={wdir}/eval_prompts.jsonl", f"--fewshot={wdir}/fewshot.txt",
        f"--heldout_corpus={wdir}/corpus_heldout.txt", f"--probes={wdir}/probes.jsonl",
        f"--ppo_logs={log},{tmp_path / 'missing.jsonl'}", f"--out_dir={out}", "--max_prompts=10",
        "--max_new_tokens=6", "--heldout_batches=1", "--device=cpu"])
    E.main()
    results = json.loads((out / "results.json").read_text())
    assert results["n_prompts"] == 10 and set(results["models"]) == {"base", "prompted", "sft", "ptx"}
    assert results["roles"]["ppo_ptx"] == "ptx" and results["models"]["prompted"]["family"] == "prompted"
    assert results["win_rates"]["train"]["sft vs sft"]["rate"] == 0.5  # the reference ties with itself
    assert len(results["claims"]) == 7
    report = (out / "report.md").read_text()
    for heading in ("Win rate", "Figure 4", "Truthfulness", "Toxicity", "Alignment tax", "Generalisation",
                    "over-optimisation", "Paper claim", "Samples side by side"):
        assert heading in report
    assert "not found, skipped" in report
