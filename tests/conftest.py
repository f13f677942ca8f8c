"""Shared test setup: one thread (tiny models on a busy 2-core box run far faster so),
and the repo root on sys.path so tests can `import model`, `import data.world`, ...; plus
`run` (a stage script as a subprocess, or N of them under torchrun), `interrupt` (one
killed mid-run) and the `files`
fixture (a random tiny base model, demonstrations, comparisons, prompts) that the DDP and
DPO tests share."""
import json
import os
import random
import subprocess
import sys
import time
from dataclasses import asdict

import pytest
import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model import GPT, GPTConfig  # noqa: E402 (after the sys.path line)
from tokenizer import Tokenizer, train_bpe  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
WORDS = "red blue green cat dog sun moon tree river stone paris rome one two three yes no".split()


def run(script, args, nproc=1):
    launcher = [sys.executable] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    r = subprocess.run(launcher + [script, "--device=cpu"] + args, cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def interrupt(script, args, checkpoint):
    """Start a stage script, kill it (SIGKILL: no clean-up runs) as soon as `checkpoint` exists,
    and return the checkpoint it left: what a crash or a Ctrl-C mid-run leaves behind."""
    p = subprocess.Popen([sys.executable, script, "--device=cpu"] + args, cwd=ROOT, env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not os.path.exists(checkpoint) and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.kill()
    err = p.communicate()[1]
    assert os.path.exists(checkpoint), err[-3000:]
    return torch.load(checkpoint, weights_only=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A random tiny base model in our checkpoint format, demonstrations, comparisons, prompts."""
    d = tmp_path_factory.mktemp("ddp")
    rng = random.Random(0)
    sent = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    tok = Tokenizer(train_bpe(" ".join(sent(200) for _ in range(5)), 300))
    torch.manual_seed(0)
    cfg = GPTConfig(block_size=64, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    torch.save(dict(stage="pretrain", model=GPT(cfg).state_dict(), model_config=asdict(cfg), tokenizer=tok.to_dict(),
                    config={}), d / "base.pt")
    lines = lambda name, recs: (d / name).write_text("".join(json.dumps(r) + "\n" for r in recs))  # noqa: E731
    lines("demos.jsonl", [{"prompt": sent(4), "response": sent(rng.randint(1, 6))} for _ in range(35)])  # 32 train: 4 steps of 8
    lines("comps.jsonl", [{"prompt": sent(4), "responses": [sent(2), sent(3), sent(4)],
                           "ranking": rng.sample(range(3), 3)} for _ in range(20)])
    lines("prompts.jsonl", [{"prompt": sent(4)} for _ in range(12)])
    return d
