"""
Export a policy checkpoint as a Hugging Face GPT-2 directory, so the model you trained
opens in `transformers` (and in this project's own `--init=DIR`, which is how it is checked).

    python export.py out/ppo_ptx.pt out/ppo_ptx_hf            # any policy checkpoint: base, SFT, PPO, DPO
    python export.py out/gpt2/ppo_ptx.pt out/gpt2_ppo_hf --force   # write into a non-empty directory
    python -c "from transformers import AutoTokenizer, GPT2LMHeadModel as M; M.from_pretrained('out/ppo_ptx_hf')"

What it writes (with torch, numpy and the standard library only):
- config.json         GPT2LMHeadModel's config; layer_norm_epsilon and the token ids read off the model
- model.safetensors   written by hand: an 8-byte little-endian header length, a JSON header
                      {name: {dtype, shape, data_offsets}} padded to 8 bytes, then the raw
                      little-endian float32 bytes (the inverse of model.read_safetensors)
- vocab.json, merges.txt   the model's byte-level BPE (GPT-2's own or the world's): what
                      tokenizer.Tokenizer.from_hf_dir and transformers' GPT2Tokenizer read
- tokenizer_config.json, special_tokens_map.json   <|pad|>, <|user|>, <|assistant|> as added
                      special tokens at the ids tokenizer.py gives them, and a chat template
                      that lays a conversation out exactly as tokenizer.render does

Writing is all-or-nothing: the files go into DIR.partial/, the export is loaded back with
the project's own loader (policy.load_policy) and must give the same logits and token ids,
and only then are the files moved into DIR. A non-empty DIR is refused unless --force;
with --force, the files of the same names are replaced and the ones a GPT-2 loader would
read instead of them (tokenizer.json, pytorch_model.bin, ...) are removed.

Deviations from `save_pretrained`:
1. Only float32 tensors, no lm_head.weight (GPT-2 ties it to wte, as model.py does), and the
   dropouts set to 0 in config.json: an export for inference (set them yourself to train on).
2. A model trained with bias=False gets zero biases: GPT-2 always has them, and a zero bias
   is no bias.
3. No tokenizer.json: transformers builds its fast tokenizer from vocab.json + merges.txt.
4. transformers turns special-token text typed in a prompt ("<|endoftext|>") into the control
   token; tokenizer.encode never does. `tok(text, split_special_tokens=True)` matches ours.
"""
import json
import os
import shutil
import struct
import sys
from dataclasses import dataclass

import torch

from common import die, parse_config
from model import HF_TRANSPOSED
from policy import load_policy
from tokenizer import SPECIAL_TOKENS, bytes_to_unicode, render


@dataclass
class ExportConfig:
    checkpoint: str = ""  # policy checkpoint (or HF GPT-2 directory) to export; also the first bare argument
    out: str = ""  # the directory to write; also the second bare argument
    force: bool = False  # write into a non-empty directory (same-named files are replaced)
    check: bool = True  # load the export back with policy.load_policy and compare logits and tokens


# what transformers reads in preference to (or beside) the files we write: stale ones must go
STALE = ["tokenizer.json", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json",
         "added_tokens.json", "generation_config.json"]
SAMPLE = ("Where does Belan live? Say <|endoftext|> and <|user|> as text, please.", " Belan lives in Toramo. é ✓")


# -----------------------------------------------------------------------------
# weights: our state dict -> GPT-2's names and layouts -> a .safetensors file


def hf_state_dict(model):
    """GPT -> {GPT-2 key: float32 tensor}, as GPT2LMHeadModel.save_pretrained names them."""
    sd = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        if k.endswith(HF_TRANSPOSED):
            v = v.t()  # (out, in) -> Conv1D's (in, out)
        out[k] = v.detach().float().cpu().contiguous()
    # bias=False models: GPT-2 has a bias on every Linear and LayerNorm; zero is the same function
    for k, v in list(out.items()):
        bias = k.removesuffix(".weight") + ".bias"
        if k.endswith(".weight") and "wte" not in k and "wpe" not in k and bias not in out:
            out[bias] = torch.zeros(v.shape[-1] if k.endswith(HF_TRANSPOSED) else v.shape[0])
    return out


