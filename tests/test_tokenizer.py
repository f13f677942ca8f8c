"""Tests for tokenizer.py: the fast BPE trainer against a slow obvious one, tiktoken
round trips, inert special tokens, and render()'s mask. Offline and a few seconds."""
import random
from collections import Counter

import pytest

from tokenizer import (GPT2_PATTERN, GPT2_SPLIT_APPROX, SPECIAL_TOKENS, Tokenizer, load_ranks,
                       render, save_ranks, train_bpe)

WORDS = ("the a of to and in is it that was he she for on are with as his they be at one have "
         "this from or had by hot word but what some we can out other were all there when up "
         "use your how said an each which do their time if will way about many then them "
         "don't I'll we've it's 1 2 3 42 2024 3.14 (x) [y] {z} #tag @home e-mail snake_case "
         "café naïve über 東京 日本語 привет мир 😀 🚀 ½").split()


def make_corpus(n_sentences=1500, seed=0):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_sentences):
        words = rng.choices(WORDS, weights=[1 / (i + 1) for i in range(len(WORDS))], k=rng.randint(3, 12))
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ",\t", ".\r\n", ".  "]))
    return "\n".join(lines)


CORPUS = make_corpus()


@pytest.fixture(scope="module")
def tok():
    return Tokenizer(train_bpe(CORPUS, 512), name="test")


def slow_train_bpe(text, vocab_size):
    """The textbook algorithm (as in tiktoken/_educational.py): recount every pair over
    every word after every merge. Symbols are bytes objects, not ids, so it shares no
    bookkeeping with the fast trainer. Same tie-break: highest count, then smallest bytes."""
    words = [[bytes([b]) for b in w.encode("utf-8")] for w in GPT2_SPLIT_APPROX.findall(text)]
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < vocab_size:
        stats = Counter(p for w in words for p in zip(w, w[1:]))
        best = min(stats, key=lambda p: (-stats[p], p))
        ranks.setdefault(best[0] + best[1], len(ranks))
        new_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words.append(out)
        words = new_words
    return ranks


# -----------------------------------------------------------------------------
# training

def test_first_merge_is_most_frequent_pair():
    # pieces: "aaab" once, " aaab" 49 times. Pair counts: (a,a) 100, (a,b) 50, (' ',a) 49
    ranks = train_bpe("aaab" + " aaab" * 49, 258)
    assert len(ranks) == 258
    assert ranks[b"aa"] == 256
    # now " aaab" is [' ', aa, a, b]: (aa,a) and (a,b) tie at 50, (' ',aa) has 49.
    # The tie goes to the smaller bytes: (b"a", b"b") < (b"aa", b"a")
    assert ranks[b"ab"] == 257
    assert all(ranks[bytes([i])] == i for i in range(256))


def test_train_is_deterministic_and_exact_size():
    a = train_bpe(CORPUS, 500)
    b = train_bpe(CORPUS, 500)
    assert a == b
    assert len(a) == 500 and sorted(a.values()) == list(range(500))


def test_matches_slow_reference():
    text = make_corpus(120, seed=1)
    assert train_bpe(text, 380) == slow_train_bpe(text, 380)
    # a tiny alphabet makes ties and repeated symbols (b"aa" + b"a" ...) frequent
    rng = random.Random(2)
    text = " ".join("".join(rng.choice("ab") for _ in range(rng.randint(1, 9))) for _ in range(300))
    assert train_bpe(text, 300) == slow_train_bpe(text, 300)


def test_every_rank_is_a_merge_of_two_lower_ranks(tok):
    # what tiktoken needs to rebuild each token by merging
    ranks = tok.enc._mergeable_ranks
    for token, r in ranks.items():
        if r >= 256:
            assert any(ranks.get(token[:i], r) < r and ranks.get(token[i:], r) < r
                       for i in range(1, len(token))), token
        assert tok.enc.encode_single_token(token) == r
        assert tok.enc.decode_single_token_bytes(r) == token


def test_text_too_small_and_bad_vocab_size():
    with pytest.raises(ValueError, match="too small"):
        train_bpe("ab", 300)
    with pytest.raises(ValueError, match="257"):
        train_bpe(CORPUS, 256)


def test_split_approximation_covers_text_and_matches_on_ascii():
    rng = random.Random(3)
    s = random_unicode(rng, 2000)
    assert "".join(GPT2_SPLIT_APPROX.findall(s)) == s  # no character is dropped
    regex = pytest.importorskip("regex")  # tiktoken's own dependency; not ours
    ascii_text = "".join(rng.choice("abcXYZ019 _-.,'\n\t!?") for _ in range(3000)) + " it's I'll  \n"
    assert GPT2_SPLIT_APPROX.findall(ascii_text) == regex.findall(GPT2_PATTERN, ascii_text)


# -----------------------------------------------------------------------------
# encoding

