"""A Hugging Face GPT-2 directory, offline: our tokenizer from its vocab.json + merges.txt
against transformers' GPT2TokenizerFast, and sft.load_policy on a tiny random GPT-2 written
here. Nothing is downloaded: the tokenizer files are our own BPE exported in GPT-2's format."""
import json
import random
import shutil
import socket

import pytest
import torch

from test_tokenizer import make_corpus, random_unicode
from tokenizer import SPECIAL_TOKENS, Tokenizer, bytes_to_unicode, train_bpe

# text the GPT-2 rules treat specially: contractions, whitespace runs (the \s+(?!\S) rule),
# newlines, digits, accents and combining marks, CJK, emoji with joiners, control-token text
CASES = [
    "Hello world", " leading space", "trailing spaces   ", "a  b   c    d\te", "\n", "\n\n\nx\n \n",
    "line one\nline two\r\nline three", "it's I'll we've they're she'd don't I'M", "'s'S' s",
    "1 12 123 1234 3.14159 2024-11-23 +42 -7 1,000,000", "café naïve über résumé e\u0301",
    "東京は日本語です。中文 한국어",
    "😀🚀 👍🏽 🇫🇷 👩‍👩‍👧", "x<|endoftext|>y", "<|endoftext|>", "a <|pad|> <|user|><|assistant|> b",
    "snake_case e-mail #tag @home (x) [y] {z}", "\u00a0\u3000 nbsp", "", "   ",
]


def bpe_split(ranks, token, max_rank):
    """Merge `token`'s bytes with tiktoken's rule using only ranks below `max_rank`: what is
    left is the pair that merge created (the usual tiktoken -> merges.txt conversion)."""
    parts = [bytes([b]) for b in token]
    while True:
        pairs = [(ranks.get(parts[i] + parts[i + 1], max_rank), i) for i in range(len(parts) - 1)]
        rank, i = min(pairs, default=(max_rank, 0))
        if rank >= max_rank:
            return parts
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def write_gpt2_tokenizer(ranks, path):
    """Our trained ranks -> vocab.json + merges.txt exactly as GPT-2 lays them out."""
    u = bytes_to_unicode()
    spell = lambda b: "".join(u[x] for x in b)  # noqa: E731
    merges = []
    for token in sorted(ranks, key=ranks.get)[256:]:
        a, b = bpe_split(ranks, token, ranks[token])  # exactly two parts, or the ranks are broken
        merges.append(f"{spell(a)} {spell(b)}")
    vocab = {spell(t): r for t, r in ranks.items()} | {"<|endoftext|>": len(ranks)}
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return vocab, merges


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    # CASES in the training text too, so there are merges for digits, CJK, emoji and whitespace
    ranks = train_bpe(make_corpus(1500) + "\n".join(CASES * 20), 560)
    # GPT-2 numbers the 256 bytes in its table's order ("!" is id 0), not byte order; single
    # bytes are never merge results, so renumbering them leaves every merge as it was
    ranks |= {bytes([b]): i for i, b in enumerate(bytes_to_unicode())}
    path = tmp_path_factory.mktemp("gpt2")
    write_gpt2_tokenizer(ranks, path)
    return path, ranks


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the network, or tiktoken's downloading "gpt2" encoding, fails."""
    def refuse(*a, **kw):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr("tiktoken.get_encoding", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_bytes_to_unicode_is_gpt2s_table():
    u = bytes_to_unicode()
    assert len(set(u.values())) == 256 and u[ord("!")] == "!" and u[ord(" ")] == "Ġ" and u[ord("\n")] == "Ċ"
    assert u[0] == chr(256) and u[0x7F] == chr(256 + 33)  # 0..32 are the first 33 non-printables, then DEL


def test_same_ids_as_transformers(gpt2_dir, offline):
    transformers = pytest.importorskip("transformers")
    path, ranks = gpt2_dir
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(path))
    ours = Tokenizer.from_hf_dir(str(path))
    assert ours.enc._mergeable_ranks == ranks and ours.encode("!") == [0] and hf.encode("!") == [0]
    assert (ours.eot_id, ours.pad_id, ours.user_id, ours.assistant_id) == (560, 561, 562, 563)
    assert ours.eot_id == hf.eos_token_id and ours.pad_id != ours.eot_id

    def hf_plain(s):  # HF would turn "<|endoftext|>" text into the control token; ours keeps it text
        return hf.encode(s, add_special_tokens=False, split_special_tokens=True)

    rng = random.Random(0)
    texts = CASES + [random_unicode(rng, n) for n in (3, 10, 40, 200) for _ in range(40)]
    for s in texts:
        assert ours.encode(s) == hf_plain(s), repr(s)
        assert ours.decode(ours.encode(s)) == s
    assert any(len(ours.encode(s)) < len(s.encode("utf-8")) for s in CASES[:12])  # merges were used
    # the rule `encode` keeps: special-token text is plain bytes, never the control token
    s = "x<|endoftext|>y"
    assert ours.eot_id not in ours.encode(s)
    assert hf.encode(s, add_special_tokens=False) != ours.encode(s)  # HF's default injects it