def write_safetensors(tensors, file):
    """{name: float32 tensor} -> a .safetensors file, by hand (model.read_safetensors reads it
    back). Layout: u64 little-endian N, N bytes of JSON header (space-padded so the data starts
    8-byte aligned), then every tensor's bytes back to back, offsets relative to the data.
    The offsets come from the shapes, so each tensor is converted only as it is written."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0  # transformers wants format "pt"
    for name, t in tensors.items():
        size = t.numel() * 4  # float32
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format allows trailing spaces in the header; they align the data
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(t.numpy().astype("<f4").tobytes())  # little-endian float32, C order


def hf_config(model, tok):
    cfg = model.config
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size, "n_ctx": cfg.block_size,
            "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": None,
            "activation_function": "gelu_new",  # the tanh GELU of model.MLP
            "layer_norm_epsilon": model.transformer.ln_f.eps,  # nn.LayerNorm's default, 1e-5 as GPT-2's
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "initializer_range": 0.02, "tie_word_embeddings": True, "torch_dtype": "float32",
            # a response ends with <|endoftext|>: it is the chat model's end of sequence
            "bos_token_id": tok.eot_id, "eos_token_id": tok.eot_id, "pad_token_id": tok.pad_id}


# -----------------------------------------------------------------------------
# the tokenizer: tiktoken's ranks -> GPT-2's vocab.json + merges.txt


def bpe_parts(ranks, token, max_rank):
    """Split `token` (bytes) by byte-level BPE using only ranks below max_rank. For a token of
    rank r, bpe_parts(ranks, token, r) is the pair that merged into it (tiktoken's
    _educational.py recovers GPT-2's merges the same way). -> list of bytes pieces."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], max_rank))
        if ranks.get(parts[best] + parts[best + 1], max_rank) >= max_rank:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def vocab_and_merges(tok):
    """Tokenizer -> (vocab {GPT-2 unicode string: id}, merges ["a b", ...] in rank order).
    tiktoken merges by the rank of the merged token, GPT-2 by its line in merges.txt; the two
    agree when merge k makes rank 256 + k (tokenizer.gpt2_ranks checks this on the way in)."""
    ranks = tok.enc._mergeable_ranks  # {token bytes: rank}: the one place tokenizer.py keeps them
    if any(ranks.get(bytes([b])) is None or ranks[bytes([b])] >= 256 for b in range(256)):
        die("the tokenizer's ranks 0..255 are not the 256 single bytes: not expressible as GPT-2 files")
    u = bytes_to_unicode()  # byte -> printable character, GPT-2's trick to keep vocab.json readable
    text = lambda b: "".join(u[x] for x in b)  # noqa: E731
    vocab = {text(t): r for t, r in ranks.items()}
    vocab["<|endoftext|>"] = tok.eot_id  # right after the BPE ranks (50256 for GPT-2)
    merges = []
    for t, r in sorted(ranks.items(), key=lambda kv: kv[1])[256:]:
        parts = bpe_parts(ranks, t, r)
        if len(parts) != 2:
            die(f"token {t!r} (rank {r}) is not one merge of two lower-ranked tokens: cannot write merges.txt")
        merges.append(f"{text(parts[0])} {text(parts[1])}")
    return vocab, merges


def tokenizer_files(tok, block_size):
    """{file name: JSON object} of the tokenizer's settings and its special tokens."""
    special = dict(zip(SPECIAL_TOKENS, (tok.eot_id, tok.pad_id, tok.user_id, tok.assistant_id)))
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for s, i in special.items()}
    names = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
             "pad_token": "<|pad|>", "additional_special_tokens": ["<|user|>", "<|assistant|>"]}
    # tokenizer.render's layout: <|user|> prompt <|assistant|> response <|endoftext|>, one turn
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
                "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|endoftext|>{% endif %}"
                "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    config = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False, "add_bos_token": False,
              "model_max_length": block_size, "clean_up_tokenization_spaces": False,
              "added_tokens_decoder": added, "chat_template": template, **names}
    return {"tokenizer_config.json": config, "special_tokens_map.json": names}


