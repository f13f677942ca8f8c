"""model.py: parity with Hugging Face GPT-2, attention paths, KV cache, padding, log-probs."""
import copy
import math

import pytest
import torch

from model import (GPT, GPTConfig, KVCache, ScalarModel, generate, last_token_index, left_pad,
                   logprobs_from_logits, positions_from_mask, response_logprobs, sample_next, read_safetensors)

CFG = GPTConfig(block_size=64, vocab_size=97, n_layer=2, n_head=4, n_embd=32)
EOS, PAD = 95, 96


def tiny(attn_impl="sdpa", seed=0):
    torch.manual_seed(seed)
    m = GPT(GPTConfig(**{**CFG.__dict__, "attn_impl": attn_impl}))
    # larger-than-init weights so the tests exercise non-trivial attention patterns
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(5.0)
    return m.eval()


# --- parity with an independent implementation --------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hf_gpt2_parity(tmp_path, fmt):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(n_positions=48, n_embd=32, n_layer=2, n_head=4, vocab_size=101,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    with torch.no_grad():  # random biases/LN too, so a missed or mis-transposed key shows up
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists()
    else:
        hf_cfg.save_pretrained(tmp_path)
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ours = GPT.from_hf_dir(str(tmp_path)).eval()
    idx = torch.randint(0, 101, (3, 40))
    with torch.no_grad():
        ref = hf(idx).logits
        got, _ = ours(idx)
    assert (ref - got).abs().max().item() <= 1e-4


def test_safetensors_reader_matches_library(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 4), "b": torch.randn(5).half(), "c": torch.randn(2, 2).bfloat16()}
    st.save_file(tensors, str(tmp_path / "x.safetensors"))
    got = read_safetensors(str(tmp_path / "x.safetensors"))
    for k, v in tensors.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v)


def test_hf_dir_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_hf_dir(str(tmp_path))


def test_resize_vocab_keeps_tying_and_old_rows():
    m = tiny()
    old = m.transformer.wte.weight.detach().clone()
    m.resize_vocab(100)
    assert m.lm_head.weight is m.transformer.wte.weight
    assert torch.equal(m.transformer.wte.weight[:97], old)


# --- attention ----------------------------------------------------------------------------


def test_sdpa_matches_explicit():
    a, b = tiny("sdpa"), tiny("explicit")
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 95, (2, 30))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :7] = 0  # left padding on one row: exercises the masked path too
    with torch.no_grad():
        assert torch.allclose(a(idx)[0], b(idx)[0], atol=1e-5)
        la, lb = a(idx, attn_mask=mask)[0], b(idx, attn_mask=mask)[0]
    assert torch.allclose(la, lb, atol=1e-5)
    assert torch.isfinite(la).all()


def test_causality():
    m = tiny()
    idx = torch.randint(0, 95, (1, 20))
    idx2 = idx.clone()
    idx2[0, 12:] = (idx2[0, 12:] + 1) % 95  # change the future
    with torch.no_grad():
        assert torch.allclose(m(idx)[0][:, :12], m(idx2)[0][:, :12], atol=1e-6)


@pytest.mark.parametrize("impl", ["sdpa", "explicit"])
def test_kv_cache_matches_full_forward(impl):
    m = tiny(impl)
    idx = torch.randint(0, 95, (2, 24))
    with torch.no_grad():
        full, _ = m(idx)
        cache = KVCache(m.config, 2, 24, "cpu", torch.float32)
        parts = [m(idx[:, :10], cache=cache)[0]]  # prefill 10 tokens ...
        for t in range(10, 24):  # ... then one at a time
            parts.append(m(idx[:, t : t + 1], cache=cache)[0])
    assert torch.allclose(full, torch.cat(parts, 1), atol=1e-5)


