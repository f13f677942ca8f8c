"""
The language-model side shared by pretraining, PPO-ptx and evaluation: a corpus as one
token stream, random training windows, the held-out loss, and fact-completion probes.

    stream = encode_docs(tok, read_corpus("data/world/corpus_heldout.txt"))
    x, y = get_batch(stream, batch_size=8, ctx=128, generator=torch.Generator())
    loss = heldout_loss(model, stream, ctx=128, batch_size=16, n_batches=10, device="cpu")
"""
import json
import os

import torch

from common import autocast, die
from model import generate
from tokenizer import decode_response


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


@torch.no_grad()
def heldout_loss(model, stream, ctx, batch_size, n_batches, device):
    """Mean next-token loss on fixed, evenly spaced windows of a held-out stream."""
    model.eval()
    starts = torch.linspace(0, len(stream) - ctx - 2, n_batches * batch_size).long()
    losses = []
    for b in range(n_batches):
        ix = starts[b * batch_size : (b + 1) * batch_size]
        x = torch.stack([stream[i : i + ctx] for i in ix]).to(device)
        y = torch.stack([stream[i + 1 : i + ctx + 1] for i in ix]).to(device)
        with autocast(device):
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train()
    return sum(losses) / len(losses)


def load_probes(path):
    probes = []
    if not os.path.isfile(path):
        die(f"probes file '{path}' not found")
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                assert isinstance(rec["prefix"], str) and isinstance(rec["answer"], str) and rec["answer"].strip()
            except (json.JSONDecodeError, KeyError, AssertionError, TypeError):
                die(f"{path}:{lineno}: expected {{\"prefix\": str, \"answer\": non-empty str}}")
            probes.append(rec)
    return probes


@torch.no_grad()
def probe_accuracy(model, tok, probes, device, batch_size=64):
    """
    Fact completion: greedy-continue "<|endoftext|>" + prefix and check that the text
    starts with the answer (whitespace-normalised). Our "public NLP benchmark" for the
    alignment tax. Returns (accuracy, list of (prefix, answer, completion)).
    """
    model.eval()
    hits, rows = 0, []
    for i in range(0, len(probes), batch_size):
        chunk = probes[i : i + batch_size]
        prompts = [[tok.eot_id] + tok.encode(p["prefix"]) for p in chunk]
        n_new = max(len(tok.encode(" " + p["answer"])) for p in chunk) + 1
        with autocast(device):
            out = generate(model, prompts, n_new, tok.eot_id, tok.pad_id, temperature=0)
        for p, r in zip(chunk, out["response"].tolist()):
            text = decode_response(tok, r)
            ok = " ".join(text.split()).startswith(" ".join(p["answer"].split()))
            hits += ok
            rows.append((p["prefix"], p["answer"], text))
    model.train()
    return hits / max(1, len(probes)), rows
