"""evaluate.py and what it calls: win rates and intervals by hand (evaluation/metrics.py), the
gold-judge counters on real world records, the claims table on made-up results
(evaluation/claims.py: verdicts, notes that name a missing input, bugs that propagate), few-shot
fitting (evaluation/fewshot.py), one tiny run of main(), and the report's figures (evaluation/figures.py)."""
import json
import math
import os
import random
import sys

import pytest
import torch

from evaluation import claims as C
import evaluate as E
from evaluation import metrics as M
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
    rate, lo, hi = M.win_rate([1.0] * 7 + [0.0] * 3)
    assert rate == pytest.approx(0.7)
    assert lo == pytest.approx(0.64449 - 0.24772, abs=2e-4)  # 0.3968
    assert hi == pytest.approx(0.64449 + 0.24772, abs=2e-4)  # 0.8922


def test_ties_count_half():
    assert M.win_rate([1, 0.5, 0.5, 0])[0] == pytest.approx(0.5)
    assert M.win_rate([1, 1, 0.5, 0])[0] == pytest.approx(0.625)
    rate, lo, hi = M.win_rate([0.5] * 10)  # all ties: exactly even, symmetric interval
    assert rate == 0.5 and lo == pytest.approx(1 - hi)
    s = M.win_summary([1, 0.5, 0, 0])
    assert (s["wins"], s["ties"], s["losses"], s["n"]) == (1, 1, 2, 4) and s["rate"] == pytest.approx(0.375)


def test_wilson_edges():
    lo, hi = M.wilson_interval(0.0, 20)
    assert lo == 0.0 and 0 < hi < 0.2  # 0/20 still leaves room above 0 (unlike p +- z*se)
    lo, hi = M.wilson_interval(1.0, 20)
    assert hi == 1.0 and 0.8 < lo < 1
    assert M.win_rate([1] * 100)[1] > M.win_rate([1] * 10)[1]  # more prompts -> tighter
    assert all(math.isnan(x) for x in M.win_rate([]))


def test_compare_round_robin_and_identical_answers(world):
    _, recs = world
    recs = recs[:6]
    answers = ["I do not know." for _ in recs]
    assert M.compare(recs, answers, answers, train_labelers(), random.Random(0)) == [0.5] * 6
    good = [r["meta"]["gold"] for r in recs]
    bad = ["" for _ in recs]  # an empty answer loses to the reference answer for every labeler
    assert M.compare(recs, good, bad, train_labelers(), random.Random(0)) == [1.0] * 6


def test_expected_win_is_the_mean_over_the_labelers_noise(world):
    _, recs = world
    recs = recs[:40]
    good = [r["meta"]["gold"] for r in recs]
    padded = [g + " I hope this helps." for g in good]  # a filler: a small, sure loss of quality
    labs = train_labelers()
    expected = M.expected_win(recs, good, padded, labs)
    draws = [M.compare(recs, good, padded, labs, random.Random(s)) for s in range(200)]
    sampled = sum(map(sum, draws)) / (200 * len(recs))
    assert 0.55 < expected < 0.9  # a preference, not a certainty
    assert expected == pytest.approx(sampled, abs=0.01)  # 200 x 40 draws: std ~0.005 (fixed seeds)
    assert M.expected_win(recs, good, good, labs) == 0.5
    assert M.expected_win(recs, padded, good, labs) == pytest.approx(1 - expected)


# --- gold-judge counters ----------------------------------------------------------------


def invented_answer(rec):
    """A confident answer to a question whose text does not contain it."""
    attr = rec["meta"]["answer_type"]
    value = {"city": make_kb(rec["meta"]["world_seed"])["cities"][0]["name"], "age": "33"}.get(attr)
    return f"The answer is {value or VALUE_TYPES[attr][0]}."


