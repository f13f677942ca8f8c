"""
The GPT every stage shares: GPT-2's architecture in raw PyTorch, small enough to read in
one sitting.

    token ids --wte+wpe--> [ LayerNorm -> causal self-attention -> +residual
                             LayerNorm -> MLP (4x, tanh-GELU)   -> +residual ] x n_layer
              --ln_f--> hidden states --(tied wte)--> logits

Also here, because every stage must agree on them:
- `KVCache` and `generate`: batched sampling of prompts of different lengths (left
  padding, attention mask, position ids that start at 0 at each row's first real token),
  temperature, per-row stop at EOS, returning the log-probs PPO needs.
- `logprobs_from_logits` / `response_logprobs`: the one log-prob gather.
- `ScalarModel`: the same trunk with a one-number head (reward model, value function).
- `GPT.from_hf_dir`: loads a Hugging Face GPT-2 checkpoint directory from local disk with
  torch + numpy only (safetensors parsed by hand, .bin with weights_only=True).

Shapes: B batch, T sequence length, C = n_embd, nh = n_head, hs = C // nh head size,
V vocab, P (padded) prompt length, R response length.
"""

import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


@dataclass
class GPTConfig:
    block_size: int = 256  # max sequence length (positions)
    vocab_size: int = 2052  # BPE ranks + special tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # residual, attention and embedding dropout
    bias: bool = True  # GPT-2 has biases in Linear and LayerNorm
    attn_impl: str = "sdpa"  # "sdpa" (fast, flash on CUDA) or "explicit" (readable masked softmax)


class KVCache:
    """
    Keys and values of every layer for the tokens seen so far, preallocated to `max_len`
    so decoding one token is a write, not a concatenation.
    k[layer], v[layer]: (B, nh, max_len, hs); `pos` = number of positions already filled.
    """

    def __init__(self, cfg, batch_size, max_len, device, dtype):
        hs = cfg.n_embd // cfg.n_head
        shape = (batch_size, cfg.n_head, max_len, hs)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.pos = 0


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.n_embd, self.impl = cfg.n_head, cfg.n_embd, cfg.attn_impl
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.dropout = cfg.dropout

    def forward(self, x, mask=None, cache=None, layer=0):
        """
        x: (B, T, C). mask: None for plain causal attention, else a bool (B, 1, T, Tk)
        "may attend" mask over all Tk keys (cached ones included). cache: KVCache or None.
        """
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            # write this step's keys/values after the cached ones, attend over all of them
            cache.k[layer][:, :, cache.pos : cache.pos + T] = k
            cache.v[layer][:, :, cache.pos : cache.pos + T] = v
            k = cache.k[layer][:, :, : cache.pos + T]  # (B, nh, Tk, hs)
            v = cache.v[layer][:, :, : cache.pos + T]  # (B, nh, Tk, hs)
        drop = self.dropout if self.training else 0.0

        if self.impl == "sdpa":
            # fast path: fused kernel (flash attention on CUDA when mask is None)
            if mask is None:
                # (GPT.forward always passes a mask once the cache holds earlier tokens)
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        else:
            # readable path: the same computation, one step at a time
            att = q @ k.transpose(-2, -1)  # (B, nh, T, Tk): how much each query matches each key
            att = att * (1.0 / math.sqrt(hs))  # keep logits O(1) so softmax isn't saturated
            if mask is None:
                Tk = k.size(2)  # query i sits at absolute position Tk - T + i
                mask = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(diagonal=Tk - T)
            att = att.masked_fill(~mask, float("-inf"))  # no peeking at the future or at padding
            att = F.softmax(att, dim=-1)  # each row: a distribution over visible keys
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, hs): weighted average of the values

        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): re-assemble the heads
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        # GPT-2 uses the tanh approximation of GELU; exact GELU breaks parity with its weights
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x, mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), mask, cache, layer)  # pre-LayerNorm: normalise, then add
        x = x + self.mlp(self.ln_2(x))
        return x


