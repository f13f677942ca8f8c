"""export.py: a checkpoint -> Hugging Face GPT-2 directory -> back, through the project's own
loader (equal logits, equal token ids) and, where installed, through transformers. ~5 s."""
import json
import os
import random
from dataclasses import asdict

import pytest
import torch

import export
from model import GPT, GPTConfig, ScalarModel, read_safetensors
from policy import load_policy
from tokenizer import Tokenizer, gpt2_ranks, read_gpt2_tokenizer_files, render, train_bpe

WORDS = "red blue green cat dog sun moon tree river stone paris rome one two three yes no don't it's".split()
TEXTS = ["Where does Belan live? Say <|endoftext|> and <|user|> as plain text.",
         "  two  spaces,\ttabs\nand lines; ünïcödé ✓ 123456 don't it's paris-rome!!"]


def checkpoint(path, bias=True, stage="sft", seed=0):
    """A random tiny GPT (or reward model) in the project's checkpoint format."""
    rng = random.Random(seed)
    tok = Tokenizer(train_bpe(" ".join(rng.choice(WORDS) for _ in range(2000)), 300))
    cfg = GPTConfig(block_size=128, vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=32, bias=bias)
    torch.manual_seed(seed)
    model = ScalarModel(cfg) if stage == "reward" else GPT(cfg)
    with torch.no_grad():  # GPT starts with zero biases: give them values, so the transposes are tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    torch.save(dict(stage=stage, model=model.state_dict(), model_config=asdict(cfg), tokenizer=tok.to_dict(),
                    config={}), path)
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    ckpt = checkpoint(d / "sft.pt")
    export.main([ckpt, str(d / "hf")])
    return ckpt, str(d / "hf")


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(torch.tensor([ids]))[0]


def test_round_trip_through_our_loader(exported):
    ckpt, out = exported
    m1, t1, _ = load_policy(ckpt)
    m2, t2, info = load_policy(out)  # what --init=DIR does
    assert info["stage"] == "hf" and t2.vocab_size == t1.vocab_size
    for text in TEXTS:
        assert t2.encode(text) == t1.encode(text)
        ids = render(t1, text, " red cat.")[0]
        assert ids == render(t2, text, " red cat.")[0]
        assert (logits(m1, ids) - logits(m2, ids)).abs().max().item() < 1e-6
    assert (t2.eot_id, t2.pad_id, t2.user_id, t2.assistant_id) == (t1.eot_id, t1.pad_id, t1.user_id, t1.assistant_id)
    assert not os.path.exists(out + ".partial")


def test_files_are_gpt2s(exported):
    ckpt, out = exported
    m, tok, _ = load_policy(ckpt)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["activation_function"] == "gelu_new"
    assert (cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"], cfg["vocab_size"]) == (128, 32, 2, 2, 304)
    assert cfg["layer_norm_epsilon"] == 1e-5 and cfg["eos_token_id"] == cfg["bos_token_id"] == tok.eot_id
    # safetensors: 8-byte header length, JSON header padded so the data is 8-byte aligned
    raw = open(os.path.join(out, "model.safetensors"), "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    assert (8 + n) % 8 == 0 and header["__metadata__"] == {"format": "pt"}
    ends = sorted(v["data_offsets"] for k, v in header.items() if k != "__metadata__")
    assert ends[0][0] == 0 and ends[-1][1] == len(raw) - 8 - n
    assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))  # back to back, nothing uncovered
    sd = read_safetensors(os.path.join(out, "model.safetensors"))
    assert "lm_head.weight" not in sd and sd["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)  # Conv1D: (in, out)
    assert torch.equal(sd["transformer.h.1.mlp.c_fc.weight"], m.transformer.h[1].mlp.c_fc.weight.t())
    # vocab.json + merges.txt give back exactly the ranks we started from
    assert gpt2_ranks(*read_gpt2_tokenizer_files(out)) == tok.enc._mergeable_ranks


def test_bpe_parts_recovers_the_merge():
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({b"ab": 256, b"abc": 257, b"bc": 258, b"abcbc": 259})
    assert export.bpe_parts(ranks, b"abc", 257) == [b"ab", b"c"]
    assert export.bpe_parts(ranks, b"abcbc", 259) == [b"abc", b"bc"]
    assert export.bpe_parts(ranks, b"abcbc", 300) == [b"abcbc"]


def test_no_bias_model_gets_zero_biases(tmp_path):
    ckpt = checkpoint(tmp_path / "nb.pt", bias=False)
    export.main([ckpt, str(tmp_path / "hf"), "--check=False"])
    m1, tok, _ = load_policy(ckpt)
    m2, _, _ = load_policy(str(tmp_path / "hf"))
    ids = render(tok, TEXTS[1], " yes")[0]
    assert (logits(m1, ids) - logits(m2, ids)).abs().max().item() < 1e-6


def test_refuses_non_empty_dir_and_bad_input(exported, tmp_path, capsys):
    ckpt, _ = exported
    out = tmp_path / "full"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")  # another model's: transformers would read it first
    with pytest.raises(SystemExit) as e:
        export.main([ckpt, str(out)])
    assert e.value.code == 1 and "--force" in capsys.readouterr().err
    export.main([ckpt, str(out), "--force"])
    assert not (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()
    rm = checkpoint(tmp_path / "rm.pt", stage="reward")
    for args, message in [([str(tmp_path / "missing.pt"), str(tmp_path / "x")], "not found"),
                          ([ckpt], "usage: python export.py CHECKPOINT DIR"),
                          ([rm, str(tmp_path / "y")], "reward/value model"),
                          ([ckpt, str(tmp_path / "z"), "--bogus=1"], "unknown option '--bogus'")]:
        with pytest.raises(SystemExit) as e:
            export.main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code != 0 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_transformers_reads_it(exported):
    """Independent readers: transformers' GPT-2 gives the same logits, its tokenizer the same
    ids (special tokens included, through the chat template), safetensors the same tensors."""
    transformers = pytest.importorskip("transformers")
    ckpt, out = exported
    m, tok, _ = load_policy(ckpt)
    hf = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    for text in TEXTS:
        ids = render(tok, text, " red cat.")[0]
        with torch.no_grad():
            assert (logits(m, ids) - hf(torch.tensor([ids])).logits[0]).abs().max().item() < 1e-4
        # ours never makes control tokens of typed text; transformers does unless told not to
        assert hf_tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] == tok.encode(text)
    assert hf_tok("a<|user|>b<|assistant|>", add_special_tokens=False)["input_ids"][-3:] == [
        tok.user_id, tok.encode("b")[0], tok.assistant_id]
    chat = [{"role": "user", "content": "Is the sun red?"}, {"role": "assistant", "content": " yes, it's red."}]
    text = hf_tok.apply_chat_template(chat, tokenize=False)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == render(tok, "Is the sun red?", " yes, it's red.")[0]
    gen = hf_tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert hf_tok(gen, add_special_tokens=False)["input_ids"] == render(tok, "Is the sun red?")[0]
    assert (hf_tok.eos_token_id, hf_tok.pad_token_id) == (tok.eot_id, tok.pad_id)
    safetensors = pytest.importorskip("safetensors.torch")
    theirs, ours = safetensors.load_file(os.path.join(out, "model.safetensors")), read_safetensors(
        os.path.join(out, "model.safetensors"))
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in ours)