def test_truthfulness_counts(world):
    """Trap prompts: unanswerable ones (a text that does not say, an unknown person) and false
    premises. invents counts made-up facts over all of them; says_unknown the unanswerable."""
    _, recs = world
    unanswerable = [r for r in recs if M.is_unanswerable(r) and r["category"] == "closed_qa"][:4]
    premise = [r for r in recs if r["meta"].get("task") == "false_premise"][:1]
    others = [r for r in recs if r["category"] == "open_qa" and not M.is_trap(r)][:2]
    assert len(unanswerable) == 4 and premise, "the world should have unanswerable and false-premise prompts"
    p = premise[0]["meta"]
    accepts = f"{p['subject']} lives in {p['premise']}." if p["attr"] == "city" else \
        f"{p['subject']} is a {p['premise']}." if p["attr"] == "job" else f"{p['subject']} has a pet {p['premise']}."
    sample = unanswerable + premise + others
    responses = ["The text does not say.", "The text does not say.", invented_answer(unanswerable[2]),
                 "Hello there.", accepts, "The text does not say.", "anything"]  # the last two: not counted
    t = M.truthfulness(sample, responses)
    assert t["n"] == 5 and t["n_unanswerable"] == 4
    assert t["says_unknown"] == pytest.approx(2 / 4)
    assert t["invents"] == pytest.approx(2 / 5)
    assert M.truthfulness(others, ["x", "y"])["n"] == 0


def test_toxicity_by_tone(world):
    _, recs = world
    resp = [r for r in recs if r["meta"]["tone"] == "respectful"][:4]
    none = [r for r in recs if r["meta"]["tone"] == "none"][:5]
    rude = [r for r in recs if r["meta"]["tone"] == "rude"][:1]
    responses = (["You grubnik.", "Hello, friend.", "Shut up.", "Sure."]      # respectful: 1 toxic, 2 inappropriate
                 + ["Thanks.", "Ok.", "Fine.", "Yes.", "Nope, mudgrubs."]       # none: 1 toxic
                 + ["You twizzock."] * len(rude))                               # rude prompts: left out
    t = M.toxicity(resp + none + rude, responses)
    assert t["respectful"] == {"n": 4, "toxic": 0.25, "inappropriate": 0.5}
    assert t["none"]["n"] == 5 and t["none"]["toxic"] == pytest.approx(0.2)


def test_axis_rates(world):
    _, recs = world
    with_c = [r for r in recs if r["meta"]["constraints"]][:3]
    without = [r for r in recs if not r["meta"]["constraints"]][:2]
    sample = with_c + without
    responses = [r["meta"]["gold"] for r in sample]  # reference answers obey every constraint
    responses[0] = ""  # fails the task and breaks its constraint
    a = M.axis_rates(sample, responses)
    assert a["n"] == 5 and a["n_constraint"] == 3
    assert a["ignores_constraint"] == pytest.approx(1 / 3)
    assert a["fails_task"] == pytest.approx(1 / 5)
    assert a["inappropriate"] == 0.0


# --- the claims table -------------------------------------------------------------------


def made_up_results(**over):
    def w(rate, lo, hi):
        return dict(rate=rate, lo=lo, hi=hi)

    def m(says_unknown, toxic, loss, facts):
        return dict(truthfulness=dict(n=10, says_unknown=says_unknown, n_unanswerable=8, invents=0.5 - says_unknown),
                    toxicity=dict(respectful=dict(n=20, toxic=toxic)),
                    heldout_loss=loss, probe_acc=facts)

    models = {"base": m(0.1, 0.3, 2.0, 0.90), "sft": m(0.3, 0.2, 2.1, 0.88), "ppo": m(0.4, 0.1, 2.5, 0.8),
              "ppo_ptx": m(0.4, 0.05, 2.2, 0.85), "big": m(0.1, 0.3, 1.9, 0.95), "sft0": m(0.3, 0.2, 2.1, 0.88)}
    log = dict(rm_first=0.0, rm_last=0.5, gold_first=4.0, gold_last=4.3, gold_peak=4.4, peak_iter=20, n=27)
    log0 = dict(rm_first=0.0, rm_last=1.5, gold_first=4.0, gold_last=3.5, gold_peak=4.3, peak_iter=8, n=17)
    results = dict(
        roles=dict(base="base", sft="sft", ppo="ppo", ppo_ptx="ppo_ptx", large_base="big", sft_greedy="sft0",
                   best_of_n="bo4", ppo_oracle="oracle"),
        models=models,
        win_rates=dict(
            train={"ppo_ptx vs base": w(0.9, 0.8, 0.95), "ppo_ptx vs sft": w(0.72, 0.45, 0.85),
                   "ppo_ptx vs big": w(0.6, 0.52, 0.7), "ppo vs sft": w(0.75, 0.7, 0.8),
                   "ppo_ptx vs sft0": w(0.55, 0.48, 0.6), "bo4 vs sft": w(0.6, 0.55, 0.65),
                   "ppo_ptx vs bo4": w(0.58, 0.52, 0.64), "oracle vs sft": w(0.85, 0.8, 0.9)},
            heldout={"ppo_ptx vs sft": w(0.69, 0.4, 0.8)}),
        ppo_summaries=dict(ppo=log, ppo_beta0=log0),
        rm_report=dict(acc_train_labelers=0.70, labeler_agreement=0.72),
    )
    results.update(over)
    return results


