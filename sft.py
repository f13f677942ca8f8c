"""
Step 1: supervised fine-tuning (SFT) on labeler demonstrations -- paper Section 3.5.

The base model continues text; SFT shows it (prompt -> desired response) pairs and trains
the loss on the response tokens only, so it learns to answer instead of to continue.

    python sft.py                                          # default world, out/base.pt -> out/sft.pt
    python sft.py --epochs=1 --max_demos=64 --n_eval=16    # a tiny run on CPU
    python sft.py --init=path/to/gpt2_dir --device=cuda    # a Hugging Face GPT-2 directory
    python sft.py --resume=True
    torchrun --nproc_per_node=2 sft.py --device=cpu        # data parallel: 2 processes (common.ddp_setup)

Each epoch reports the validation loss, the held-out PRETRAINING loss (SFT must not make
the model forget its corpus: that is the alignment tax before any RL), and a preference
signal -- the training labelers' mean rating of sampled answers to held-out demonstration
prompts -- and keeps the checkpoint the signal likes best. The paper saw validation loss overfit after one epoch while
preference kept improving; watch for it. The noise-free gold score is printed too, for
the reader only: it never decides anything.

Deviations from the paper:
1. 16 epochs -> a few; residual dropout 0.2 -> 0.1 (tiny models underfit sooner).
2. The paper selects by RM score; no RM exists yet at this point of our pipeline, so we
   ask the training labelers (the paper's people) to rate samples on its 1-7 scale
   (--select=val_loss: by the validation loss, the choice for data without the world's meta).
3. Embedding rows of tokens that never occur in a demonstration are frozen
   (--freeze_unseen): with tied embeddings and Adam they otherwise drift and the model
   forgets its pretraining text (see `unseen_token_mask`).
4. Pretraining text is mixed into every step (--ptx_coef, as PPO-ptx does in step 3):
   a ~1M-parameter model that learns "an answer is one line, then <|endoftext|>" applies it
   to all text, and its held-out corpus loss climbs even with the rows frozen, mostly on
   newlines (measured: docs/experiments.md, section 1). The paper's 1.3B+ models kept
   both behaviours apart.
"""

import math
import random
import time
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from common import (autocast, check_loss, ddp_cleanup, ddp_setup, die, encode_docs, get_batch, get_device, log_line,
                    lr_at, parse_config, precision_name, print_config, resume, save_checkpoint, seed_everything,
                    sync_gradients)
from data import DataError, has_meta, load_demonstrations, read_corpus
from data.labelers import judge, rate, train_labelers
from model import right_pad
from policy import heldout_loss, load_fitting, load_policy, sample_responses, show_samples
from tokenizer import render


PTX_SEED_OFFSET = 1000  # the pretraining windows' generator is seeded apart from the data order (seed + epoch)


@dataclass
class SFTConfig:
    init: str = "out/base.pt"  # base checkpoint from pretrain.py, or a Hugging Face GPT-2 directory
    data: str = "data/world/sft.jsonl"  # demonstrations {prompt, response, category, labeler, ...}
    out: str = "out/sft.pt"  # best checkpoint (by --select); out/sft.pt.last holds the latest for --resume
    epochs: int = 6  # more epochs keep raising preference after val loss overfits (paper; docs/experiments.md, 9)
    batch_size: int = 16  # demonstrations per optimizer step, over all ranks and micro-batches
    grad_accum: int = 1  # split each batch into N micro-batches: same step, 1/N of the activation memory
    grad_checkpoint: bool = False  # recompute each block's activations in backward (less memory, ~30% slower)
    lr: float = 1e-3  # peak; linear warmup then cosine decay to lr * min_lr_frac
    min_lr_frac: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    dropout: float = 0.1  # residual dropout during SFT (paper: 0.2)
    val_frac: float = 0.1  # demonstrations held out for validation loss and the preference signal
    max_demos: int = 0  # use only the first N demonstrations (0 = all)
    n_eval: int = 128  # held-out prompts sampled each epoch for the preference signal
    heldout: str = "data/world/corpus_heldout.txt"  # pretraining text whose LM loss is watched each epoch ("" = skip)
    ptx_data: str = "data/world/corpus_train.txt"  # pretraining text mixed into each step ("" = none)
    ptx_coef: float = 1.0  # weight of its LM loss (0 = plain SFT)
    ptx_batch_size: int = 4  # pretraining windows per step (per rank)
    ptx_ctx: int = 128  # tokens per window
    freeze_unseen: bool = True  # no updates to embedding rows of tokens absent from the demonstrations
    select: str = "preference"  # keep the best epoch by "preference" (the labelers' rating), "val_loss" or "last"
    max_new_tokens: int = 48
    temperature: float = 0.7  # sampling temperature for the per-epoch preference signal
    log_interval: int = 20
    seed: int = 1337
    device: str = "auto"
    compile: bool = False
    resume: bool = False


