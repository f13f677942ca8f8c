"""End to end: the --quick pipeline runs every stage as a script, and resume/bad-input behave.

This is the slowest file of the suite (~2 minutes on a 2-core CPU): one pipeline run,
shared by the tests below through a module-scoped fixture.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import interrupt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}


def run(args, timeout=600):
    return subprocess.run([sys.executable] + args, cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("quick"))
    r = run(["pipeline.py", "--quick", f"--out={out}"], timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r.stdout


def test_every_stage_produced_its_artefact(quick):
    out, log = quick
    for f in ["world/world.json", "world/sft.jsonl", "tokenizer.tiktoken", "base.pt", "base_large.pt", "sft.pt",
              "comparisons.jsonl", "comparisons_val.jsonl", "comparisons_val_heldout.jsonl", "rm.pt", "dpo.pt", "ppo.pt",
              "ppo_ptx.pt", "ppo_beta0.pt", "ppo_oracle.pt", "ppo_log.jsonl", "report.md", "results.json"]:
        assert os.path.exists(os.path.join(out, f)), f
    for stage in ["world", "base", "base_large", "sft", "collect", "reward", "dpo", "ppo", "ppo_ptx",
                  "ppo_beta0", "ppo_oracle", "evaluate"]:
        assert f"=== {stage}:" in log
    # every checkpoint loads without running code, and carries its configs
    for f in ["base.pt", "sft.pt", "rm.pt", "ppo_ptx.pt", "dpo.pt"]:
        ck = torch.load(os.path.join(out, f), map_location="cpu", weights_only=True)
        assert "model" in ck and "model_config" in ck and "config" in ck


def test_oracle_is_labelled_everywhere(quick):
    """The gold-reward diagnostic says ORACLE in its config, log lines, log file and report row."""
    out, log = quick
    ck = torch.load(os.path.join(out, "ppo_oracle.pt"), map_location="cpu", weights_only=True)
    assert ck["config"]["reward"] == "gold"
    assert torch.load(os.path.join(out, "ppo_ptx.pt"), map_location="cpu", weights_only=True)["config"]["reward"] == "rm"
    assert "ORACLE: the reward is the gold judge's score" in log and "ORACLE step" in log
    rows = [json.loads(x) for x in open(os.path.join(out, "ppo_oracle_log.jsonl"))]
    assert rows and all(r["reward_source"] == "gold (ORACLE)" for r in rows)
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["models"]["ppo_oracle"]["family"] == "ppo_oracle" and results["roles"]["ppo_ptx"] == "ppo_ptx"
    assert "ORACLE" in open(os.path.join(out, "report.md")).read()


def test_reward_model_is_normalised(quick):
    """Re-score with the SAVED reward model (not the numbers reward.py printed): the labelers'
    demonstrations score mean 0 and the SFT policy's samples score with std 1."""
    from data import load_comparisons, load_demonstrations
    from policy import load_policy, load_reward_model
    from reward import score_texts
    out, _ = quick
    rm, _ = load_reward_model(os.path.join(out, "rm.pt"))
    _, tok, _ = load_policy(os.path.join(out, "sft.pt"))
    demos = load_demonstrations(os.path.join(out, "world", "sft.jsonl"), max_tokens=rm.trunk.config.block_size - 3,
                                count_tokens=lambda s: len(tok.encode(s)))
    s = score_texts(rm, tok, [d["prompt"] for d in demos], [d["response"] for d in demos], "cpu")
    assert abs(s.mean().item()) < 1e-3
    samples = [(c["prompt"], r) for c in load_comparisons(os.path.join(out, "comparisons.jsonl"))
               for r, src in zip(c["responses"], c["sources"]) if src.startswith("sft")][:2000]
    s = score_texts(rm, tok, [p for p, _ in samples], [r for _, r in samples], "cpu")
    assert abs(s.std().item() - 1.0) < 1e-3