def test_left_padding_gives_same_logits_as_unpadded():
    m = tiny()
    seq = torch.randint(0, 95, (1, 12))
    ids, mask = left_pad([seq[0].tolist(), list(range(20))], PAD)
    with torch.no_grad():
        alone, _ = m(seq)
        batched, _ = m(ids, attn_mask=mask)
    assert torch.allclose(alone[0], batched[0, -12:], atol=1e-5)


# --- helpers ------------------------------------------------------------------------------


def test_padding_helpers():
    ids, mask = left_pad([[5, 6], [7, 8, 9]], PAD)
    assert ids.tolist() == [[PAD, 5, 6], [7, 8, 9]] and mask.tolist() == [[0, 1, 1], [1, 1, 1]]
    assert positions_from_mask(mask).tolist() == [[0, 0, 1], [0, 1, 2]]
    right = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_index(right).tolist() == [1, 2, 3]


def test_logprobs_from_logits_temperature():
    # by hand: logits (0, ln 3) give p = (1/4, 3/4); at temperature 0.5 they become
    # (0, 2 ln 3) = (0, ln 9), so p = (1/10, 9/10)
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])  # (B=1, T=2, V=2)
    tok = torch.tensor([[1, 0]])
    want = {1.0: [0.75, 0.25], 0.5: [0.9, 0.1]}
    for temperature, probs in want.items():
        got = logprobs_from_logits(logits, tok, temperature=temperature)  # (1, 2)
        assert torch.allclose(got, torch.tensor([probs]).log(), atol=1e-6), temperature


def test_sample_next_greedy_and_sampled():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[4.0, 3.0, 2.0, -5.0, -5.0]]).repeat(2000, 1)
    freq = torch.bincount(sample_next(logits, 1.0, generator=g), minlength=5).float() / 2000
    assert (freq - torch.softmax(logits[0], -1)).abs().max() < 0.03  # inverse-CDF sampling matches softmax
    assert sample_next(logits[:1], 0).item() == 0  # temperature 0 = greedy


# --- generation ---------------------------------------------------------------------------

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11], [12, 13, 14, 15, 16]]


def test_batched_greedy_equals_one_at_a_time():
    m = tiny()
    batched = generate(m, PROMPTS, 20, EOS, PAD, temperature=0)
    for i, p in enumerate(PROMPTS):
        alone = generate(m, [p], 20, EOS, PAD, temperature=0)
        n = int(alone["response_mask"].sum())
        assert batched["response"][i, :n].tolist() == alone["response"][0, :n].tolist()
        assert int(batched["response_mask"][i].sum()) == n