# -----------------------------------------------------------------------------


def sft_batch(tok, prompts, responses, device):
    """
    Render (prompt, response) pairs -> (x, y) right-padded (B, T). y is the next token
    where it is a response token (or the final EOT), else -1: the LM loss ignores prompts
    and padding (`ignore_index=-1`), so only the answer is learned.
    """
    xs, ys = [], []
    for p, r in zip(prompts, responses):
        ids, mask = render(tok, p, r)
        xs.append(ids[:-1])
        ys.append([t if m else -1 for t, m in zip(ids[1:], mask[1:])])  # target = next token if it is answer
    return right_pad(xs, tok.pad_id, device), right_pad(ys, -1, device)


@torch.no_grad()
def val_loss(model, tok, demos, batch_size, device):
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(demos), batch_size):
        chunk = demos[i : i + batch_size]
        x, y = sft_batch(tok, [d["prompt"] for d in chunk], [d["response"] for d in chunk], device)
        with autocast(device):
            _, loss = model(x, y)
        k = int((y != -1).sum())
        tot, n = tot + loss.item() * k, n + k
    model.train()
    return tot / max(1, n)


def unseen_token_mask(tok, demos, vocab_size):
    """
    (V,) bool, True for tokens that occur in no demonstration (prompt or response).

    Why freeze their embedding rows: the unembedding is tied to the embedding, so every
    softmax sends every token's row a tiny "be less likely" gradient. Adam divides each
    step by the root of that row's own (tiny) second moment, so the tiny gradient still
    moves the row a full learning-rate step, every step. Rows of tokens the demonstrations
    never use (newlines, forum words, the second language) are pushed down until the model
    can no longer write its pretraining text: held-out loss 0.8 -> 5.2 without the freeze,
    the newline token's alone 0.25 -> 14. Zeroing their gradient keeps Adam's moments at
    zero, so those rows do not move at all; everything else trains as before.
    """
    unseen = torch.ones(vocab_size, dtype=torch.bool)
    for d in demos:
        unseen[render(tok, d["prompt"], d["response"])[0]] = False
    return unseen


def freeze_unseen_rows(model, unseen):
    """Zero the gradient of the embedding rows where `unseen` (V,) is True, in every backward."""
    model.transformer.wte.weight.register_hook(lambda g: g.masked_fill(unseen[:, None], 0.0))
    print(f"freezing the embedding rows of {int(unseen.sum())} / {len(unseen)} tokens absent from the demonstrations")


def labeler_rating(recs, texts, seed):
    """The training labelers' mean rating (their 1-7 scale plus personal taste and noise) of
    each text: every training labeler rates every sample once. The paper's people did this
    with Likert scores; our simulated ones are the only judges training may consult."""
    rng = random.Random(seed)
    labs = train_labelers()
    return sum(rate(r, t, lab, rng) for r, t in zip(recs, texts) for lab in labs) / (len(recs) * len(labs))


def load_data(cfg, tok, block_size):
    """The demonstrations, shuffled by --seed and split -> (all, train, val, the val prompts of
    the preference signal), and the pretraining text -> (held-out stream, ptx stream), each
    None when not used. May switch --select to val_loss (no world metadata)."""
    demos = load_fitting(load_demonstrations, cfg.data, tok, block_size)
    if cfg.max_demos:
        demos = demos[: cfg.max_demos]
    random.Random(cfg.seed).shuffle(demos)
    n_val = max(1, int(len(demos) * cfg.val_frac))
    val, train = demos[:n_val], demos[n_val:]
    eval_recs = val[: cfg.n_eval]
    if not train:
        die(f"{cfg.data}: too few demonstrations ({len(demos)}) to keep {n_val} for validation")
    if not has_meta(eval_recs) and cfg.select == "preference":
        print(f"note: {cfg.data} has no 'meta' (the world's fields the simulated labelers read): "
              "--select=val_loss")
        cfg.select = "val_loss"
    try:
        held = encode_docs(tok, read_corpus(cfg.heldout)) if cfg.heldout else None
        ptx = encode_docs(tok, read_corpus(cfg.ptx_data)) if cfg.ptx_data and cfg.ptx_coef > 0 else None
    except DataError as e:
        die(f"{e} (--heldout / --ptx_data: pretraining text; pass --heldout= --ptx_data= to go without)")
    print(f"data: {len(train)} train / {len(val)} val demonstrations; preference signal on {len(eval_recs)} "
          "held-out prompts (training labelers' rating)" +
          (f"; {len(ptx):,} pretraining tokens mixed in (ptx_coef {cfg.ptx_coef})" if ptx is not None else ""))
    return (demos, train, val, eval_recs), (held, ptx)