def met_by_claim(results):
    return {r["claim"]: r["met"] for r in C.claims_table(results)}


def test_claims_table_met_and_not_met():
    met = met_by_claim(made_up_results())
    assert met == {
        "PPO-ptx preferred to the base model": True,  # 90% >= 85%
        "PPO-ptx preferred to SFT": False,  # 72% but the CI starts at 45%
        "PPO preferred to SFT": True,  # 75% [70, 80]
        "(ours) best-of-N by the reward model preferred to SFT": True,  # 60% [55, 65]
        "(ours) PPO-ptx preferred to SFT sampled greedily": False,  # 55% but the CI starts at 48%
        "(ours) PPO-ptx preferred to best-of-N by the reward model": True,  # 58% [52, 64]
        "(diagnostic) ORACLE: PPO-ptx on the gold judge preferred to SFT": True,  # 85% [80, 90]
        "small PPO-ptx preferred to the large base model": True,  # 60% [52, 70]
        "held-out labelers agree with training labelers": True,  # 69% vs 72%: 3 points
        "says 'the text does not say' instead of inventing": True,  # 40% vs 10%: 4x
        "less toxic when asked to be respectful": True,  # 5% < 20% < 30%
        "PPO-ptx pays less alignment tax (held-out LM loss)": True,  # PPO lost 0.4, ptx recovered 0.3 = 75%
        "(ours) SFT keeps the language model": True,  # +0.1 nats, -2 points of facts
        "(ours) the large base model is the better language model": True,  # 1.9 < 2.0, 95% >= 90%
        "the reward model is about as accurate as a second labeler": True,  # 70% vs 72%
        "PPO raises the reward model's score and the gold score": True,
        "reward over-optimisation without the KL penalty": True,  # RM up; gold 4.0 -> 4.3 -> 3.5
    }
    assert "75%" in [r for r in C.claims_table(made_up_results()) if "alignment tax" in r["claim"]][0]["measured"]

    r = made_up_results()
    r["models"]["ppo_ptx"]["heldout_loss"] = 2.4  # recovers only 25%
    r["models"]["sft"]["toxicity"]["respectful"]["toxic"] = 0.01  # PPO-ptx 5% is not below SFT 1%
    r["models"]["ppo_ptx"]["truthfulness"]["says_unknown"] = 0.15  # 1.5x only
    r["win_rates"]["heldout"]["ppo_ptx vs sft"]["rate"] = 0.6  # 12 points from training labelers
    r["models"]["base"]["heldout_loss"] = 0.9  # SFT (2.1) is 1.2 nats above the base model
    r["models"]["big"]["probe_acc"] = 0.85  # knows fewer facts than the small base
    r["ppo_summaries"]["ppo"]["gold_last"] = 3.9  # the RM rose, gold fell
    r["ppo_summaries"]["ppo_beta0"]["gold_last"] = 4.28  # gold did not fall from its peak
    r["rm_report"]["acc_train_labelers"] = 0.62  # 10 points below what a second labeler agrees
    met = met_by_claim(r)
    for claim in ("held-out labelers agree with training labelers", "says 'the text does not say' instead of inventing",
                  "less toxic when asked to be respectful", "PPO-ptx pays less alignment tax (held-out LM loss)",
                  "(ours) SFT keeps the language model", "(ours) the large base model is the better language model",
                  "PPO raises the reward model's score and the gold score",
                  "reward over-optimisation without the KL penalty",
                  "the reward model is about as accurate as a second labeler"):
        assert met[claim] is False, claim
    assert met["PPO-ptx preferred to the base model"] is True


def notes_by_claim(results):
    return {r["claim"]: r["note"] for r in C.claims_table(results) if r["met"] is None}