def test_report_contains_every_table(quick):
    out, _ = quick
    report = open(os.path.join(out, "report.md")).read().lower()
    for section in ["win rate", "held-out labelers", "truthful", "toxic", "alignment tax", "generalisation",
                    "over-optimisation", "paper"]:
        assert section in report, section
    results = json.load(open(os.path.join(out, "results.json")))
    assert {"base", "sft", "sft_greedy", "ppo", "ppo_ptx", "base_large", "dpo", "ppo_oracle"} <= set(results["models"])
    assert results["models"]["dpo"]["family"] == "dpo" and results["models"]["sft"]["kl_ref"] == 0.0
    assert "## DPO beside PPO" in open(os.path.join(out, "report.md")).read()
    assert len(results["claims"]) == 17 and all(c["measured"] for c in results["claims"])


def test_finished_stages_are_not_redone(quick):
    out, _ = quick
    r = run(["pipeline.py", "--quick", f"--out={out}"])
    assert r.returncode == 0
    assert r.stdout.count("done earlier, skipping") == 12


def test_ppo_resume_continues(quick, tmp_path):
    out, _ = quick
    args = ["ppo.py", f"--policy={out}/sft.pt", f"--rm={out}/rm.pt", f"--prompts={out}/world/ppo_prompts.jsonl",
            "--batch_size=8", "--minibatch_size=4", f"--out={tmp_path}/p.pt"]
    assert run(args + ["--iters=1"]).returncode == 0
    r = run(args + ["--iters=2", "--resume=True"])
    assert r.returncode == 0 and "resumed from" in r.stdout
    ck = torch.load(f"{tmp_path}/p.pt", weights_only=True)
    assert ck["iter"] == 2 and len(ck["history"]) == 2


def test_user_mistakes_give_one_line_errors(quick, tmp_path):
    out, _ = quick
    r = run(["sft.py", "--epochs=two"])
    assert r.returncode == 2 and "'--epochs' expects int" in r.stderr and "Traceback" not in r.stderr
    r = run(["ppo.py", "--klcoef=0.1"])
    assert r.returncode == 2 and "unknown option '--klcoef'" in r.stderr
    r = run(["dpo.py", "presets/quick.json"])  # preset files are pipeline.py's, not the stages'
    assert r.returncode == 2 and "unexpected argument 'presets/quick.json'" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "responses": ["a", "b"], "ranking": [0, 0], "labeler": "x"}\n')
    r = run(["reward.py", f"--init={out}/sft.pt", f"--data={bad}", "--val=", "--val_heldout=", "--demos="])
    assert r.returncode != 0 and f"{bad}:1" in r.stderr and "Traceback" not in r.stderr
    r = run(["ppo.py", f"--policy={tmp_path}/missing.pt"])
    assert r.returncode != 0 and "missing.pt" in r.stderr and "Traceback" not in r.stderr


def test_pretrain_resume_matches_uninterrupted(quick, tmp_path):
    """Killed mid-run, pretrain.py --resume=True continues from its last checkpoint to the same
    weights as a run never interrupted (its windows come from a generator saved with it)."""
    out, _ = quick
    base = ["pretrain.py", "--size=tiny", f"--tokenizer={out}/tokenizer.tiktoken", f"--data={out}/world/corpus_train.txt",
            f"--heldout={out}/world/corpus_heldout.txt", "--probes=", "--eval_interval=10", "--eval_batches=2",
            "--batch_size=4", "--train_ctx=32", "--max_iters=300"]
    left = interrupt("pretrain.py", base[1:] + [f"--out={tmp_path}/b.pt"], f"{tmp_path}/b.pt")
    assert 10 <= left["step"] < 300
    r = run(base + [f"--out={tmp_path}/b.pt", "--resume=True"])
    assert r.returncode == 0 and "resumed" in r.stdout
    assert run(base + [f"--out={tmp_path}/a.pt"]).returncode == 0
    a = torch.load(f"{tmp_path}/a.pt", weights_only=True)
    b = torch.load(f"{tmp_path}/b.pt", weights_only=True)
    assert a["step"] == b["step"] == 300
    assert a["val_loss"] == b["val_loss"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
