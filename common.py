"""
Plumbing every stage shares, kept in one place so the stage files stay about RLHF:

- `parse_config`: a dataclass of defaults + `--key=value` overrides (every stage and pipeline.py)
- `get_device` / `autocast`: cuda > mps > cpu, and the one place precision is decided
- `lr_at`: the learning-rate schedule of every stage, a pure function of the step
- `encode_docs` / `get_batch`: pretraining text as one token stream, and random windows of it
- `save_checkpoint` / `load_checkpoint` / `resume`: atomic writes, `weights_only=True` reads,
  and picking up an interrupted run where it stopped
- `die`: a user mistake ends with one clear line and a non-zero exit, not a traceback
- `log_line`: the one fixed-format line per logging step; `check_loss`: a diverging run stops
- `ddp_setup` / `sync_gradients` / `ddp_mean` / `ddp_cleanup`: the few lines a stage needs to
  run as N processes under torchrun (each does nothing in one process: skip them on a first read)

Nothing here knows about GPTs or RL.
"""

import ast
import dataclasses
import inspect
import math
import os
import random
import re
import sys
import time
from contextlib import nullcontext
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist


def die(msg, code=1):
    """Print `error: msg` to stderr and exit. For user mistakes (bad flag, bad file)."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


# -----------------------------------------------------------------------------
# config: `python sft.py [--key=value ...]`


def _field_comments(cls):
    """{field: comment} read from the `name: type = default  # comment` lines of a dataclass."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in src.splitlines():
        m = re.match(r"\s+(\w+)\s*:[^=]+=.*?#\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out


def _coerce(key, raw, default):
    """Turn the string `raw` into a value of the same type as `default`, or die (exit 2)."""
    want = type(default)
    try:
        val = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        val = raw  # bare words are strings: --device=cuda
    if want is bool:
        if isinstance(val, str) and val.lower() in ("true", "false"):
            val = val.lower() == "true"
        if val in (0, 1) and not isinstance(val, float):
            val = bool(val)
    elif want is float and isinstance(val, int) and not isinstance(val, bool):
        val = float(val)
    elif want is str and not isinstance(val, str):
        val = raw  # --out=123 is the string "123"
    if default is not None and type(val) is not want:
        die(f"'--{key}' expects {want.__name__} (default {default!r}), got {raw!r}", 2)
    return val


def parse_config(cfg, argv=None):
    """
    Apply `--key=value` overrides to the dataclass instance `cfg` (in place) and return it.
    Values are Python literals checked against the type of the default; a bare word is a
    string; a bare `--flag` sets a boolean to True. Later items win. Unknown keys and wrong
    types exit with status 2 and a one-line message naming the key; --help lists the keys
    with their defaults and comments.

        >>> cfg = parse_config(SFTConfig(), ["--epochs=2", "--lr=3e-4"])

    Presets are data, not code: pipeline.py keeps each recipe's overrides, per stage, in
    presets/*.json and passes them on as --key=value arguments.
    """
    argv = sys.argv[1:] if argv is None else argv
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for arg in argv:
        if arg in ("-h", "--help"):
            comments = _field_comments(type(cfg))
            print(f"options for {type(cfg).__name__} (--key=value):")
            for k in fields:
                print(f"  {f'--{k}={getattr(cfg, k)!r}':<44} {comments.get(k, '')}")
            sys.exit(0)
        if not arg.startswith("--"):
            die(f"unexpected argument '{arg}': options are --key=value (see --help)", 2)
        key, raw = arg[2:].split("=", 1) if "=" in arg else (arg[2:], None)
        if key not in fields:
            close = [k for k in fields if k.startswith(key[:3])]
            hint = (f" (did you mean {', '.join(close)}?)" if close else  # a short list in full (pipeline.py's)
                    f" (options: {', '.join('--' + k for k in fields)})" if len(fields) <= 12 else "")
            die(f"unknown option '--{key}'{hint}; see --help", 2)
        if raw is None:
            if type(getattr(cfg, key)) is not bool:
                die(f"argument '{arg}': expected --{key}=value", 2)
            raw = "True"  # --quick means --quick=True
        setattr(cfg, key, _coerce(key, raw, getattr(cfg, key)))
    return cfg


def print_config(cfg):
    print(f"config ({type(cfg).__name__}):")
    for k, v in dataclasses.asdict(cfg).items():
        print(f"  {k} = {v!r}")


# -----------------------------------------------------------------------------
# device and precision


def get_device(name="auto"):
    """'auto' picks cuda > mps > cpu; anything else is taken as given ('cpu', 'cuda:1')."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        die(f"--device={name} but CUDA is not available on this machine", 2)
    return name


def autocast(device):
    """bf16 autocast on CUDA (weights stay fp32), plain fp32 elsewhere. The one precision switch."""
    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def precision_name(device):
    return "bf16 autocast" if device.startswith("cuda") else "fp32"


def clock(device):
    """time.perf_counter(), after waiting for the GPU's queued kernels (else their time lands
    in whatever is timed next)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def sampling_generator(device, seed):
    """A seeded torch.Generator for sampling on `device`, or None on Apple's mps, which has
    no device generators (sampling there draws from the global RNG, seeded by seed_everything)."""
    device = str(device)
    return None if device.startswith("mps") else torch.Generator(device=device).manual_seed(seed)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -----------------------------------------------------------------------------
