"""
What every stage does with a policy or a reward model: load one from a checkpoint (or a
Hugging Face GPT-2 directory), render (prompt, response) text into a padded batch, score
it with a reward model at the last token, sample text from a policy, and measure it as a
language model (held-out loss, fact-completion probes).

    model, tok, ckpt = load_policy("out/sft.pt", device, dropout=0.0)
    texts, ended = sample_responses(model, tok, ["Where does Mepol live?"], temperature=0.7)
    rm, ckpt = load_reward_model("out/rm.pt", device)
    scores = score_texts(rm, tok, prompts, texts, device)  # (N,): ScalarModel.score, 64 at a time
    logps, n_tokens = logprob_texts(model, tok, prompts, texts, device)  # (N,) log pi(answer | prompt)
    loss = heldout_loss(model, stream, ctx=128, batch_size=16, n_batches=10, device="cpu")  # LM loss
    acc, rows = probe_accuracy(model, tok, data.load_probes("data/world/probes.jsonl"), device)  # facts it knows
"""
import os

import torch

from common import autocast, die, load_checkpoint, sampling_generator
from data import DataError
from data.labelers import judge
from model import GPT, generate, left_pad, model_from_checkpoint, response_logprobs, right_pad
from tokenizer import Tokenizer, decode_response, render


def load_policy(path, device="cpu", dropout=None):
    """
    A pretrain/SFT/PPO checkpoint (or a Hugging Face GPT-2 directory) -> (GPT, Tokenizer, ckpt).
    `dropout` overrides the stored dropout (SFT trains with it, PPO must run without).
    """
    if os.path.isdir(path):
        try:  # the directory's own tokenizer files: no network
            tok = Tokenizer.from_hf_dir(path)
            model = GPT.from_hf_dir(path, vocab_size=tok.vocab_size, dropout=dropout or 0.0)
        except (OSError, ValueError, KeyError) as e:
            die(e.args[0] if len(e.args) == 1 else str(e))
        return model.to(device), tok, {"stage": "hf", "tokenizer": tok.to_dict()}
    ckpt = load_checkpoint(path)
    if "tokenizer" not in ckpt or "model_config" not in ckpt:
        die(f"{path}: not a policy checkpoint of this project (no tokenizer/model_config)")
    if dropout is not None:
        ckpt["model_config"] = {**ckpt["model_config"], "dropout": dropout}
    model = model_from_checkpoint(ckpt)
    if not isinstance(model, GPT):
        die(f"{path}: is a reward/value model checkpoint, expected a policy")
    return model.to(device), Tokenizer.from_dict(ckpt["tokenizer"]), ckpt


