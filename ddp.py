"""
Data parallelism for SFT, the reward model and PPO: the same scripts under torchrun.

    torchrun --nproc_per_node=4 sft.py --init=gpt2_dir --data=demos.jsonl    # 4 GPUs, NCCL
    torchrun --nproc_per_node=2 reward.py --device=cpu                       # 2 CPU processes, gloo

torchrun starts N copies of the script and tells each its RANK, LOCAL_RANK and WORLD_SIZE
through the environment. Every copy (a "rank"):
  1. holds a whole replica of the model, on cuda:LOCAL_RANK (or the CPU);
  2. reads the data in the same seeded order as the others and keeps its share of every
     batch (`shard`), so the N shards together are exactly the one-process batch;
  3. runs forward and backward on its shard; PyTorch's DistributedDataParallel (`wrap`)
     averages the gradients over the ranks during backward;
  4. takes the same optimizer step from the same averaged gradient, so the replicas stay
     identical without ever exchanging weights.
Rank 0 alone writes checkpoints and logs (`is_main`). A per-rank seed (`seed + rank`)
gives each rank its own dropout masks; `own_generator` and `data_generator` give each rank
its own pretraining windows (SFT's and PPO-ptx's).

The stages meet this file at a few named points, each of which does nothing in one process:
  setup / cleanup / is_main        join and leave; only rank 0 prints and saves
  shard(batch) -> accumulate(...)  this rank's share of a batch, then its micro-batches, each
                                   with the weight that makes the loss the batch mean
  split(batch, n), check_batch     shard + micro-batches in one call (SFT, RM, DPO), and the
                                   check that every rank gets a share
  per_rank(n), own_generator(seed) draws each rank makes for itself (SFT's pretraining windows)
  wrap(model)                      DistributedDataParallel (the model itself in one process)
  all_sum / all_mean               sums and logged means over every rank
  sampling(...), reseed(...)       PPO's rollouts and resumed runs: the same random numbers
                                   as one process would draw

The one subtle part is the mean. A loss is a mean over tokens (or pairs), and DDP
averages the ranks' gradients; the mean of per-rank means is the batch mean only when
every rank holds as many tokens. `share(n)` is the factor that makes it exact:
    rank loss x share = (sum of the rank's token losses) / (tokens on all ranks) x N
so DDP's average over N ranks is the one-process loss, whatever the shards hold. The same
factor makes gradient accumulation exact (micro-batches are shards in time).

Without torchrun WORLD_SIZE is unset: world() is 1, share() is 1.0, wrap() returns the
model itself, and nothing here does anything.
"""

import os
import sys
from contextlib import ExitStack, nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist

from common import die, seed_everything


def world():
    return dist.get_world_size() if dist.is_initialized() else 1


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def is_main():
    return rank() == 0


def setup(device):
    """Join the process group when started by torchrun -> the device this rank uses.
    NCCL on CUDA (one GPU per rank: cuda:LOCAL_RANK), gloo on the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        # an hour: the other ranks wait in a collective while rank 0 alone evaluates and saves
        dist.init_process_group("nccl", timeout=timedelta(hours=1))
        device = f"cuda:{local}"
    else:
        dist.init_process_group("gloo", timeout=timedelta(hours=1))
    if dist.get_rank() != 0:  # one copy of the logs: the other ranks print nothing (errors still do)
        sys.stdout = open(os.devnull, "w")
    return device


def no_bar():
    """tqdm's `disable`: progress bars on rank 0 only (and not when TQDM_DISABLE is set)."""
    return not is_main() or os.environ.get("TQDM_DISABLE", "") not in ("", "0", "false", "False")


def cleanup():
    """Leave the group together: a rank that left while rank 0 still wrote its checkpoint
    once took gloo down with it ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_sum(x):
    """The sum of a number or tensor over all ranks (x itself without torchrun)."""
    if world() == 1:
        return x
    t = torch.as_tensor(x, dtype=torch.float64 if not torch.is_tensor(x) else x.dtype)
    t = t.clone().to("cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.item() if not torch.is_tensor(x) else t.to(x.device)


def all_mean(values):
    """{name: float} -> the same names, averaged over ranks (for logging)."""
    if world() == 1:
        return values
    keys = sorted(values)
    s = all_sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64))
    return {**values, **{k: (s[i] / world()).item() for i, k in enumerate(keys)}}


def shard_range(n):
    """(start, stop): this rank's contiguous block of a batch of n items (sizes differ by at most 1)."""
    return rank() * n // world(), (rank() + 1) * n // world()


def shard(items):
    """This rank's share of a batch (a list): its contiguous block."""
    start, stop = shard_range(len(items))
    return items[start:stop]


