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
gives each rank its own dropout masks and pretraining windows.

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
from contextlib import nullcontext
from datetime import timedelta

import torch
import torch.distributed as dist


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


def share(n_local):
    """world x (this rank's count) / (count on all ranks): multiply a rank's mean loss by it
    so that DDP's average of the ranks' gradients is the gradient of the batch mean."""
    n_all = all_sum(float(n_local))
    return world() * float(n_local) / max(n_all, 1.0)


def wrap(model):
    """DistributedDataParallel around `model` under torchrun; the model itself otherwise.
    Its forward must be called through the wrapper (that is how DDP knows a backward
    follows) exactly once per backward."""
    if world() == 1:
        return model
    device = next(model.parameters()).device
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def no_sync(wrapped, sync):
    """Accumulate this backward's gradients locally (no all-reduce) unless `sync`:
    with gradient accumulation, only the last micro-batch's backward talks to the others."""
    if sync or world() == 1:
        return nullcontext()
    return getattr(wrapped, "_orig_mod", wrapped).no_sync()  # under torch.compile: the DDP module inside