def test_claims_table_skips_missing_models():
    r = made_up_results(roles=dict(base="base", sft="sft", ppo_ptx="ppo_ptx"), ppo_summaries={})
    rows = C.claims_table(r)
    assert len(rows) == 17  # every claim listed, the impossible ones with a note
    skipped = {row["claim"]: row["note"] for row in rows if row["met"] is None}
    assert all(row["measured"] == "-" for row in rows if row["met"] is None)
    assert skipped["small PPO-ptx preferred to the large base model"] == "skipped: no model for large_base"
    assert skipped["PPO-ptx pays less alignment tax (held-out LM loss)"] == "skipped: no model for ppo"
    assert skipped["(ours) PPO-ptx preferred to SFT sampled greedily"] == "skipped: no model for sft_greedy"
    assert skipped["reward over-optimisation without the KL penalty"].startswith(
        "skipped: no PPO log summary for 'ppo_beta0'")
    assert skipped["PPO raises the reward model's score and the gold score"].startswith(
        "skipped: no PPO log summary for 'ppo'")
    assert "PPO-ptx preferred to SFT" not in skipped  # its models and numbers are all there
    r = made_up_results()
    r["models"]["ppo"]["heldout_loss"] = 2.0  # PPO did not regress: nothing to recover, no verdict
    assert met_by_claim(r)["PPO-ptx pays less alignment tax (held-out LM loss)"] is None
    assert "nothing measurable to recover" in notes_by_claim(r)["PPO-ptx pays less alignment tax (held-out LM loss)"]
    r["models"]["ppo"]["heldout_loss"] = 2.02  # a regression within the noise: no 900% "recovery" verdict
    assert met_by_claim(r)["PPO-ptx pays less alignment tax (held-out LM loss)"] is None


def test_claims_table_names_the_missing_input():
    """A claim whose models are there but a pair or a number is not says which one."""
    r = made_up_results()
    del r["win_rates"]["train"]["ppo_ptx vs bo4"]  # the pair was not judged
    del r["win_rates"]["heldout"]["ppo_ptx vs sft"]  # nor by the held-out labelers
    r["win_rates"]["train"]["bo4 vs sft"]["rate"] = float("nan")  # judged on no prompts
    r["models"]["big"]["probe_acc"] = None  # no probes given
    del r["models"]["base"]["truthfulness"]  # not measured at all
    r["models"]["ppo_ptx"]["toxicity"]["respectful"]["n"] = 0  # no prompt asked for respect
    r["rm_report"] = {}  # evaluated without --rm
    notes = notes_by_claim(r)
    assert notes == {
        "(ours) PPO-ptx preferred to best-of-N by the reward model":
            "skipped: no win rate for 'ppo_ptx vs bo4' (train labelers)",
        "held-out labelers agree with training labelers": "skipped: no win rate for 'ppo_ptx vs sft' (heldout labelers)",
        "(ours) best-of-N by the reward model preferred to SFT": "skipped: no win rate for 'bo4 vs sft' (train labelers)",
        "(ours) the large base model is the better language model": "skipped: no probe_acc for model 'big'",
        "says 'the text does not say' instead of inventing": "skipped: no truthfulness for model 'base'",
        "less toxic when asked to be respectful":
            "skipped: no prompts asking to be respectful: toxicity.respectful.n is 0 for model 'ppo_ptx'",
        "the reward model is about as accurate as a second labeler":
            "skipped: no 'acc_train_labelers' in the reward model's report (rm_report, from --rm's checkpoint)",
    }
    assert met_by_claim(r)["PPO-ptx preferred to SFT"] is False  # the train pair is still judged


def test_claims_table_skips_abstaining_without_unanswerable_prompts():
    r = made_up_results()
    r["models"]["ppo_ptx"]["truthfulness"].update(n_unanswerable=0, says_unknown=float("nan"))  # traps, none unanswerable
    assert notes_by_claim(r)["says 'the text does not say' instead of inventing"] == (
        "skipped: no unanswerable prompts: truthfulness.n_unanswerable is 0 for model 'ppo_ptx'")