# the learning-rate schedule


def lr_at(step, total, peak, warmup=0, floor=None):
    """
    The learning rate of optimizer step `step` (from 0) of `total`: a linear ramp to `peak`
    over the first `warmup` steps, then
      floor=None: the lower of that ramp and a linear decay to 0 at `total` (Ziegler et al.;
                  the RM, DPO and PPO), or
      floor=x:    a cosine decay from `peak` to x at `total` (nanoGPT; pretraining, SFT).

        lr_at(0, 10, 1.0, warmup=2) -> 0.5;  lr_at(5, 10, 1.0) -> 0.5;  lr_at(10, 10, 1.0, floor=0.1) -> 0.1
    """
    if floor is None:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        return peak * min(ramp, 1 - step / total)
    if step < warmup:
        return peak * (step + 1) / warmup  # not peak * ramp: that rounds differently (nanoGPT's form)
    frac = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))) * (peak - floor)


# -----------------------------------------------------------------------------
# pretraining text as one token stream, and random windows of it (pretraining, SFT's and PPO's ptx)


def encode_docs(tok, docs):
    """documents -> one long tensor of tokens, each document followed by <|endoftext|>."""
    ids = []
    for d in docs:
        ids.extend(tok.encode(d))
        ids.append(tok.eot_id)
    return torch.tensor(ids, dtype=torch.long)


def get_batch(stream, batch_size, ctx, generator):
    """Random windows of ctx + 1 tokens -> (x, y) each (B, ctx); y is x shifted by one."""
    ix = torch.randint(len(stream) - ctx - 1, (batch_size,), generator=generator)
    x = torch.stack([stream[i : i + ctx] for i in ix])
    y = torch.stack([stream[i + 1 : i + ctx + 1] for i in ix])
    return x, y


# -----------------------------------------------------------------------------
# checkpoints: one dict per stage, written atomically, read without running code