def load_reward_model(path, device="cpu"):
    """reward.py checkpoint -> (ScalarModel with the demonstration-mean bias already in its
    head, ckpt). Scores: `rm.score(ids, attn, response_mask)` (model.ScalarModel.score)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("stage") != "reward":
        die(f"{path}: expected a reward-model checkpoint (stage 'reward'), got {ckpt.get('stage')!r}")
    model = model_from_checkpoint(ckpt)
    return model.to(device).eval(), ckpt


def load_fitting(loader, path, tok, block_size):
    """loader(path) -- data.load_demonstrations or data.load_comparisons -- keeping the records
    whose rendered prompt + answer fit in block_size tokens (room left for <|user|>,
    <|assistant|> and the final EOT). A malformed file stops the stage with the loader's
    one-line message (file, line, key)."""
    try:
        return loader(path, max_tokens=block_size - 3, count_tokens=lambda s: len(tok.encode(s)))
    except DataError as e:
        die(str(e))


def show_samples(recs, texts, notes=(), k=2, write=print):
    """Print the first k (prompt record, response) pairs, the way every stage shows a few
    samples: `[category] 'prompt...'` then `-> 'response' (note, gold 5.50)`. The gold
    score (the world's prompts only) is for the reader: no stage decides anything by it."""
    for i, (r, t) in enumerate(list(zip(recs, texts))[:k]):
        extra = [notes[i]] if i < len(notes) else []
        if "meta" in r:
            extra.append(f"gold {judge(r, t)['score']:.2f}")
        write(f"  [{r.get('category', '-')}] {r['prompt'][:80]!r}\n    -> {t!r}"
              + (f" ({', '.join(extra)})" if extra else ""))


def rm_batch(tok, prompts, responses, device):
    """Render full (prompt, response) sequences for a scalar model -> (ids, attn_mask,
    response_mask), each (B, T), right-padded; response_mask is render's loss mask."""
    seqs = [render(tok, p, r) for p, r in zip(prompts, responses)]
    ids = right_pad([s for s, _ in seqs], tok.pad_id, device)
    attn = right_pad([[1] * len(s) for s, _ in seqs], 0, device)
    response_mask = right_pad([m for _, m in seqs], 0, device)
    return ids, attn, response_mask


def pair_batch(tok, prompts, responses, device):
    """
    Render (prompt, response) pairs in a PPO rollout's layout -> (tokens (B, P + R), attn_mask
    (B, P + R), P, response_mask (B, R)): each prompt (through <|assistant|>) left-padded to
    P, its answer and closing EOT right-padded to R after it. model.response_logprobs then
    reads every answer token's log-prob from the last R + 1 positions' logits alone (DPO, and
    evaluate.py's KL): the LM head never runs on the prompts.
    """
    seqs = [render(tok, p, r) for p, r in zip(prompts, responses)]
    cut = [m.index(1) for _, m in seqs]  # render's loss mask is 1 from the answer's first token on
    prompt, prompt_attn = left_pad([s[:k] for (s, _), k in zip(seqs, cut)], tok.pad_id, device)  # (B, P)
    answers = [s[k:] for (s, _), k in zip(seqs, cut)]
    response = right_pad(answers, tok.pad_id, device)  # (B, R)
    response_mask = right_pad([[1] * len(a) for a in answers], 0, device)  # (B, R)
    return torch.cat([prompt, response], 1), torch.cat([prompt_attn, response_mask], 1), prompt.size(1), response_mask


@torch.no_grad()
def score_texts(rm, tok, prompts, responses, device, batch_size=64):
    """The reward model's score of each (prompt, response) pair -> (N,) float, in batches."""
    out = []
    for i in range(0, len(prompts), batch_size):
        with autocast(device):
            batch = rm_batch(tok, prompts[i : i + batch_size], responses[i : i + batch_size], device)
            out.append(rm.score(*batch).float())
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def logprob_texts(model, tok, prompts, responses, device, temperature=1.0, batch_size=64):
    """log pi(response | prompt) of each pair under a policy -> ((N,) sums over the answer's
    tokens and its closing EOT, (N,) how many tokens that is), in batches (`pair_batch`).
    Text is re-encoded: an answer sampled as other token ids gets its canonical encoding."""
    logps, n_tokens = [], []
    for i in range(0, len(prompts), batch_size):
        tokens, attn, P, mask = pair_batch(tok, prompts[i : i + batch_size], responses[i : i + batch_size], device)
        with autocast(device):
            lp = response_logprobs(model, tokens, attn, P, temperature).float()  # (B, R)
        logps.append((lp * mask).sum(1))  # (B,): padding after the EOT counts 0
        n_tokens.append(mask.sum(1))
    return (torch.cat(logps), torch.cat(n_tokens)) if logps else (torch.zeros(0), torch.zeros(0))


@torch.no_grad()
def sample_responses(model, tok, prompts, max_new_tokens=48, temperature=0.7, batch_size=64, seed=0):
    """Sample one response per prompt string -> (texts, ended flags)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    g = sampling_generator(device, seed)
    texts, ended = [], []
    for i in range(0, len(prompts), batch_size):
        batch = [render(tok, p)[0] for p in prompts[i : i + batch_size]]
        with autocast(device.type):
            out = generate(model, batch, max_new_tokens, tok.eot_id, tok.pad_id, temperature=temperature,
                           generator=g)
        for r, m, e in zip(out["response"].tolist(), out["response_mask"].tolist(), out["ended"].tolist()):
            texts.append(decode_response(tok, r, m))
            ended.append(e)
    model.train(was_training)
    return texts, ended


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