def test_cached_generation_equals_uncached():
    m = tiny()
    a = generate(m, PROMPTS, 16, EOS, PAD, temperature=0, use_cache=True)
    b = generate(m, PROMPTS, 16, EOS, PAD, temperature=0, use_cache=False)
    assert torch.equal(a["tokens"], b["tokens"])
    assert torch.allclose(a["logprobs"], b["logprobs"], atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_equal_recomputed(temperature):
    m = tiny()
    g = torch.Generator().manual_seed(1)
    out = generate(m, PROMPTS, 24, EOS, PAD, temperature=temperature, generator=g)
    with torch.no_grad():
        lp = response_logprobs(m, out["tokens"], out["attn_mask"], out["prompt_len"], temperature)
    mask = out["response_mask"].bool()
    assert (lp[mask] - out["logprobs"][mask]).abs().max() < 1e-4


def force_eos(model, end_at):
    """Make row i emit EOS at response step end_at[i] (None: never), and EOS or PAD
    impossible everywhere else, by editing the logits lm_head returns. generate calls the
    model once per step (the prefill predicts step 0), so counting calls counts steps."""
    step = [0]

    def hook(module, inputs, logits):  # logits (B, T, V); the last position predicts the step
        logits = logits.clone()
        logits[:, -1, [EOS, PAD]] = -1e4
        for i, e in enumerate(end_at):
            if e == step[0]:
                logits[i, -1, EOS] = 1e4  # softmax puts all the mass on EOS
        step[0] += 1
        return logits

    model.lm_head.register_forward_hook(hook)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("end_at, steps", [([2, 0, 5, None], 8),  # row 3 never ends: all 8 steps
                                           ([1, 3, 0, 2], 4)])  # all rows end: stop after step 3
def test_generation_stops_at_eos_and_masks_after(use_cache, end_at, steps):
    m = tiny()
    force_eos(m, end_at)
    out = generate(m, PROMPTS, 8, EOS, PAD, temperature=1.0, generator=torch.Generator().manual_seed(0),
                   use_cache=use_cache)
    assert out["response"].shape == out["response_mask"].shape == (len(PROMPTS), steps)
    assert out["ended"].tolist() == [e is not None for e in end_at]
    for i, e in enumerate(end_at):
        r, msk, lp = out["response"][i].tolist(), out["response_mask"][i].tolist(), out["logprobs"][i]
        n = steps if e is None else e + 1  # real tokens, EOS included
        assert EOS not in r[: n - 1] and PAD not in r[:n]
        assert msk == [1] * n + [0] * (steps - n)
        assert r[n:] == [PAD] * (steps - n)  # padding after EOS
        assert (lp[n:] == 0).all() and (lp[:n] <= 0).all()  # no log-prob for padding
        if e is not None:
            assert r[e] == EOS and lp[e].item() > -1e-3  # EOS was certain: log-prob ~ 0
    # the attention mask covers exactly the real response tokens
    assert torch.equal(out["attn_mask"][:, out["prompt_len"] :], out["response_mask"])


def test_generate_rejects_too_long():
    with pytest.raises(ValueError, match="block_size"):
        generate(tiny(), [[1] * 60], 10, EOS, PAD)


def test_scalar_model_shapes_and_head_init():
    torch.manual_seed(0)
    sm = ScalarModel(GPTConfig(**{**CFG.__dict__, "n_embd": 256}))
    assert abs(sm.head.weight.std().item() - 1 / 257**0.5) < 0.01 and sm.head.bias.item() == 0
    v = sm(torch.randint(0, 95, (3, 9)), attn_mask=torch.ones(3, 9))
    assert v.shape == (3, 9)


def test_training_reduces_loss():
    """Overfit one batch: the model, loss and optimizer are wired up correctly."""
    m = copy.deepcopy(tiny())
    torch.manual_seed(0)
    for p in m.parameters():
        p.data.div_(5.0)
    m.train()
    idx = torch.randint(0, 95, (4, 16))
    targets = idx.roll(-1, 1)
    targets[:, -1] = -1
    opt = m.configure_optimizer(lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(60):
        _, loss = m(idx, targets)
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_sampling_matches_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, -9.0, 0.5]]).repeat(20000, 1)
    counts = torch.bincount(sample_next(logits, 1.0, generator=g), minlength=6).float() / 20000
    assert (counts - logits[0].softmax(-1)).abs().max() < 0.01
    counts = torch.bincount(sample_next(logits, 0.5, generator=g), minlength=6).float() / 20000
    assert (counts - (logits[0] / 0.5).softmax(-1)).abs().max() < 0.01


def test_bench_matmul_floor_does_a_training_steps_arithmetic(monkeypatch):
    """bench/bench.py's floor runs the matrix products of one training step: 6 FLOPs per token per
    weight of the linear layers and the tied LM head (forward + two backward products), and
    attention's four products forward and back at the causal half (6 B L C T^2 in all)."""
    from bench import bench
    cfg = GPTConfig(vocab_size=96, block_size=32, n_layer=3, n_head=2, n_embd=16)
    B, T = 2, 32
    flops = []
    real_bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: flops.append(2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2])
                        or real_bmm(a, b))
    bench.matmul_floor_fn(cfg, B, T, "cpu")()
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    assert sum(flops) == 6 * B * T * (12 * C * C * L + C * V) + 6 * B * L * C * T * T