def micro_batches(items, n):
    """items (a list, or a tensor of indices) in n interleaved micro-batches for gradient
    accumulation; a short batch may leave some empty, and those are dropped."""
    return [m for m in (items[j::n] for j in range(n)) if len(m)]


def split(batch, n):
    """The micro-batches this process trains on: its shard of `batch` (a list; all of it in one
    process) in n interleaved parts, or [] when the batch is too small to give every rank n
    items (an epoch's last scrap, skipped by every rank alike)."""
    return micro_batches(shard(batch), n) if len(batch) >= world() * n else []


def check_batch(batch_size, grad_accum):
    """Stop with an error (exit 2) when batches of `batch_size` cannot give every rank
    `grad_accum` micro-batches: every step would be skipped."""
    if world() * grad_accum > batch_size:
        die(f"--batch_size={batch_size} is smaller than ranks x --grad_accum ({world()} x {grad_accum})", 2)


def per_rank(n):
    """How many of n independently drawn items (pretraining windows) this rank draws: n / ranks,
    at least 1. One process: n."""
    return max(1, n // world())


def own_generator(seed):
    """A CPU generator for this rank's own draws (pretraining windows): seeded with
    seed + 7919 x rank, so each rank draws different ones. One process: seeded with `seed`."""
    return torch.Generator().manual_seed(seed + 7919 * rank())


def share(n_local):
    """world x (this rank's count) / (count on all ranks): multiply a rank's mean loss by it
    so that DDP's average of the ranks' gradients is the gradient of the batch mean."""
    n_all = all_sum(float(n_local))
    return world() * float(n_local) / max(n_all, 1.0)


class _Method(torch.nn.Module):
    """model.<name> as a module's forward: DDP syncs gradients through forward only."""

    def __init__(self, model, name):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args):
        return getattr(self.model, self.name)(*args)


def wrap(model, method=None):
    """DistributedDataParallel around `model` under torchrun; in one process the model itself
    (or its bound `method`, e.g. wrap(rm, "score") -> rm.score). The training forward must go
    through what this returns (that is how DDP knows a backward follows); with DDP's default
    settings two forwards before one backward (an answer batch and the ptx windows) are fine."""
    if world() == 1:
        return model if method is None else getattr(model, method)
    device = next(model.parameters()).device
    module = model if method is None else _Method(model, method)
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(wrapped, sync):
    """Accumulate this backward's gradients locally (no all-reduce) unless `sync`:
    with gradient accumulation, only the last micro-batch's backward talks to the others."""
    if sync or world() == 1:
        return nullcontext()
    return getattr(wrapped, "_orig_mod", wrapped).no_sync()  # under torch.compile: the DDP module inside


def accumulate(parts, counts, *wrapped):
    """
    Gradient accumulation over this rank's micro-batches `parts`, exact under torchrun.
    counts[j]: how many items (tokens, prompts) the mean loss of parts[j] averages over.
    Yields (part, weight, last): multiply the part's mean loss by `weight` before its
    backward, and the step's gradient is that of the mean over the whole batch, on every
    rank together. The gradients of the `wrapped` models are exchanged on the last part only.
    One process, one part: yields (parts[0], 1.0, True).
    """
    total = sum(counts)
    rank_share = share(total)
    for j, (part, n) in enumerate(zip(parts, counts)):
        last = j == len(parts) - 1
        with ExitStack() as stack:
            for m in wrapped:
                stack.enter_context(no_sync(m, last))
            yield part, n / max(1, total) * rank_share, last


# PPO's rollouts under torchrun: every rank answers its block of the batch's prompts, and
# draws the same random numbers as one process answering all of them would


def sampling(generator, first, total):
    """Keyword arguments for model.generate when this rank samples rows first..first + B of a
    batch of `total` rows: each step draws the uniforms of all `total` rows from the shared
    generator and keeps its own, and every rank steps until the rows of ALL ranks ended (so
    all draw the same numbers). One process: {} (generate draws B uniforms per step)."""
    if world() == 1:
        return {}

    def uniforms(n, device):
        return torch.rand(total, 1, device=device, generator=generator)[first : first + n]  # (n, 1)

    def all_done(done):
        return all_sum(float((~done).sum())) == 0

    return dict(uniforms=uniforms, all_done=all_done)


def data_generator(generator):
    """A CPU generator for drawing data (PPO-ptx's pretraining windows), seeded from the
    rollout generator's stream (which every rank shares) plus the rank: each rank draws
    its own windows. One process: seeded from the stream alone."""
    return torch.Generator().manual_seed(int(torch.randint(1 << 30, (1,), generator=generator,
                                                           device=generator.device)) + rank())


def reseed(seed, step):
    """After --resume under torchrun: the checkpoint holds rank 0's RNG state, so give every
    rank its own stream again (dropout masks, minibatch order). One process: nothing."""
    if world() > 1:
        seed_everything(seed + rank() + 7919 * step)