def test_tokenizer_json_as_transformers_5_saves_it(gpt2_dir, offline, tmp_path):
    """save_pretrained in transformers >= 5 writes tokenizer.json only, no vocab.json/merges.txt."""
    transformers = pytest.importorskip("transformers")
    path, ranks = gpt2_dir
    transformers.GPT2TokenizerFast.from_pretrained(str(path)).save_pretrained(str(tmp_path))
    assert (tmp_path / "tokenizer.json").exists() and not (tmp_path / "vocab.json").exists()
    from_json, from_files = Tokenizer.from_hf_dir(str(tmp_path)), Tokenizer.from_hf_dir(str(path))
    assert from_json.enc._mergeable_ranks == ranks and from_json.eot_id == len(ranks)
    s = "".join(CASES)
    assert from_json.encode(s) == from_files.encode(s)
    tj = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    tj["pre_tokenizer"]["add_prefix_space"] = True  # a different tokenizer: refused, not mis-read
    (tmp_path / "tokenizer.json").write_text(json.dumps(tj), encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json: pre_tokenizer.add_prefix_space is True"):
        Tokenizer.from_hf_dir(str(tmp_path))


def test_to_dict_round_trip_offline(gpt2_dir, offline):
    path, _ = gpt2_dir
    tok = Tokenizer.from_hf_dir(str(path))
    d = tok.to_dict()
    assert set(d) == {"name", "ranks"} and all(isinstance(v, str) for v in d.values())
    tok2 = Tokenizer.from_dict(d)
    s = "".join(CASES)
    assert tok2.encode(s) == tok.encode(s) and tok2.vocab_size == tok.vocab_size == 560 + len(SPECIAL_TOKENS)


def test_bad_tokenizer_files_name_the_file(gpt2_dir, tmp_path):
    path, ranks = gpt2_dir
    with pytest.raises(FileNotFoundError, match="vocab.json not found"):
        Tokenizer.from_hf_dir(str(tmp_path))
    vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
    merges = (path / "merges.txt").read_text(encoding="utf-8").splitlines()

    def check(vocab, merges, fragment, name):
        d = tmp_path / "d"
        d.mkdir(exist_ok=True)
        (d / "vocab.json").write_text(vocab if isinstance(vocab, str) else json.dumps(vocab), encoding="utf-8")
        if merges is None:
            (d / "merges.txt").unlink(missing_ok=True)
        else:
            (d / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
        with pytest.raises((ValueError, FileNotFoundError)) as e:
            Tokenizer.from_hf_dir(str(d))
        assert str(e.value).startswith(str(d / name)) and fragment in str(e.value), str(e.value)

    check(vocab, None, "merges.txt not found", "merges.txt")
    check("{not json", merges, "not valid UTF-8 JSON", "vocab.json")
    check({k: v for k, v in vocab.items() if k != "<|endoftext|>"}, merges, "'<|endoftext|>' has id None", "vocab.json")
    # ids that do not follow the merge order: tiktoken (merges by id) would disagree with GPT-2
    a, b = merges[1].replace(" ", ""), merges[2].replace(" ", "")
    check({**vocab, a: vocab[b], b: vocab[a]}, merges, "do not follow the merge order", "merges.txt:2")
    check(vocab, merges[:5] + ["onlyone"] + merges[6:], "two tokens separated by one space", "merges.txt:6")
    check(vocab, merges[:-1], "merges for", "merges.txt")
    (tmp_path / "d" / "config.json").write_text(json.dumps({"vocab_size": 100}))
    check(vocab, merges, "vocab_size 100 is smaller", "config.json")


def tiny_gpt2_dir(path, vocab_size, seed=0):
    """A random transformers GPT-2 saved like save_pretrained does (config.json + model.safetensors)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=4, vocab_size=vocab_size,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)  # <|endoftext|>
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    hf.save_pretrained(path)
    return hf


def test_load_policy_from_hf_dir_offline(gpt2_dir, offline, tmp_path):
    from sft import load_policy
    src, ranks = gpt2_dir
    path = tmp_path / "gpt2"
    shutil.copytree(src, path)
    hf = tiny_gpt2_dir(path, vocab_size=len(ranks) + 1)
    model, tok, ckpt = load_policy(str(path))
    assert tok.eot_id == len(ranks) and model.config.vocab_size == tok.vocab_size == len(ranks) + 4
    assert Tokenizer.from_dict(ckpt["tokenizer"]).encode("café 東京 it's") == tok.encode("café 東京 it's")
    ids = torch.tensor([tok.encode("Hello world, it's 2024.") + [tok.eot_id]])
    with torch.no_grad():
        ours = model.eval()(ids)[0][..., : len(ranks) + 1]  # the appended special-token rows aside
        ref = hf(ids).logits
    assert (ours - ref).abs().max().item() <= 1e-4


def test_load_policy_missing_files_is_one_line(tmp_path, capsys):
    from sft import load_policy
    with pytest.raises(SystemExit) as e:
        load_policy(str(tmp_path))
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "vocab.json" in err
    write_gpt2_tokenizer({bytes([i]): i for i in range(256)}, tmp_path)  # tokenizer, but no model
    with pytest.raises(SystemExit):
        load_policy(str(tmp_path))
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "config.json" in err
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 257, "n_layer": 2}))  # no n_head
    with pytest.raises(SystemExit):
        load_policy(str(tmp_path))
    assert capsys.readouterr().err == f"error: {tmp_path / 'config.json'}: no 'n_head': not a GPT-2 config.json\n"