def measure(model, tok, eval_recs, val, held, cfg, epoch, device):
    """Every epoch: validation loss, held-out corpus loss, and on sampled answers to held-out
    prompts the labelers' rating and the gold score (measurement only:
    printed, never used to select) -> (the history row, the sampled answers)."""
    texts, _ = sample_responses(model, tok, [r["prompt"] for r in eval_recs], cfg.max_new_tokens, cfg.temperature,
                                seed=cfg.seed)
    h = dict(epoch=epoch, val_loss=val_loss(model, tok, val, cfg.batch_size, device), labelers=math.nan,
             gold=math.nan)
    if has_meta(eval_recs):  # the world's prompts: the simulated labelers and the judge can read them
        h["labelers"] = labeler_rating(eval_recs, texts, cfg.seed)
        h["gold"] = sum(judge(r, t)["score"] for r, t in zip(eval_recs, texts)) / len(eval_recs)
    if held is not None:
        h["corpus_loss"] = heldout_loss(model, held, min(128, model.config.block_size), 16, 8, device)
    return h, texts


def train_step(model, fwd, opt, tok, demos, ptx, cfg, step, device):
    """
    One optimizer step on this rank's demonstrations: the loss on the answer tokens, in
    --grad_accum micro-batches (each loss / grad_accum: gradients add up over the loop), plus
    --ptx_coef x the LM loss on pretraining windows (ptx: (token stream, generator), or None)
    in the same step. `fwd` is the module the training forward goes through (compiled or not).
    -> the last micro-batch's SFT loss.
    """
    opt.zero_grad(set_to_none=True)
    for micro in range(cfg.grad_accum):
        part = demos[micro :: cfg.grad_accum]
        if not part:  # an epoch's last batch may not fill every micro-batch
            continue
        x, y = sft_batch(tok, [d["prompt"] for d in part], [d["response"] for d in part], device)
        with autocast(device):
            _, sft_loss = fwd(x, y)
            loss = sft_loss / cfg.grad_accum
            if ptx is not None and micro == 0:  # the pretraining LM loss joins the same step, once
                stream, gen = ptx
                px, py = get_batch(stream, cfg.ptx_batch_size, min(cfg.ptx_ctx, model.config.block_size), gen)
                _, ptx_loss = fwd(px.to(device), py.to(device))
                loss = loss + cfg.ptx_coef * ptx_loss
        check_loss(loss, "sft", step + 1, cfg.lr, f"{cfg.out}.last")
        loss.backward()
    sync_gradients(model.parameters())  # under torchrun: the mean over the ranks (one process: nothing)
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return sft_loss


def print_table(history):
    """The epochs' measurements, and the paper's observation if it appears: validation loss
    rises while the preference signal still improves."""
    cols = ["val_loss", "corpus_loss", "labelers", "gold"]
    print("epoch | " + " | ".join(cols) + "   (gold: measurement only)")
    for h in history:
        print(f"{h['epoch']:5d} | " + " | ".join(f"{h.get(c) if h.get(c) is None else round(h[c], 4)!s:>{len(c)}}"
                                                   for c in cols))
    if len(history) > 1:
        best_loss = min(history[1:], key=lambda h: h["val_loss"])
        best_pref = max(history[1:], key=lambda h: h["labelers"])
        if best_pref["epoch"] > best_loss["epoch"]:
            print(f"as in the paper: validation loss was lowest at epoch {best_loss['epoch']}, "
                  f"but the preference signal kept improving until epoch {best_pref['epoch']}")