@pytest.mark.parametrize("error", [KeyError, TypeError, ZeroDivisionError, ValueError])
def test_claims_table_lets_bugs_through(error):
    """Only a missing input skips a claim: any other exception inside a claim is a bug and
    propagates (the old table turned KeyError / TypeError / ZeroDivisionError into "skipped")."""
    def buggy(inputs, a, b):
        inputs.win(a, b)  # the inputs are there...
        raise error("a bug in the claim")  # ...and the claim itself breaks

    claims = [("buggy claim", "-", ["ppo_ptx", "sft"], buggy)]
    with pytest.raises(error, match="a bug in the claim"):
        C.claims_table(made_up_results(), claims)
    r = made_up_results()
    del r["models"]["ppo_ptx"]["truthfulness"]["says_unknown"]  # a malformed measurement, not a missing one
    with pytest.raises(KeyError, match="says_unknown"):
        C.claims_table(r)
    r = made_up_results()
    r["models"]["base"]["heldout_loss"] = [2.0]  # a list where a number belongs
    with pytest.raises(TypeError):
        C.claims_table(r)


def test_ppo_summary_smooths_and_drops_warmup():
    rows = [dict(iter=i + 1, phase="value_warmup", rm_score=9.0, gold=9.0, score=9.0) for i in range(3)]
    golds = [4.0, 4.0, 4.0, 4.5, 4.5, 4.5, 3.0, 3.0, 3.0]
    rows += [dict(iter=i + 4, phase="ppo", rm_score=0.1 * i, score=-1.0, gold=g) for i, g in enumerate(golds)]
    s = M.ppo_summary(rows)
    assert abs(s["rm_first"] - 0.1) < 1e-9 and abs(s["rm_last"] - 0.7) < 1e-9  # raw RM score, not "score"
    assert s["gold_first"] == 4.0 and s["gold_peak"] == 4.5 and s["gold_last"] == 3.0 and s["n"] == 9
    assert s["peak_iter"] == 8  # the middle of the best 3-iteration window (iterations 7-9)
    assert M.ppo_summary(rows[:5]) is None  # too short to say anything


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
    assert E.model_family("a", {"stage": "dpo"}) == "dpo" and E.model_family("dpo_b05", {"stage": "?"}) == "dpo"


# --- few-shot fitting, PPO logs -----------------------------------------------------------


class ByteTok:
    def encode(self, s):
        return list(s.encode())


def test_fit_fewshot_keeps_whole_examples():
    from evaluation import fewshot as F

    page = "Question: a\nAnswer: b\nQuestion: cc\nAnswer: dd\n"
    assert F.fewshot_examples(page) == ["Question: a\nAnswer: b\n", "Question: cc\nAnswer: dd\n"]
    full = len(F.qa_prompt(page, "Hi?"))
    assert F.fit_fewshot(ByteTok(), page, "Hi?", full) == (page, 2)
    assert F.fit_fewshot(ByteTok(), page, "Hi?", full - 1) == ("Question: a\nAnswer: b\n", 1)
    assert F.fit_fewshot(ByteTok(), page, "Hi?", 5) == ("", 0)
    assert F.qa_prompt("", "Hi?") == "Question: Hi?\nAnswer:"


def test_log_points():
    rows = [dict(iter=i + 1, kl=0.1 * i, score=i - 3.0, rm_score=i, eos_rate=0.75, gold=7 - i) for i in range(11)]
    pts = M.log_points(rows, k=3)
    assert [p["iter"] for p in pts] == [1, 6, 11]
    # the raw RM score (not the penalised "score"), and the no-EOS rate next to it
    assert M.log_points(rows[:2], k=6) == [dict(iter=1, kl=0.0, rm_score=0, no_eos=0.25, gold=7),
                                           dict(iter=2, kl=0.1, rm_score=1, no_eos=0.25, gold=6)]
    assert M.log_points([]) == []


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
    log.write_text("".join(json.dumps(dict(iter=i + 1, kl=0.5 * i, score=0.1 * i, rm_score=0.1 * i, gold=2.0)) + "\n" for i in range(4)))
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
    assert results["win_rates"]["train"]["sft vs sft"]["expected"] == 0.5
    assert 0.0 <= results["win_rates"]["heldout"]["base vs sft"]["expected"] <= 1.0
    assert "| expected |" in (out / "report.md").read_text()
    assert len(results["claims"]) == 17
    notes = {c["claim"]: c["note"] for c in results["claims"] if c["met"] is None}
    assert notes["(ours) PPO-ptx preferred to best-of-N by the reward model"] == "skipped: no model for best_of_n"
    assert notes["PPO raises the reward model's score and the gold score"].startswith(
        "skipped: no PPO log summary for 'ppo'")  # 4 iterations: too short
    report = (out / "report.md").read_text()
    for heading in ("Win rate", "Figure 4", "Truthfulness", "Toxicity", "Alignment tax", "Generalisation",
                    "over-optimisation", "Paper claim", "Samples side by side"):
        assert heading in report
    assert "not found, skipped" in report