def positions_from_mask(attn_mask):
    """(B, T) 0/1 mask -> (B, T) position ids starting at 0 at each row's first real token.
    [[0,0,1,1,1]] -> [[0,0,0,1,2]] (pads get 0; they are never attended to)."""
    return (attn_mask.long().cumsum(-1) - 1).clamp(min=0)


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.grad_checkpoint = False  # activation checkpointing in training (--grad_checkpoint of sft/reward/dpo)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),  # token embeddings
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),  # learned position embeddings
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx, targets=None, attn_mask=None, pos=None, cache=None, return_hidden=False, last_k=None):
        """
        idx: (B, T) token ids. targets: (B, T) next-token ids, -1 = ignore (prompt, padding).
        attn_mask: (B, Tk) 1 = real token, 0 = padding, over ALL keys (cached + these T).
        pos: (B, T) position ids; default: from attn_mask, or 0..T-1 (after the cache).
        Returns (logits (B, T, V), loss or None), or (hidden (B, T, C), None) if return_hidden.
        last_k: logits of the last k positions only, (B, k, V): PPO needs the response's; the LM
        head is often the largest matmul (GPT-2: 50257 x 768). (The sampling prefill could use
        last_k=1 too; it does not: a narrower matmul rounds differently, so every sampled token
        downstream would change in its last bits for a few percent of the rollout's time.)
        """
        B, T = idx.shape
        past = cache.pos if cache is not None else 0
        if past > 0 and attn_mask is None:  # decoding after cached tokens: every key is real
            attn_mask = torch.ones(B, past + T, dtype=torch.long, device=idx.device)
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens exceeds block_size {self.config.block_size}")
        if pos is None:
            if attn_mask is not None:
                pos = positions_from_mask(attn_mask)[:, past:]  # (B, T)
            else:
                pos = torch.arange(past, past + T, device=idx.device).unsqueeze(0)  # (1, T)

        mask = None
        if attn_mask is not None and T == 1:  # one-token decode step: causality is automatic
            mask = attn_mask.bool()[:, None, None, : past + 1]  # (B, 1, 1, Tk)
        elif attn_mask is not None:
            Tk = past + T
            causal = torch.ones(T, Tk, dtype=torch.bool, device=idx.device).tril(diagonal=past)  # (T, Tk)
            keys = attn_mask.bool()[:, None, None, :Tk]  # (B, 1, 1, Tk): which keys are real
            # a padding query sees only itself: a row with no visible key would softmax to NaN
            diag = torch.zeros(T, Tk, dtype=torch.bool, device=idx.device)
            diag[torch.arange(T), past + torch.arange(T)] = True
            mask = (causal & keys) | diag  # (B, 1, T, Tk)

        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        x = self.transformer.drop(x)
        for i, block in enumerate(self.transformer.h):
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                # keep only the block's input; recompute its activations during backward
                x = torch.utils.checkpoint.checkpoint(block, x, mask, None, i, use_reentrant=False)
            else:
                x = block(x, mask, cache, i)
        x = self.transformer.ln_f(x)  # (B, T, C)
        if cache is not None:
            cache.pos += T
        if return_hidden:
            return x, None
        if last_k is not None:
            x = x[:, -last_k:]  # (B, k, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizer(self, lr, weight_decay=0.1, betas=(0.9, 0.95), device="cpu"):
        """AdamW; decay only 2-D weights (matmuls, embeddings), never biases or LayerNorms."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fused = device.startswith("cuda")
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)

    # -------------------------------------------------------------------------
    # Hugging Face GPT-2 directory -> GPT, with torch + numpy only

    @classmethod
    def from_hf_dir(cls, path, vocab_size=None, dropout=0.0):
        """
        Load `config.json` + `model.safetensors` (or `pytorch_model.bin`) from a local
        directory written by `GPT2LMHeadModel.save_pretrained`. `vocab_size` larger than the
        checkpoint's appends rows to wte (mean-initialised) for our extra special tokens.
        """
        cfg_path = os.path.join(path, "config.json")
        if not os.path.isfile(cfg_path):
            raise FileNotFoundError(f"{cfg_path} not found: expected a Hugging Face GPT-2 directory")
        with open(cfg_path) as f:
            hf = json.load(f)
        missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k not in hf]
        if missing:
            raise ValueError(f"{cfg_path}: no {missing[0]!r}: not a GPT-2 config.json")
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"{cfg_path}: activation_function {act!r} is not GPT-2's tanh GELU")
        cfg = GPTConfig(
            block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            vocab_size=hf["vocab_size"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            dropout=dropout,
            bias=True,
        )
        sd_hf = load_hf_state_dict(path)
        model = cls(cfg)
        # our keys without the "transformer." prefix (same tensors: copy_ writes into the model)
        sd = {k.removeprefix("transformer."): v for k, v in model.state_dict().items()}
        for k, v in sd_hf.items():
            k = k.removeprefix("transformer.")
            if k.endswith(("attn.bias", "attn.masked_bias")) and k not in sd:
                continue  # causal-mask buffers, not weights
            if k == "lm_head.weight":
                continue  # tied to wte
            if k not in sd:
                raise KeyError(f"{path}: unexpected key {k!r} in checkpoint")
            if k.endswith(HF_TRANSPOSED):
                v = v.t()  # HF's Conv1D stores (in, out); nn.Linear wants (out, in)
            if v.shape != sd[k].shape:
                raise ValueError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(sd[k].shape)}")
            with torch.no_grad():
                sd[k].copy_(v.float())
        seen = {k.removeprefix("transformer.") for k in sd_hf}
        missing = [k for k in sd if k != "lm_head.weight" and k not in seen]
        if missing:
            raise KeyError(f"{path}: checkpoint lacks {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if vocab_size is not None and vocab_size > cfg.vocab_size:
            model.resize_vocab(vocab_size)
        return model

    def resize_vocab(self, vocab_size):
        """Append rows to the (tied) embedding, initialised to the mean embedding."""
        old = self.transformer.wte.weight.data
        extra = old.mean(0, keepdim=True).repeat(vocab_size - old.size(0), 1)
        self.transformer.wte = nn.Embedding(vocab_size, old.size(1))
        self.transformer.wte.weight.data = torch.cat([old, extra])
        self.lm_head = nn.Linear(old.size(1), vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        self.config.vocab_size = vocab_size


HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def read_safetensors(file):
    """Parse a .safetensors file by hand: 8-byte little-endian header size, a JSON header
    {name: {dtype, shape, data_offsets}}, then raw little-endian tensor bytes."""
    with open(file, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _ST_DTYPES:
            raise ValueError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}")
        a, b = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=_ST_DTYPES[info["dtype"]]) if b > a else \
            torch.zeros(0, dtype=_ST_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out


def load_hf_state_dict(path):
    st, binf = os.path.join(path, "model.safetensors"), os.path.join(path, "pytorch_model.bin")
    if os.path.isfile(st):
        return read_safetensors(st)
    if os.path.isfile(binf):
        return torch.load(binf, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin found")


# -----------------------------------------------------------------------------
# a scalar head on the same trunk: reward model and value function


class ScalarModel(nn.Module):
    """GPT trunk + Linear(C, 1): one number per position. The reward model reads it at the
    last real token (`score`); the PPO value function reads it at every response position
    (`forward`).

    `lm_coef` (0 = the paper's RM exactly) adds one more input to the reward: the trunk's
    own mean log-likelihood of the response, read through its (tied) LM head. Why: the RM
    starts from the SFT model, which holds the world's facts as next-token probabilities,
    and whether an answer is right is mostly whether it states the right fact. A head
    reading one hidden state learns that poorly from a few thousand comparisons; the
    likelihood alone already ranks answers, and the two trained together rank them better
    than either (measured: docs/experiments.md, sections 2 and 9).
    """

    def __init__(self, cfg):
        super().__init__()
        self.trunk = GPT(cfg)
        self.head = nn.Linear(cfg.n_embd, 1)
        # REFERENCE: weight ~ N(0, 1/sqrt(d_model + 1)), bias 0 (Ziegler et al. 2019)
        nn.init.normal_(self.head.weight, std=1.0 / math.sqrt(cfg.n_embd + 1))
        nn.init.zeros_(self.head.bias)
        self.lm_coef = nn.Parameter(torch.zeros(()))  # weight of the likelihood feature (0 = paper's RM)

    def forward(self, idx, attn_mask=None):
        """idx, attn_mask: (B, T) -> values (B, T) (float32)."""
        hidden, _ = self.trunk(idx, attn_mask=attn_mask, return_hidden=True)  # (B, T, C)
        return self.head(hidden).squeeze(-1).float()  # (B, T)

    def score(self, idx, attn_mask, response_mask=None):
        """
        The reward of each row: (B,). idx, attn_mask: (B, T), any padding; response_mask
        (B, T) is 1 on the response tokens (and the final EOT) -- needed when lm_coef != 0.

            score = head(h at the last real token) + lm_coef * mean over response tokens
                    of log p_trunk(token | everything before it)
        """
        hidden, _ = self.trunk(idx, attn_mask=attn_mask, return_hidden=True)  # (B, T, C)
        last = last_token_index(attn_mask)  # (B,)
        score = self.head(hidden[torch.arange(len(idx)), last]).squeeze(-1).float()  # (B,)
        if self.lm_coef.item() != 0.0:
            if response_mask is None:
                raise ValueError("this reward model has a likelihood term (lm_coef != 0): pass response_mask")
            # hidden[:, t] predicts idx[:, t + 1]: the usual off-by-one of every log-prob gather
            logp = logprobs_from_logits(self.trunk.lm_head(hidden[:, :-1]), idx[:, 1:])  # (B, T-1)
            m = response_mask[:, 1:].float()  # (B, T-1): 1 where idx[:, t + 1] is a response token
            score = score + self.lm_coef * (logp * m).sum(1) / m.sum(1).clamp(min=1)
        return score


def last_token_index(attn_mask):
    """(B, T) 0/1 mask -> (B,) index of each row's last real token; works for left padding,
    right padding, and both. [[0,1,1,0]] -> [2]."""
    T = attn_mask.size(1)
    ar = torch.arange(T, device=attn_mask.device).expand_as(attn_mask)
    return torch.where(attn_mask.bool(), ar, torch.full_like(ar, -1)).max(dim=1).values


# -----------------------------------------------------------------------------
# log-probs: the one gather SFT, reward and PPO all use


def logprobs_from_logits(logits, tokens, temperature=1.0, return_entropy=False):
    """
    logits: (B, T, V) scores predicting tokens: (B, T) -> (B, T) log pi(token) under the
    temperature-scaled distribution softmax(logits / temperature). The temperature MUST
    match the one used to sample, or the PPO ratio and KL are wrong from step one.
    return_entropy: also the entropy of that distribution at each position, (B, T).
    """
    logits = logits.float()
    if temperature != 1.0:  # x / 1 is x: skip a pass over a (B, T, V) tensor
        logits = logits / temperature
    logp = F.log_softmax(logits, dim=-1)  # (B, T, V)
    lp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)
    if not return_entropy:
        return lp
    return lp, -(logp.exp() * logp).sum(-1)  # entropy: - sum_v p log p


def response_logprobs(model, tokens, attn_mask, prompt_len, temperature=1.0, return_entropy=False):
    """
    Forward the whole sequence and return log pi of each response token.
    tokens, attn_mask: (B, P + R) with prompts left-padded to P. -> (B, R).
    """
    R = tokens.size(1) - prompt_len
    # the off-by-one that every RLHF codebase must get right: the logit at position t
    # predicts token t + 1, so response tokens [P, P+R) are predicted by logits [P-1, P+R-1)
    logits, _ = model(tokens, attn_mask=attn_mask, last_k=R + 1)  # (B, R + 1, V): positions P-1 .. P+R-1
    logits = logits[:, :-1]  # (B, R, V)
    return logprobs_from_logits(logits, tokens[:, prompt_len:], temperature, return_entropy)  # (B, R) [, (B, R)]


# -----------------------------------------------------------------------------
# batched sampling with a KV cache


def left_pad(seqs, pad_id, device="cpu"):
    """list of token lists -> (ids (B, P), attn_mask (B, P)) padded on the LEFT, so every
    prompt ends at column P-1 and generation appends in the same column for all rows."""
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), P), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, P - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, P - len(s) :] = 1
    return ids.to(device), mask.to(device)


def right_pad(seqs, pad_value, device="cpu"):
    """list of lists -> (B, T) tensor padded on the RIGHT with pad_value."""
    T = max(len(s) for s in seqs)
    out = torch.full((len(seqs), T), pad_value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out.to(device)


def sample_next(logits, temperature=1.0, generator=None):
    """logits (B, V) -> next token (B,). temperature 0 = greedy. (No top-k / top-p: PPO's
    log-probs must be those of the distribution it samples, and no stage truncates it.)"""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    # inverse-CDF sampling: one uniform per row (torch.multinomial draws one per vocab entry)
    cdf = logits.softmax(-1).cumsum(-1)  # (B, V)
    u = torch.rand(cdf.size(0), 1, device=cdf.device, generator=generator)  # (B, 1)
    u = u * cdf[:, -1:]  # in [0, total probability)
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp(max=cdf.size(-1) - 1)  # first cdf > u


@torch.no_grad()
def generate(model, prompts, max_new_tokens, eos_id, pad_id, temperature=1.0, generator=None, use_cache=True):
    """
    Sample continuations of a batch of prompts (lists of token ids, any lengths).
    Stops each row at EOS (kept, mask 1) and the whole batch when every row has stopped.

    Returns a dict:
      tokens    (B, P + R) left-padded prompts followed by responses (pad after EOS)
      attn_mask (B, P + R) 1 on real tokens
      prompt_len  P
      response  (B, R), response_mask (B, R) 1 up to and including EOS
      logprobs  (B, R) log pi(token) under softmax(logits / temperature), the sampling distribution
      ended     (B,) bool: emitted EOS before max_new_tokens
    temperature=0 is greedy (logprobs then computed at temperature 1).
    """
    device = next(model.parameters()).device
    idx, attn_mask = left_pad(prompts, pad_id, device)  # (B, P)
    B, P = idx.shape
    if P + max_new_tokens > model.config.block_size:
        raise ValueError(f"prompt ({P}) + max_new_tokens ({max_new_tokens}) > block_size {model.config.block_size}")
    lp_temp = temperature if temperature > 0 else 1.0
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, B, P + max_new_tokens, device, dtype)
    pos_next = attn_mask.sum(-1)  # (B,): position id of each row's next token
    done = torch.zeros(B, dtype=torch.bool, device=device)
    out_tokens, out_lp, out_mask = [], [], []

    logits, _ = model(idx, attn_mask=attn_mask, cache=cache)  # prefill: (B, P, V)
    logits = logits[:, -1]  # (B, V) predicts the first response token
    for _ in range(max_new_tokens):
        alive = ~done  # (B,) rows that have not emitted EOS yet
        tok = sample_next(logits, temperature, generator)  # (B,)
        tok = torch.where(alive, tok, torch.full_like(tok, pad_id))  # finished rows get padding
        lp = torch.log_softmax(logits.float() / lp_temp, -1).gather(-1, tok[:, None]).squeeze(-1)  # (B,)
        out_tokens.append(tok)
        out_lp.append(torch.where(alive, lp, torch.zeros_like(lp)))
        out_mask.append(alive)
        attn_mask = torch.cat([attn_mask, alive.long()[:, None]], 1)  # (B, P + t + 1)
        done = done | (tok == eos_id)
        if bool(done.all()):
            break
        if use_cache:
            logits, _ = model(tok[:, None], attn_mask=attn_mask, pos=pos_next[:, None], cache=cache)
        else:
            full = torch.cat([idx, torch.stack(out_tokens, 1)], 1)
            logits, _ = model(full, attn_mask=attn_mask)
        logits = logits[:, -1]
        pos_next = pos_next + 1

    response = torch.stack(out_tokens, 1)  # (B, R)
    response_mask = torch.stack(out_mask, 1).long()  # (B, R)
    return dict(
        tokens=torch.cat([idx, response], 1),
        attn_mask=attn_mask,  # (B, P + R)
        prompt_len=P,
        response=response,
        response_mask=response_mask,
        logprobs=torch.stack(out_lp, 1),
        ended=(response == eos_id).any(1),
    )


def model_from_checkpoint(ckpt, key="model"):
    """Rebuild a GPT (or ScalarModel, if the state has a 'head.') from a checkpoint dict."""
    cfg = GPTConfig(**ckpt["model_config"])
    sd = ckpt[key]
    model = ScalarModel(cfg) if any(k.startswith("head.") for k in sd) else GPT(cfg)
    model.load_state_dict(sd)
    return model

