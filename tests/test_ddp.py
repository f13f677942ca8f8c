"""Several processes (torchrun; gloo on the CPU) and gradient accumulation train like one process.

Each rank takes its share of every batch and the ranks average their gradients before each
optimizer step (common.sync_gradients), so every copy of the model takes the same step. A
multi-process run is the one-process run in expectation, not bit for bit:
- the reward model and DPO weigh every prompt the same, and an even share of the prompts
  makes the mean of the ranks' means the batch mean: the weights agree to float rounding;
- SFT's loss is a mean over answer tokens, and two halves' means average to the batch mean
  only when the halves hold as many tokens: the weights agree within a small tolerance;
- PPO's ranks roll out their own prompts with their own seeds (seed + rank): its 2-process
  run is checked to train and to log finite means, not to match one process.
Dropout is 0 here: each rank draws its own masks by design.
"""
import torch

from conftest import run  # and the `files` fixture: a tiny base model, demonstrations, comparisons

# how far the 2-process and --grad_accum=2 runs' final losses may sit from one process's
EXACT = 1e-4  # float rounding: the RM and DPO weigh every prompt the same
TOKEN_MEAN = 5e-3  # SFT: two halves' token means average to the batch's only approximately
# (measured on this data: SFT 3e-4 with the gradients averaged, 5e-2 with no averaging at all)


def weights(path, key="model"):
    return torch.load(path, map_location="cpu", weights_only=True)[key]


def max_diff(a, b):
    assert set(a) == set(b)
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def three_runs(script, args, out, d):
    """The same training in one process, in two (torchrun) and with --grad_accum=2 -> {tag: checkpoint}."""
    for tag, nproc, extra in (("one", 1, []), ("two", 2, []), ("accum", 1, ["--grad_accum=2"])):
        run(script, args + extra + [f"--out={d}/{tag}_{out}"], nproc)
    return {tag: torch.load(f"{d}/{tag}_{out}", weights_only=True) for tag in ("one", "two", "accum")}


def assert_close(ck, key, tol, what):
    one = ck["one"]["history"][-1][key]
    for tag in ("two", "accum"):
        got = ck[tag]["history"][-1][key]
        assert abs(got - one) < tol, f"{what}: {key} {got:.6f} ({tag}) vs {one:.6f} (one process)"


def test_sft_and_reward_model_in_two_processes_train_like_one(files):
    d = files
    sft = three_runs("sft.py", [f"--init={d}/base.pt", f"--data={d}/demos.jsonl", "--epochs=1", "--batch_size=8",
                                "--dropout=0.0", "--ptx_data=", "--heldout=", "--n_eval=2", "--max_new_tokens=4",
                                "--select=last", "--warmup_steps=1", "--lr=3e-3"], "sft.pt", d)
    assert sft["one"]["history"][0]["val_loss"] - sft["one"]["history"][-1]["val_loss"] > 0.1  # it learned
    assert_close(sft, "val_loss", TOKEN_MEAN, "SFT")
    assert torch.load(f"{d}/two_sft.pt.last", weights_only=True)["step"] == 4  # every optimizer step happened

    rm = three_runs("reward.py", [f"--init={d}/base.pt", f"--data={d}/comps.jsonl", "--val=", "--val_heldout=",
                                  f"--demos={d}/demos.jsonl", "--batch_size=4", "--warmup_steps=1", "--lr=3e-3"],
                    "rm.pt", d)
    assert torch.load(f"{d}/two_rm.pt.last", weights_only=True)["step"] == 5
    assert_close(rm, "train_loss", EXACT, "RM")


def test_dpo_in_two_processes_trains_like_one(files):
    """20 prompts, 4 per step: 5 steps; the logged means are averaged over the ranks."""
    d = files
    args = [f"--policy={d}/base.pt", f"--data={d}/comps.jsonl", f"--val={d}/comps.jsonl", "--batch_size=4",
            "--warmup_steps=1", "--lr=3e-3", "--n_samples=1", "--max_new_tokens=4", "--log_interval=5"]
    dpo = three_runs("dpo.py", args, "dpo.pt", d)
    assert dpo["one"]["history"][-1]["val_loss"] < dpo["one"]["history"][0]["val_loss"] - 0.03  # it learned (0.693 -> 0.645)
    assert_close(dpo, "val_loss", EXACT, "DPO")
    assert_close(dpo, "loss", EXACT, "DPO")  # the training pairs' loss, averaged over the ranks


def test_ppo_in_two_processes_trains(files, tmp_path):
    """Each rank answers its own prompts; the logged numbers are the ranks' means."""
    d = files
    run("sft.py", [f"--init={d}/base.pt", f"--data={d}/demos.jsonl", "--epochs=1", "--batch_size=8", "--ptx_data=",
                   "--heldout=", "--n_eval=2", "--max_new_tokens=4", f"--out={tmp_path}/sft.pt"])
    run("reward.py", [f"--init={d}/base.pt", f"--data={d}/comps.jsonl", "--val=", "--val_heldout=",
                      f"--demos={d}/demos.jsonl", "--batch_size=4", f"--out={tmp_path}/rm.pt"])
    args = [f"--policy={tmp_path}/sft.pt", f"--rm={tmp_path}/rm.pt", f"--prompts={d}/prompts.jsonl", "--ptx_data=",
            "--iters=3", "--batch_size=8", "--samples_per_prompt=2", "--minibatch_size=4", "--value_warmup=1",
            "--max_new_tokens=8", "--lr=1e-3", "--lr_warmup=0", f"--out={tmp_path}/ppo.pt"]
    log = run("ppo.py", args, nproc=2)
    assert "ranks 2" in log and "step 3/3" in log
    ck = torch.load(f"{tmp_path}/ppo.pt", weights_only=True)
    assert ck["iter"] == 3 and all(abs(h["kl"]) < 10 and h["resp_len"] > 0 for h in ck["history"])
    assert max_diff(ck["model"], weights(f"{tmp_path}/sft.pt")) > 1e-4  # the policy trained


def test_batch_too_small_for_the_ranks_is_a_clear_error(files):
    import subprocess
    import sys
    from conftest import ENV, ROOT
    d = files
    r = subprocess.run([sys.executable, "sft.py", "--device=cpu", f"--init={d}/base.pt", f"--data={d}/demos.jsonl",
                        "--batch_size=2", "--grad_accum=4", "--heldout=", "--ptx_data=", f"--out={d}/x.pt"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--batch_size=2 is smaller than ranks x --grad_accum (1 x 4)" in r.stderr