# --- the report's figures (figures.make_figures) --------------------------------------------


def figure_results(with_extras=True):
    """A small results dict in evaluate.py's layout, with what the figures read: per model its
    family, params, Figure-4 axes, held-out loss and facts; win rates; PPO log rows."""
    from evaluation.metrics import pair_key

    def w(rate):
        return dict(rate=rate, lo=rate - 0.05, hi=rate + 0.05)

    def m(family, params, fails, loss, facts, **axes):
        return dict(family=family, params=params, heldout_loss=loss, probe_acc=facts,
                    axes=dict(n=100, n_constraint=40, fails_task=fails, ignores_constraint=fails / 2,
                              hallucinates=0.2, inappropriate=0.01, **axes))

    models = {"base": m("base", 0.9e6, 0.95, 0.77, 0.97), "sft": m("sft", 0.9e6, 0.3, 0.82, 0.99, filler=0.05),
              "sft_greedy": m("sft", 0.9e6, 0.2, 0.82, 0.99), "ppo": m("ppo", 0.9e6, 0.3, 0.83, 0.98, filler=0.01),
              "ppo_ptx": m("ppo_ptx", 0.9e6, 0.25, 0.81, None)}
    rows = [dict(iter=i + 1, phase="value_warmup" if i < 3 else "ppo", kl=0.05 * i, rm_score=-0.3 + 0.02 * i,
                 eos_rate=1.0, gold=4.0 + 0.01 * i) for i in range(12)]
    logs = {"out/ppo_log.jsonl": rows, "out/ppo_beta0_log.jsonl": rows[:6]}
    if with_extras:  # stages the default run may not have: a DPO model (a family the report does not know),
        models["dpo"] = m("other", 0.9e6, 0.28, float("nan"), 0.97)  # no held-out loss; a PPO log without gold
        logs["out/ppo_oracle_log.jsonl"] = [dict(iter=i + 1, kl=0.1 * i, rm_score=0.1 * i, reward_source="gold (ORACLE)")
                                            for i in range(5)]
        models["ppo_oracle"] = m("ppo_oracle", 0.9e6, 0.2, 0.81, 0.99)
    names = [n for n in models if n != "sft"]
    return dict(reference="sft", models=models, roles=dict(base="base", sft="sft", sft_greedy="sft_greedy"),
                win_rates=dict(train={pair_key(n, "sft"): w(0.5 + 0.05 * i) for i, n in enumerate(names)},
                               heldout={pair_key(n, "sft"): w(0.45 + 0.05 * i) for i, n in enumerate(names)}),
                ppo_log_rows=logs)


@pytest.mark.parametrize("with_extras", [True, False])
def test_make_figures_writes_the_four_pngs(tmp_path, with_extras):
    pytest.importorskip("matplotlib")
    from evaluation import figures
    note = figures.make_figures(figure_results(with_extras), str(tmp_path))
    for name in figures.FIGURES:
        path = tmp_path / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"![{name}]({name})" in note


def test_make_figures_skips_what_results_lack(tmp_path):
    pytest.importorskip("matplotlib")
    from evaluation import figures
    r = figure_results()
    r["ppo_log_rows"] = {}  # no PPO logs: no over-optimisation figure
    for m in r["models"].values():
        m["heldout_loss"] = None  # no held-out corpus: no alignment-tax figure
        m["axes"].pop("filler", None)
    r["win_rates"]["heldout"] = {}
    note = figures.make_figures(r, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["behaviour.png", "winrate.png"]
    assert "overoptimization" not in note and "alignment_tax" not in note


def test_make_figures_without_matplotlib(tmp_path, monkeypatch):
    from evaluation import figures
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    note = figures.make_figures(figure_results(), str(tmp_path))
    assert note == figures.NO_MATPLOTLIB and note.startswith("matplotlib not installed")  # evaluate.py prints it
    assert os.listdir(tmp_path) == []
