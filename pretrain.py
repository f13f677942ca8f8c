"""
Step 0: pretrain the base model -- our stand-in for GPT-3.

A GPT learns to continue web-like text: it will know the world's facts, and it will NOT
follow instructions (ask it a question and it writes the rest of a forum thread).

    python pretrain.py                                   # default world, size "small" (~1M params); trains
                                                         # the tokenizer too -> out/tokenizer.tiktoken
    python pretrain.py --size=large --out=out/base_large.pt --tokenizer=out/tokenizer.tiktoken   # reuse it
    python pretrain.py --data=my.txt --heldout= --probes= --out=out/my_base.pt   # your own text
    python pretrain.py --resume=True                     # continue an interrupted run

Text format: documents separated by an empty line; each document ends with <|endoftext|>
and documents are packed into one token stream that we cut random windows from.

Deviations from the paper (GPT-3 is 175B parameters trained on 300B tokens):
1. Models of 0.1-2M parameters trained for a few minutes on a few MB of synthetic text.
2. Our own byte-level BPE (1024 ranks) trained on the corpus, instead of GPT-2's 50k.
"""

import os
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from common import (autocast, check_loss, die, encode_docs, get_batch, get_device, log_line, lr_at, parse_config,
                    precision_name, print_config, resume, sampling_generator, save_checkpoint, seed_everything)
from data import DataError, load_probes, read_corpus
from model import GPT, GPTConfig, generate
from policy import heldout_loss, probe_accuracy
from tokenizer import Tokenizer, decode_response, load_ranks, save_ranks, train_bpe

# model sizes (layers, heads, width): "large" is our "175B", "small" our "1.3B"
SIZES = {
    "tiny": (2, 2, 64),  # ~0.15M params: tests and --quick
    "small": (4, 4, 128),  # ~1M
    "large": (5, 5, 160),  # ~1.7M: as many steps as "small" fit the CPU budget, so it is the better LM
}


@dataclass
class PretrainConfig:
    data: str = "data/world/corpus_train.txt"  # training text, documents separated by an empty line
    heldout: str = "data/world/corpus_heldout.txt"  # held-out text ("" = the last 5% of --data's documents)
    probes: str = "data/world/probes.jsonl"  # fact-completion probes {"prefix", "answer"} ("" = none)
    tokenizer: str = ""  # tiktoken ranks file to use; "" = train one on --data, saved next to --out
    vocab_size: int = 1024  # BPE ranks to train when --tokenizer is ""
    out: str = "out/base.pt"  # checkpoint path
    size: str = "small"  # one of SIZES
    block_size: int = 256  # context length of the model (positions)
    train_ctx: int = 128  # length of the training windows (<= block_size)
    dropout: float = 0.0
    batch_size: int = 16
    max_iters: int = 900
    lr: float = 3e-3  # peak learning rate
    min_lr: float = 3e-4  # cosine decays to this
    warmup_iters: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 200  # validate, print samples and checkpoint every N steps
    eval_batches: int = 20
    log_interval: int = 50
    seed: int = 1337
    device: str = "auto"  # auto = cuda > mps > cpu
    compile: bool = False  # torch.compile the model (CUDA)
    resume: bool = False  # continue from --out if it exists


def get_tokenizer(cfg, docs):
    if cfg.tokenizer:
        if not os.path.isfile(cfg.tokenizer):
            die(f"--tokenizer: file '{cfg.tokenizer}' not found")
        return Tokenizer(load_ranks(cfg.tokenizer)), cfg.tokenizer
    t0 = time.time()
    try:
        ranks = train_bpe("\n\n".join(docs), cfg.vocab_size)
    except ValueError as e:  # fewer than 257 ranks, or too little text for so many merges
        die(f"--vocab_size={cfg.vocab_size}: {e}", 2)
    path = os.path.join(os.path.dirname(cfg.out) or ".", "tokenizer.tiktoken")
    save_ranks(ranks, path)
    print(f"trained a {len(ranks)}-rank BPE tokenizer in {time.time() - t0:.1f}s -> {path}")
    return Tokenizer(ranks), path