def save_checkpoint(obj, path):
    """torch.save to `path.tmp`, then rename: an interrupted write never leaves a half file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu"):
    """Load a checkpoint dict with weights_only=True: a downloaded file cannot run code."""
    if not os.path.isfile(path):
        die(f"checkpoint '{path}' not found (run the stage that writes it first)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors, truncated files, foreign objects
        die(f"checkpoint '{path}' could not be loaded safely: {type(e).__name__}: {str(e).splitlines()[0]}")


def resume(path, stage, device, model=None, optimizer=None):
    """
    Continue an interrupted run: if `path` exists, load it (it must be a `stage` checkpoint),
    put its weights into `model` and its state into `optimizer`, and return the dict (the
    stage reads its own counters from it); else None. Stages write this file after every
    epoch, interval or iteration, so --resume=True loses at most that much work. The global
    random streams start afresh: a resumed run continues the same training, not the same
    random numbers.
    """
    if not os.path.isfile(path):
        return None
    ck = load_checkpoint(path, device)
    if ck.get("stage") != stage:
        die(f"{path} is a '{ck.get('stage')}' checkpoint, not a '{stage}' one: cannot resume from it")
    if model is not None:
        model.load_state_dict(ck["model"])
    if optimizer is not None:
        optimizer.load_state_dict(ck["optimizer"])
    print(f"resumed from {path}")
    return ck


LOSS_LIMIT = 100.0  # no loss here comes near it while training works: uniform guessing over GPT-2's vocab is 10.8


def check_loss(loss, stage, step, lr, last_good):
    """Stop a run whose loss stopped being finite or exploded past LOSS_LIMIT: one line naming the
    stage, the step and the likely cause, exit 1, and the last good checkpoint left as it was."""
    value = loss.item()
    if not math.isfinite(value) or abs(value) > LOSS_LIMIT:
        kept = f"the last good checkpoint is {last_good}" if os.path.exists(last_good) else "nothing was saved"
        die(f"{stage}: the loss is {value:.4g} at step {step}, it diverged; the likely cause is the learning "
            f"rate (--lr={lr:g}); {kept}")


def log_line(step, total, **metrics):
    """`step 40/400 | loss 1.2340 | kl 0.0120` -- one fixed-format line per logging step."""
    parts = [f"step {step}/{total}"]
    for k, v in metrics.items():
        if isinstance(v, float):
            v = f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        parts.append(f"{k} {v}")
    return " | ".join(parts)


# -----------------------------------------------------------------------------
# several processes, the nanoGPT way (`torchrun --nproc_per_node=4 sft.py ...`; gloo with
# --device=cpu): each does nothing in one process. Every process (a "rank") holds a whole
# copy of the model and trains on its own share of each batch, its random numbers seeded
# with seed + rank; the copies start equal (a stage draws any random initialisation before
# that seeding) and average their gradients before each step (`sync_gradients`), so they stay
# equal. Rank 0 alone prints, evaluates and saves. A run on N ranks is the one-process run
# in expectation, not bit for bit (as in nanoGPT and CleanRL).


def ddp_setup(device):
    """Join the process group when started by torchrun -> (device, rank, world_size):
    NCCL with one GPU per rank (cuda:LOCAL_RANK), gloo on the CPU. One process: (device, 0, 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return device, 0, 1
    if device.startswith("cuda"):
        device = f"cuda:{os.environ['LOCAL_RANK']}"
        torch.cuda.set_device(device)
    # an hour: the other ranks wait in a collective while rank 0 alone evaluates and saves
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=timedelta(hours=1))
    if dist.get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # one copy of the logs (errors still reach stderr)
    return device, dist.get_rank(), world_size


def sync_gradients(params):
    """Average each gradient over the ranks, so that every rank takes the same optimizer step.
    (DistributedDataParallel does the same during backward, in buckets that overlap with it;
    written out it is this loop.) Every rank must have run the same parameters."""
    if not dist.is_initialized():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)  # the sum over the ranks ...
            p.grad /= dist.get_world_size()  # ... -> the mean


def ddp_mean(stats):
    """{name: number} -> the same names averaged over the ranks, for the logs."""
    if not dist.is_initialized():
        return stats
    keys = sorted(stats)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    t = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {**stats, **{k: v / dist.get_world_size() for k, v in zip(keys, t.tolist())}}


def ddp_cleanup():
    """Leave the group together: a rank that left while rank 0 still saved took gloo down."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