def random_unicode(rng, n):
    pools = [
        "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789 .,;:!?'\"()-_",
        " \t\n\r\n    \u00a0\u3000",
        "éüñçøß",
        "\u0301\u0308\u0327",  # combining marks
        "東京日本語中文한국어",
        "привет",
        "😀🚀👍🏽🇫🇷\u200d",
        "<|>",
    ]
    out = []
    while len(out) < n:
        if rng.random() < 0.1:
            cp = rng.randint(0x20, 0x2FFFF)
            if not 0xD800 <= cp <= 0xDFFF:  # surrogates are not encodable as utf-8
                out.append(chr(cp))
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


def test_round_trip_unicode(tok):
    rng = random.Random(0)
    for n in [0, 1, 2, 5, 50, 500]:
        for _ in range(20):
            s = random_unicode(rng, n)
            assert tok.decode(tok.encode(s)) == s
    for s in ["\r\n\r\n", "\t\t x", " " * 100 + "x" + " " * 37, "e\u0301\u0301", "👩‍👩‍👧"]:
        assert tok.decode(tok.encode(s)) == s


def test_special_tokens_are_inert_in_text(tok):
    s = "hi <|endoftext|> <|user|><|assistant|> <|pad|>"
    ids = tok.encode(s)
    special = {tok.eot_id, tok.pad_id, tok.user_id, tok.assistant_id}
    assert not special & set(ids)
    assert tok.decode(ids) == s
    # ...while the real ids decode to their text
    assert tok.decode([tok.user_id, tok.assistant_id, tok.eot_id]) == "<|user|><|assistant|><|endoftext|>"


def test_special_ids_follow_ranks(tok):
    assert [tok.eot_id, tok.pad_id, tok.user_id, tok.assistant_id] == [512, 513, 514, 515]
    assert tok.vocab_size == 516 == tok.enc.n_vocab
    assert len(SPECIAL_TOKENS) == 4 and tok.name == "test"


def test_render_mask(tok):
    ids, mask = render(tok, "What is 2+2?", " It is 4.")
    p, r = tok.encode("What is 2+2?"), tok.encode(" It is 4.")
    assert ids == [tok.user_id] + p + [tok.assistant_id] + r + [tok.eot_id]
    assert mask == [0] * (len(p) + 2) + [1] * (len(r) + 1)

    ids, mask = render(tok, "What is 2+2?")
    assert ids[0] == tok.user_id and ids[-1] == tok.assistant_id and set(mask) == {0}
    assert len(ids) == len(mask) == len(p) + 2

    ids, mask = render(tok, "", "")  # empty response still teaches the model to stop
    assert ids == [tok.user_id, tok.assistant_id, tok.eot_id] and mask == [0, 0, 1]


# -----------------------------------------------------------------------------
# saving and loading

def test_save_load_round_trip(tok, tmp_path):
    ranks = tok.enc._mergeable_ranks
    path = str(tmp_path / "sub" / "tok.tiktoken")
    save_ranks(ranks, path)
    assert load_ranks(path) == ranks
    save_ranks({bytes([i]): i for i in range(256)}, path)  # overwrite: no stale cache
    assert len(load_ranks(path)) == 256
    save_ranks(ranks, path)
    assert Tokenizer.from_file(path).encode(CORPUS[:2000]) == tok.encode(CORPUS[:2000])


def test_to_dict_round_trip(tok):
    d = tok.to_dict()
    assert all(type(v) in (str, int, list) for v in d.values())
    tok2 = Tokenizer.from_dict(d)
    s = random_unicode(random.Random(1), 1000) + CORPUS[:1000]
    assert tok2.encode(s) == tok.encode(s)
    assert (tok2.name, tok2.vocab_size, tok2.eot_id) == (tok.name, tok.vocab_size, tok.eot_id)


def test_to_dict_loads_with_torch_weights_only(tok, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"tokenizer": tok.to_dict()}, tmp_path / "ckpt.pt")
    d = torch.load(tmp_path / "ckpt.pt", weights_only=True)["tokenizer"]
    assert Tokenizer.from_dict(d).encode("hello world") == tok.encode("hello world")


# -----------------------------------------------------------------------------
# training one from the command line: pretrain.py does it when no --tokenizer is given

def test_pretrain_trains_the_tokenizer_with_one_line_errors(tmp_path, capsys):
    from dataclasses import replace

    import pretrain
    cfg = pretrain.PretrainConfig(tokenizer="", vocab_size=300, out=str(tmp_path / "base.pt"))
    tok, path = pretrain.get_tokenizer(cfg, CORPUS.split("\n\n"))
    assert path == str(tmp_path / "tokenizer.tiktoken") and len(load_ranks(path)) == 300 and tok.vocab_size == 304
    assert Tokenizer(load_ranks(path)).encode(CORPUS[:200]) == tok.encode(CORPUS[:200])
    for bad in (256, 99999):  # too few ranks for one merge; more merges than the text allows
        with pytest.raises(SystemExit) as e:
            pretrain.get_tokenizer(replace(cfg, vocab_size=bad), CORPUS.split("\n\n"))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: --vocab_size={bad}: ") and err.count("\n") == 1