def main():
    cfg = parse_config(SFTConfig())
    if cfg.select not in ("preference", "val_loss", "last"):
        die(f"--select must be preference, val_loss or last; got {cfg.select!r}", 2)
    device, rank, world = ddp_setup(get_device(cfg.device))  # one process: (device, 0, 1)
    if cfg.batch_size < world * cfg.grad_accum:
        die(f"--batch_size={cfg.batch_size} is smaller than ranks x --grad_accum ({world} x {cfg.grad_accum})", 2)
    print_config(cfg)
    print(f"device {device} | precision {precision_name(device)} | ranks {world}")
    seed_everything(cfg.seed + rank)  # each rank its own dropout masks; the data order below uses cfg.seed alone

    # 1a. the policy starts from the base model, with dropout switched on for fine-tuning
    model, tok, _ = load_policy(cfg.init, device, dropout=cfg.dropout)
    model.grad_checkpoint = cfg.grad_checkpoint
    (demos, train, val, eval_recs), (held, ptx) = load_data(cfg, tok, model.config.block_size)
    opt = model.configure_optimizer(cfg.lr, cfg.weight_decay, device=device)
    if cfg.freeze_unseen:
        freeze_unseen_rows(model, unseen_token_mask(tok, demos, model.config.vocab_size).to(device))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    epoch, step, best, best_epoch, history = 0, 0, -float("inf"), 0, []
    last_path = cfg.out + ".last"  # the latest epoch, for --resume (cfg.out holds the best one)
    ck = resume(last_path, "sft", device, model, opt) if cfg.resume else None
    if ck:
        epoch, step, best, best_epoch, history = ck["epoch"], ck["step"], ck["best"], ck["best_epoch"], ck["history"]
    fwd = torch.compile(model) if cfg.compile else model  # the training forward goes through this

    def ckpt_dict(**extra):
        return dict(stage="sft", model=model.state_dict(), model_config={**asdict(model.config), "dropout": 0.0},
                    config=asdict(cfg), tokenizer=tok.to_dict(), init=cfg.init, epoch=epoch, step=step,
                    history=history, **extra)

    # 1b. epochs over the demonstrations, loss on response tokens only
    if epoch == 0 and rank == 0:
        history.append(measure(model, tok, eval_recs, val, held, cfg, epoch, device)[0])
        print(log_line(0, cfg.epochs, **{k: v for k, v in history[-1].items() if k != "epoch" and v is not None}))
    t0 = time.time()
    while epoch < cfg.epochs:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed + epoch)).tolist()
        ptx_seed = cfg.seed + PTX_SEED_OFFSET * (rank + 1) + epoch  # each rank, each epoch its own windows
        ptx_draw = (ptx, torch.Generator().manual_seed(ptx_seed)) if ptx is not None else None
        model.train()
        bar = tqdm(range(steps_per_epoch), desc=f"sft epoch {epoch + 1}/{cfg.epochs}", dynamic_ncols=True,
                   disable=rank > 0 or None)
        for b in bar:
            batch = [train[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]]
            if len(batch) < world * cfg.grad_accum:  # an epoch's last scrap, too small to share: all ranks skip it
                continue
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, cfg.lr, cfg.warmup_steps, floor=cfg.lr * cfg.min_lr_frac)
            sft_loss = train_step(model, fwd, opt, tok, batch[rank::world], ptx_draw, cfg, step, device)  # my share
            step += 1
            if step % cfg.log_interval == 0:
                bar.set_postfix(loss=f"{sft_loss.item():.3f}")
        epoch += 1
        if rank > 0:  # rank 0 alone measures, selects and writes checkpoints
            continue

        # 1c. each epoch: validation loss, corpus loss and the preference signal; keep the best by --select
        h, texts = measure(model, tok, eval_recs, val, held, cfg, epoch, device)
        history.append(h)
        bar.write(log_line(epoch, cfg.epochs, train_loss=sft_loss.item(),
                           **{k: v for k, v in h.items() if k != "epoch" and v is not None},
                           elapsed_s=int(time.time() - t0)))
        show_samples(eval_recs, texts)
        signal = {"preference": h["labelers"], "val_loss": -h["val_loss"], "last": epoch}[cfg.select]
        if signal > best:
            best, best_epoch = signal, epoch
            save_checkpoint(ckpt_dict(selected_by=cfg.select, signal=signal), cfg.out)
            print(f"  saved {cfg.out} (best {cfg.select} so far)")
        save_checkpoint(ckpt_dict(optimizer=opt.state_dict(), best=best, best_epoch=best_epoch),
                        last_path)

    # 1d. the table, and the paper's observation if it appears
    if rank == 0:
        print_table(history)
        print(f"done in {time.time() - t0:.0f}s; {cfg.out} holds epoch {best_epoch} (selected by {cfg.select})")
    ddp_cleanup()


if __name__ == "__main__":
    main()
