"""
Plumbing every stage shares, kept in one place so the stage files stay about RLHF:

- `parse_config`: a dataclass of defaults + `--key=value` overrides + optional preset files
- `get_device` / `autocast`: cuda > mps > cpu, and the one place precision is decided
- `save_checkpoint` / `load_checkpoint`: atomic writes, `weights_only=True` reads
- `die`: a user mistake ends with one clear line and a non-zero exit, not a traceback
- `log_line`: the one fixed-format line per logging step

Nothing here knows about GPTs or RL.
"""

import ast
import dataclasses
import inspect
import os
import random
import re
import sys
from contextlib import nullcontext

import numpy as np
import torch


def die(msg, code=1):
    """Print `error: msg` to stderr and exit. For user mistakes (bad flag, bad file)."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


# -----------------------------------------------------------------------------
# config: `python sft.py [preset.txt ...] [--key=value ...]`


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


def _coerce(key, raw, default, where):
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
        die(f"{where}: '{key}' expects {want.__name__} (default {default!r}), got {raw!r}", 2)
    return val


def parse_config(cfg, argv=None):
    """
    Apply overrides to the dataclass instance `cfg` (in place) and return it.

    argv items are either `--key=value` or a path to a preset file whose lines are
    `key = value` (`#` starts a comment). Values are Python literals checked against the
    type of the default; a bare word is a string. Later items win. Unknown keys, wrong
    types and missing files exit with status 2 and a one-line message naming the key.

        >>> cfg = parse_config(SFTConfig(), ["--epochs=2", "--lr=3e-4"])
        >>> cfg = parse_config(SFTConfig(), ["my_overrides.txt", "--lr=3e-4"])  # key = value lines, then one more
    """
    argv = sys.argv[1:] if argv is None else argv
    fields = {f.name: f for f in dataclasses.fields(cfg)}

    def apply(key, raw, where):
        if key not in fields:
            close = [k for k in fields if k.startswith(key[:3])]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            die(f"{where}: unknown config key '{key}'{hint}; see --help", 2)
        setattr(cfg, key, _coerce(key, raw, getattr(cfg, key), where))

    for arg in argv:
        if arg in ("-h", "--help"):
            comments = _field_comments(type(cfg))
            print(f"options for {type(cfg).__name__} (--key=value, or a preset file of key = value lines):")
            for k in fields:
                print(f"  {f'--{k}={getattr(cfg, k)!r}':<44} {comments.get(k, '')}")
            sys.exit(0)
        if arg.startswith("--"):
            if "=" not in arg:
                die(f"argument '{arg}': expected --key=value", 2)
            key, raw = arg[2:].split("=", 1)
            apply(key, raw, "command line")
        else:
            if not os.path.isfile(arg):
                die(f"preset file '{arg}' not found (arguments are --key=value or a preset file)", 2)
            try:
                with open(arg, encoding="utf-8") as f:
                    text = f.read()
            except UnicodeDecodeError:
                die(f"preset file '{arg}' is not UTF-8 text (expected lines of key = value; options are --key=value)", 2)
            for lineno, line in enumerate(text.splitlines(), 1):
                line = line.split("#", 1)[0].strip()
                if not line:
                    continue
                if "=" not in line:
                    die(f"{arg}:{lineno}: expected 'key = value', got {line!r}", 2)
                key, raw = (s.strip() for s in line.split("=", 1))
                apply(key, raw, f"{arg}:{lineno}")
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


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state():
    """All RNG states as weights_only-safe types, for exact resume."""
    st = {"python": random.getstate(), "torch": torch.get_rng_state()}
    np_st = np.random.get_state()
    st["numpy"] = [np_st[0], torch.from_numpy(np_st[1].astype(np.int64)), *np_st[2:]]
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st):
    random.setstate(st["python"])
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


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


def log_line(step, total, **metrics):
    """`step 40/400 | loss 1.2340 | kl 0.0120` -- one fixed-format line per logging step."""
    parts = [f"step {step}/{total}"]
    for k, v in metrics.items():
        if isinstance(v, float):
            v = f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
        parts.append(f"{k} {v}")
    return " | ".join(parts)