def load_data(cfg):
    """Read and tokenise the text -> (tokenizer, training stream, held-out stream, probes)."""
    try:
        docs = read_corpus(cfg.data)
        held_docs = read_corpus(cfg.heldout) if cfg.heldout else None
        probes = load_probes(cfg.probes) if cfg.probes else []
    except DataError as e:
        die(str(e))
    if held_docs is None:  # own text without a held-out file: keep the last 5% aside
        cut = max(1, len(docs) // 20)
        docs, held_docs = docs[:-cut], docs[-cut:]
    tok, _ = get_tokenizer(cfg, docs)
    stream, held = encode_docs(tok, docs), encode_docs(tok, held_docs)
    if len(stream) <= cfg.train_ctx + 1 or len(held) <= cfg.train_ctx + 1:
        die(f"{cfg.data}: too little text ({len(stream)} train / {len(held)} held-out tokens) "
            f"for windows of {cfg.train_ctx} tokens")
    print(f"data: {len(docs)} docs, {len(stream):,} train tokens, {len(held):,} held-out tokens, "
          f"vocab {tok.vocab_size}")
    return tok, stream, held, probes


def show_what_it_learned(model, tok, probes, device):
    """The fact-completion probes, and three samples from <|endoftext|> (temperature 0.8)."""
    if probes:
        acc, rows = probe_accuracy(model, tok, probes, device)
        print(f"fact-completion accuracy: {acc * 100:.1f}% of {len(probes)} probes")
        for prefix, answer, got in rows[:3]:
            print(f"  {prefix!r} -> {got.strip()!r} (answer {answer!r})")
    print("samples (temperature 0.8):")
    model.eval()
    g = sampling_generator(device, 0)
    with autocast(device):
        out = generate(model, [[tok.eot_id]] * 3, 60, tok.eot_id, tok.pad_id, temperature=0.8, generator=g)
    for r in out["response"].tolist():
        print("  ---", decode_response(tok, r).replace("\n", " / "))


def main():
    cfg = parse_config(PretrainConfig())
    if cfg.size not in SIZES:
        die(f"--size must be one of {list(SIZES)}, got {cfg.size!r}", 2)
    if cfg.train_ctx > cfg.block_size:
        die(f"--train_ctx ({cfg.train_ctx}) must be <= --block_size ({cfg.block_size})", 2)
    print_config(cfg)
    device = get_device(cfg.device)
    print(f"device {device} | precision {precision_name(device)}")
    seed_everything(cfg.seed)

    # data -------------------------------------------------------------------------------
    tok, stream, held, probes = load_data(cfg)

    # model + optimizer ------------------------------------------------------------------
    n_layer, n_head, n_embd = SIZES[cfg.size]
    mcfg = GPTConfig(block_size=cfg.block_size, vocab_size=tok.vocab_size, n_layer=n_layer, n_head=n_head,
                     n_embd=n_embd, dropout=cfg.dropout)
    model = GPT(mcfg).to(device)
    opt = model.configure_optimizer(cfg.lr, cfg.weight_decay, device=device)
    gen = torch.Generator().manual_seed(cfg.seed)  # draws the training windows; saved, so a resumed run goes on
    step = 0
    ckpt = resume(cfg.out, "pretrain", device, model, opt) if cfg.resume else None
    if ckpt:
        gen.set_state(ckpt["data_rng"])
        step = ckpt["step"]
    print(f"model: {model.num_params() / 1e6:.2f}M parameters ({cfg.size}: {n_layer} layers, {n_head} heads, "
          f"width {n_embd})")
    fwd = torch.compile(model) if cfg.compile else model

    def checkpoint(step, val):
        save_checkpoint(dict(stage="pretrain", model=model.state_dict(), model_config=asdict(mcfg),
                             config=asdict(cfg), optimizer=opt.state_dict(), step=step, data_rng=gen.get_state(),
                             tokenizer=tok.to_dict(), val_loss=val), cfg.out)

    # training loop ----------------------------------------------------------------------
    t0, val, start_step = time.time(), float("nan"), step
    model.train()
    bar = tqdm(range(step, cfg.max_iters), initial=step, total=cfg.max_iters, desc="pretrain", dynamic_ncols=True)
    for it in bar:
        lr = lr_at(it, cfg.max_iters, cfg.lr, cfg.warmup_iters, floor=cfg.min_lr)  # warmup, then cosine to min_lr
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(stream, cfg.batch_size, cfg.train_ctx, gen)
        with autocast(device):
            _, loss = fwd(x.to(device), y.to(device))
        check_loss(loss, "pretrain", it + 1, cfg.lr, cfg.out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step = it + 1
        if step % cfg.log_interval == 0 or step == cfg.max_iters:
            tps = (step - start_step) * cfg.batch_size * cfg.train_ctx / (time.time() - t0)
            bar.write(log_line(step, cfg.max_iters, loss=loss.item(), lr=lr, grad_norm=norm.item(),
                               tok_per_s=int(tps)))
        if step % cfg.eval_interval == 0 or step == cfg.max_iters:
            val = heldout_loss(model, held, cfg.train_ctx, cfg.batch_size, cfg.eval_batches, device)
            bar.write(log_line(step, cfg.max_iters, val_loss=val))
            checkpoint(step, val)
    bar.close()

    # report -----------------------------------------------------------------------------
    print(f"done: {step} steps in {time.time() - t0:.0f}s | held-out loss {val:.4f} | saved {cfg.out}")
    show_what_it_learned(model, tok, probes, device)


if __name__ == "__main__":
    main()
