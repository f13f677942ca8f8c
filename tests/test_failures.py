"""A run that fails says so: a diverging loss stops the stage in one line naming the stage, the
step and the likely cause, and leaves no checkpoint "selected" from it; a reward model built
with another tokenizer than the policy's is refused before any work, naming both files."""
import os
import subprocess
import sys
from dataclasses import asdict

import torch

from conftest import ENV, ROOT, WORDS  # and the `files` fixture: a tiny base model, demonstrations, comparisons
from model import GPTConfig, ScalarModel
from tokenizer import Tokenizer, train_bpe


def run(script, args):
    return subprocess.run([sys.executable, script, "--device=cpu"] + args, cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_sft_with_an_absurd_learning_rate_stops_and_saves_nothing(files, tmp_path):
    d = files
    r = run("sft.py", [f"--init={d}/base.pt", f"--data={d}/demos.jsonl", "--epochs=1", "--batch_size=8", "--lr=1e4",
                       "--warmup_steps=1", "--ptx_data=", "--heldout=", "--n_eval=2", "--max_new_tokens=4",
                       f"--out={tmp_path}/sft.pt"])
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert err.startswith("error: sft: the loss is") and "--lr=10000" in err and err.endswith("nothing was saved")
    assert not os.path.exists(f"{tmp_path}/sft.pt")  # no epoch finished: nothing was selected, nothing saved


def test_ppo_refuses_a_reward_model_of_another_tokenizer(files, tmp_path):
    d = files
    other = Tokenizer(train_bpe(" ".join(reversed(WORDS)) * 50 + " zebra quokka", 270))
    cfg = GPTConfig(block_size=64, vocab_size=other.vocab_size, n_layer=1, n_head=2, n_embd=32)
    torch.save(dict(stage="reward", model=ScalarModel(cfg).state_dict(), model_config=asdict(cfg),
                    tokenizer=other.to_dict(), config={}), tmp_path / "rm_other.pt")
    r = run("ppo.py", [f"--policy={d}/base.pt", f"--rm={tmp_path}/rm_other.pt", f"--prompts={d}/prompts.jsonl",
                       "--ptx_data=", "--iters=1", "--batch_size=8", "--samples_per_prompt=2", "--minibatch_size=8",
                       f"--out={tmp_path}/ppo.pt"])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"{tmp_path}/rm_other.pt was trained with another tokenizer than {d}/base.pt" in r.stderr
    assert not os.path.exists(f"{tmp_path}/ppo.pt")
