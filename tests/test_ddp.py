"""Data parallel (ddp.py): sft.py, reward.py, ppo.py and dpo.py under torchrun with 2 CPU processes
(gloo) end with the same weights as one process -- and as one process with --grad_accum=2.

Why they can match exactly (to float rounding): every rank reads the same seeded batch order
and takes its share; ddp.share weights each rank's mean loss so DDP's average of the ranks is
the whole batch's mean; PPO's rollouts draw the uniforms of the whole batch (ddp.sampling's hooks
into model.generate) and whiten advantages over all ranks. Dropout is 0 here (per-rank masks differ by
design), and PPO uses one minibatch per epoch (with several, each rank shuffles its own rows:
the same distribution, not the same minibatches).
"""
import subprocess
import sys

import torch

from conftest import ENV, ROOT, run  # and the `files` fixture: a tiny base model, demonstrations, comparisons


def weights(path, key="model"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def assert_same(a, b, what, tol=2e-5):
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert set(a) == set(b) and worst < tol, f"{what}: max |difference| {worst:.2e}"


def test_two_processes_and_grad_accum_match_one_process(files):
    d = files
    common = {
        "sft.py": [f"--init={d}/base.pt", f"--data={d}/demos.jsonl", "--epochs=1", "--batch_size=8",
                   "--dropout=0.0", "--ptx_data=", "--heldout=", "--n_eval=2", "--max_new_tokens=4",
                   "--select=last", "--warmup_steps=1", "--lr=3e-3"],
        "reward.py": [f"--init={d}/base.pt", f"--data={d}/comps.jsonl", "--val=", "--val_heldout=",
                      f"--demos={d}/demos.jsonl", "--batch_size=4", "--warmup_steps=1", "--lr=3e-3"],
    }
    out = {}
    for script, args in common.items():
        name = {"sft.py": "sft.pt", "reward.py": "rm.pt"}[script]
        for tag, nproc, extra in (("one", 1, []), ("two", 2, []), ("accum", 1, ["--grad_accum=2"])):
            run(script, args + extra + [f"--out={d}/{tag}_{name}"], nproc)
        out[name] = {tag: weights(f"{d}/{tag}_{name}") for tag in ("one", "two", "accum")}
        # every optimizer step happened (a loop variable once shadowed the batch list: 1 step, not 5)
        steps = torch.load(f"{d}/two_{name}.last", weights_only=True)["step"]
        assert steps == {"sft.pt": 4, "rm.pt": 5}[name], (name, steps)
    base = weights(f"{d}/base.pt")
    assert (out["sft.pt"]["one"]["lm_head.weight"] - base["lm_head.weight"]).abs().max() > 1e-3  # it trained
    for name, w in out.items():
        assert_same(w["one"], w["two"], f"{name}: 2 processes vs 1")
        assert_same(w["one"], w["accum"], f"{name}: --grad_accum=2 vs 1")

    # PPO from the SFT and RM above: 4 prompts x 2 answers per iteration, one minibatch per epoch
    ppo = [f"--policy={d}/one_sft.pt", f"--rm={d}/one_rm.pt", f"--prompts={d}/prompts.jsonl", "--ptx_data=",
           "--iters=3", "--batch_size=8", "--samples_per_prompt=2", "--minibatch_size=8", "--value_warmup=1",
           "--max_new_tokens=8", "--lr=1e-3", "--ppo_epochs=2", "--lr_warmup=0"]
    for tag, nproc, extra in (("one", 1, []), ("two", 2, []), ("accum", 1, ["--grad_accum=2"])):
        log = run("ppo.py", ppo + extra + [f"--out={d}/{tag}_ppo.pt"], nproc)
        assert "no gold score is logged" in log  # prompts without meta
    one = torch.load(f"{d}/one_ppo.pt", weights_only=True)
    for tag in ("two", "accum"):
        other = torch.load(f"{d}/{tag}_ppo.pt", weights_only=True)
        assert_same(one["model"], other["model"], f"PPO policy: {tag} vs one")
        assert_same(one["value_model"], other["value_model"], f"PPO value: {tag} vs one")
        for a, b in zip(one["history"], other["history"]):  # the same rollouts: same scores and KL
            assert abs(a["rm_score"] - b["rm_score"]) < 1e-4 and abs(a["kl"] - b["kl"]) < 1e-4, (tag, a, b)
    assert (one["model"]["lm_head.weight"] - weights(f"{d}/one_sft.pt")["lm_head.weight"]).abs().max() > 1e-4


def test_dpo_two_processes_and_grad_accum_match_one_process(files):
    """dpo.py shards its batches of ranked prompts like reward.py: 2 ranks and --grad_accum=2
    end with the one-process weights, after every step (20 prompts, 4 per step: 5 steps)."""
    d = files
    args = [f"--policy={d}/base.pt", f"--data={d}/comps.jsonl", f"--val={d}/comps.jsonl", "--batch_size=4",
            "--warmup_steps=1", "--lr=3e-3", "--n_samples=1", "--max_new_tokens=4", "--log_interval=2"]
    for tag, nproc, extra in (("one", 1, []), ("two", 2, []), ("accum", 1, ["--grad_accum=2"])):
        log = run("dpo.py", args + extra + [f"--out={d}/{tag}_dpo.pt"], nproc)
        assert "step 5/5" in log
    one = torch.load(f"{d}/one_dpo.pt", weights_only=True)
    assert one["step"] == 5 and one["stage"] == "dpo"
    assert (one["model"]["lm_head.weight"] - weights(f"{d}/base.pt")["lm_head.weight"]).abs().max() > 1e-3  # it trained
    for tag in ("two", "accum"):
        other = torch.load(f"{d}/{tag}_dpo.pt", weights_only=True)
        assert_same(one["model"], other["model"], f"DPO policy: {tag} vs one")
        for a, b in zip(one["history"], other["history"]):  # the logged means add up over ranks and micro-batches
            assert abs(a.get("loss", 0) - b.get("loss", 0)) < 1e-5 and a.get("acc") == b.get("acc"), (tag, a, b)


def test_batch_too_small_for_the_ranks_is_a_clear_error(files):
    d = files
    r = subprocess.run([sys.executable, "sft.py", "--device=cpu", f"--init={d}/base.pt", f"--data={d}/demos.jsonl",
                        "--batch_size=2", "--grad_accum=4", "--heldout=", "--ptx_data=", f"--out={d}/x.pt"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--batch_size=2 is smaller than ranks x --grad_accum (1 x 4)" in r.stderr


def test_ppo_grad_accum_with_fewer_rollouts_than_micro_batches(files, tmp_path):
    """One prompt x 2 answers with --grad_accum=4: two micro-batches are empty and skipped
    (they once crashed on max() of an empty tensor)."""
    d = files
    (tmp_path / "one.jsonl").write_text('{"prompt": "red cat one"}\n')
    run("sft.py", [f"--init={d}/base.pt", f"--data={d}/demos.jsonl", "--epochs=1", "--batch_size=8", "--ptx_data=",
                   "--heldout=", "--n_eval=2", "--max_new_tokens=4", f"--out={tmp_path}/sft.pt"])
    run("reward.py", [f"--init={d}/base.pt", f"--data={d}/comps.jsonl", "--val=", "--val_heldout=",
                      f"--demos={d}/demos.jsonl", "--batch_size=4", f"--out={tmp_path}/rm.pt"])
    log = run("ppo.py", [f"--policy={tmp_path}/sft.pt", f"--rm={tmp_path}/rm.pt", f"--prompts={tmp_path}/one.jsonl",
                         "--ptx_data=", "--iters=2", "--batch_size=8", "--samples_per_prompt=2", "--minibatch_size=8",
                         "--grad_accum=4", "--value_warmup=1", "--max_new_tokens=4", f"--out={tmp_path}/ppo.pt"])
    assert "step 2/2" in log