# -----------------------------------------------------------------------------
# write, check, move into place


def write_dir(model, tok, path):
    """Every file of the export into the (empty) directory `path`."""
    os.makedirs(path)
    write_safetensors(hf_state_dict(model), os.path.join(path, "model.safetensors"))
    vocab, merges = vocab_and_merges(tok)
    files = {"config.json": hf_config(model, tok), "vocab.json": vocab,
             **tokenizer_files(tok, model.config.block_size)}
    for name, obj in files.items():
        with open(os.path.join(path, name), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=None if name == "vocab.json" else 2)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))


@torch.no_grad()
def check_round_trip(model, tok, path):
    """Load `path` with the project's own loader: same token ids for SAMPLE (special-token text
    stays plain text) and same logits on its rendered conversation. -> max |logit diff|."""
    model2, tok2, _ = load_policy(path)
    ids, _ = render(tok, *SAMPLE)
    ids2, _ = render(tok2, *SAMPLE)
    if ids != ids2:
        die(f"{path}: the exported tokenizer encodes differently ({ids[:8]}... vs {ids2[:8]}...)")
    x = torch.tensor([ids[: model.config.block_size]])
    diff = (model.eval()(x)[0] - model2.eval()(x)[0]).abs().max().item()
    if diff > 1e-5:
        die(f"{path}: logits differ by {diff:.2e} after the round trip")
    return diff


def export(model, tok, out, force=False, check=True):
    """Write the HF directory `out` through out.partial/ (see the module docstring)."""
    if os.path.isdir(out) and os.listdir(out) and not force:
        die(f"{out} exists and is not empty: pass --force to write into it (same-named files are replaced)")
    if os.path.exists(out) and not os.path.isdir(out):
        die(f"{out} exists and is not a directory")
    tmp = out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)  # a previous interrupted export
    write_dir(model, tok, tmp)
    diff = check_round_trip(model, tok, tmp) if check else None
    os.makedirs(out, exist_ok=True)
    for name in STALE:
        if os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    for name in sorted(os.listdir(tmp)):
        os.replace(os.path.join(tmp, name), os.path.join(out, name))
    os.rmdir(tmp)
    return diff


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    bare = [a for a in argv if not a.startswith("-")]  # `export.py CKPT DIR` as well as --checkpoint= --out=
    if len(bare) > 2:
        die(f"expected at most two arguments, CHECKPOINT and DIR, got {len(bare)}: {' '.join(bare)}", 2)
    cfg = parse_config(ExportConfig(), [f"--{k}={v}" for k, v in zip(("checkpoint", "out"), bare)]
                       + [a for a in argv if a.startswith("-")])
    if not cfg.checkpoint or not cfg.out:
        die("usage: python export.py CHECKPOINT DIR [--force] (see --help)", 2)
    if not os.path.exists(cfg.checkpoint):
        die(f"checkpoint '{cfg.checkpoint}' not found")
    model, tok, ckpt = load_policy(cfg.checkpoint, "cpu", dropout=0.0)
    diff = export(model.eval(), tok, cfg.out, cfg.force, cfg.check)
    n = sum(p.numel() for p in model.parameters())
    print(f"exported {cfg.checkpoint} ({ckpt.get('stage')}, {n / 1e6:.2f}M parameters, vocab {tok.vocab_size}) "
          f"-> {cfg.out}/" + ("" if diff is None else f" | reloaded by policy.load_policy: max |logit diff| {diff:.1e}"))
    print(f"use it: --init={cfg.out} here, or GPT2LMHeadModel.from_pretrained({cfg.out!r}) in transformers")


if __name__ == "__main__":
    main()
