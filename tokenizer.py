"""
Byte-level BPE tokenizer: train one (GPT-2 style), save it, and wrap it in tiktoken.

Every stage of the pipeline (pretrain, SFT, reward model, PPO, evaluate) turns text into
token ids through this file, and turns a (prompt, response) pair into ids + loss mask
through exactly one function, `render()`. Keeping that in one place is the point: if SFT
and PPO laid out a conversation differently, the policy would be trained on one format
and sampled in another.

pretrain.py trains one on its corpus when no --tokenizer is given (a few seconds on CPU).
Use it:

    from tokenizer import Tokenizer, render
    tok = Tokenizer.from_file("out/tok.tiktoken")   # or Tokenizer.from_hf_dir(gpt2_dir)
    ids, mask = render(tok, "What is 2+2?", " 4")

Design, and deviations from GPT-2 / InstructGPT:
1. Training (`train_bpe`) is ours, in pure Python; encoding/decoding is tiktoken's (Rust),
   because that is what runs millions of times. The trainer outputs tiktoken's
   "mergeable ranks" (bytes -> rank), so the two meet at a plain dict.
2. The trainer pre-splits text with a stdlib-`re` approximation of GPT-2's split pattern
   (stdlib `re` has no `\\p{L}`); tiktoken applies the true pattern at encode time. The
   approximation can only change which merges get learned, never correctness: any byte
   string is encodable because all 256 single bytes are ranks.
3. Four special tokens sit outside the BPE ranks, right after the last rank:
   <|endoftext|> (end of document / end of response), <|pad|>, <|user|>, <|assistant|>.
   With GPT-2's ranks this puts <|endoftext|> at 50256, exactly where GPT-2 has it.
4. `encode()` never produces special tokens: text typed by a user that happens to contain
   "<|endoftext|>" is encoded as ordinary bytes. Only `render()` inserts control tokens.
5. GPT-2's tokenizer comes from a Hugging Face directory's own vocab.json + merges.txt
   (`from_hf_dir`, offline, checked against transformers in tests/test_gpt2_dir.py); a
   checkpoint stores the ranks themselves, so it loads with no network.
"""
import base64
import heapq
import json
import os
import re
from collections import Counter, defaultdict

import tiktoken


SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|user|>", "<|assistant|>"]

# GPT-2's split pattern as tiktoken spells it ("r50k"/"gpt2"). The original from
# openai/gpt-2 is  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# tiktoken rewrote it with possessive quantifiers for speed; the splits are the same.
# It says: contractions, then runs of letters, of digits, of other symbols (each may take
# one leading space, which is why " the" is a token), then whitespace. BPE never merges
# across these pieces, so "dog." can never become one token.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

# The same pattern in stdlib `re`, used only for training. `re` has no Unicode property
# classes, so:  \p{L} (letter) ~ [^\W\d_] (word chars minus digits and underscore),
# \p{N} (number) ~ \d, and "anything else but whitespace" ~ [^\s\w] or "_". On printable
# ASCII the two agree exactly (tested); they differ on rarities such as combining marks,
# "½", or control characters that Python counts as whitespace.
GPT2_SPLIT_APPROX = re.compile(
    r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
)


# -----------------------------------------------------------------------------
# training: byte-level BPE

def merge(ids, pair, new_id):
    """Replace every occurrence of `pair` in `ids`, left to right, with `new_id`.
    merge([1, 1, 1, 2], (1, 1), 9) -> [9, 1, 2]"""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def pop_most_frequent(heap, pair_counts):
    """Pop heap entries until one is current (its count still matches pair_counts) -> (pair,
    count), or (None, 0) if the heap runs out."""
    while heap:
        neg_count, _, _, candidate = heapq.heappop(heap)
        if pair_counts.get(candidate, 0) == -neg_count:
            return candidate, -neg_count
    return None, 0


def merge_everywhere(pair, new_id, words, freqs, pair_counts, where, heap, vocab):
    """train_bpe's steps 6 and 7: merge `pair` into `new_id` in every word that contains it,
    keeping pair_counts, where and the heap up to date (all changed in place)."""
    # 6. rewrite only the words that contain the pair: take all of the word's old
    # pairs out of the counts, merge, put the new word's pairs back in. Pairs away
    # from the merge go out and straight back in, which is simpler than working out
    # exactly which neighbours changed, and costs little because words are short.
    touched = set()
    for i in where.pop(pair):
        w, f = words[i], freqs[i]
        for p in zip(w, w[1:]):
            pair_counts[p] -= f
            where[p].discard(i)
            touched.add(p)
        w = words[i] = merge(w, pair, new_id)
        for p in zip(w, w[1:]):
            pair_counts[p] += f
            where[p].add(i)
            touched.add(p)

    # 7. forget pairs that no longer occur (the merged pair among them) and push the
    # new counts of the others onto the heap
    for p in touched:
        c = pair_counts[p]
        if c == 0:
            del pair_counts[p]
            where.pop(p, None)
        else:
            heapq.heappush(heap, (-c, vocab[p[0]], vocab[p[1]], p))


def train_bpe(text: str, vocab_size: int) -> dict[bytes, int]:
    """Learn byte-level BPE ranks from `text`.

    Returns tiktoken "mergeable ranks": {token bytes: rank}, ranks 0..vocab_size-1.
    Ranks 0..255 are the single bytes in byte order; rank 256+k is the k-th merge.
    Special tokens are not included (Tokenizer adds them on top).
    """
    if vocab_size < 257:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + 1 merge), got {vocab_size}")

    # The textbook algorithm (minbpe, tiktoken/_educational.py) is: start from the raw
    # bytes, count every adjacent pair, merge the most frequent pair into a new token,
    # repeat. Recounting all pairs after every merge is O(text) per merge: about an
    # hour in Python for 4k merges on 3 MB. Two observations make it fast without changing the result:
    #   (a) merges never cross pre-token boundaries, and a corpus of a million words has
    #       only tens of thousands of *distinct* words. So we work on unique words, each
    #       weighted by how often it occurs.
    #   (b) a merge only changes the words that contain the merged pair. So we keep the
    #       pair counts up to date incrementally and only revisit those words.

    # 1. pre-tokenise and count unique words: {"the": 5123, " the": 40211, ...}
    word_counts = Counter(GPT2_SPLIT_APPROX.findall(text))
    # each word becomes a list of token ids; initially its utf-8 bytes (id == rank == byte)
    words = [list(w.encode("utf-8")) for w in word_counts]
    freqs = list(word_counts.values())

    vocab = [bytes([i]) for i in range(256)]  # id -> token bytes (an id IS its rank)
    ranks = {b: i for i, b in enumerate(vocab)}  # token bytes -> id

    # 2. count every adjacent pair once, remembering which words contain it
    pair_counts = defaultdict(int)  # (id, id) -> occurrences in the whole text
    where = defaultdict(set)  # (id, id) -> indices of the unique words that contain it
    for i, (w, f) in enumerate(zip(words, freqs)):
        for pair in zip(w, w[1:]):
            pair_counts[pair] += f
            where[pair].add(i)

    # 3. a max-heap of pairs (heapq is a min-heap, so counts are negated). Ties are broken
    # by the pair's bytes, smallest first, so training is deterministic. When a pair's
    # count changes we push a fresh entry and leave the old one in place ("lazy
    # deletion"): when an entry is popped we check it against pair_counts and skip it
    # if it is stale. That is far cheaper than re-scanning all pairs for the max.
    heap = [(-c, vocab[a], vocab[b], (a, b)) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    n_merges = vocab_size - 256
    while len(vocab) < vocab_size:
        # 4. pop the most frequent pair, skipping stale entries
        pair, _ = pop_most_frequent(heap, pair_counts)
        if pair is None:
            raise ValueError(
                f"text too small: only {len(vocab) - 256} merges possible, "
                f"{n_merges} needed for vocab_size={vocab_size}"
            )

        # 5. mint the new token. Its bytes are the concatenation of two existing tokens,
        # both of lower rank: exactly what tiktoken needs to rebuild it by merging.
        # Should the same bytes ever come from a different split (b"ab"+b"c" after
        # b"a"+b"bc"), reuse that token: ranks are keyed by bytes, a duplicate would
        # silently overwrite an entry and leave a hole in the ranks.
        token = vocab[pair[0]] + vocab[pair[1]]
        new_id = ranks.get(token)
        if new_id is None:
            new_id = len(vocab)
            vocab.append(token)
            ranks[token] = new_id

        # 6-7. rewrite the words that contain the pair, update the pair counts and the heap
        merge_everywhere(pair, new_id, words, freqs, pair_counts, where, heap, vocab)

    return ranks


# -----------------------------------------------------------------------------
# saving and loading: tiktoken's format, one "base64(token) rank" line per token

def ranks_to_text(ranks: dict[bytes, int]) -> str:
    return "".join(f"{base64.b64encode(t).decode('ascii')} {r}\n"
                   for t, r in sorted(ranks.items(), key=lambda kv: kv[1]))


def ranks_from_text(text: str) -> dict[bytes, int]:
    ranks = {}
    for line in text.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def save_ranks(ranks: dict[bytes, int], path: str) -> None:
    # not tiktoken.load.dump_tiktoken_bpe: it needs the `blobfile` package.
    # Write to a temp file then rename, so a crash never leaves a half-written tokenizer.
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(ranks_to_text(ranks))
    os.replace(tmp, path)


def load_ranks(path: str) -> dict[bytes, int]:
    # not tiktoken.load.load_tiktoken_bpe: it caches files in a temp dir keyed by their
    # *path*, so after retraining into the same path it would hand back the old ranks.
    with open(path, encoding="ascii") as f:
        return ranks_from_text(f.read())


# -----------------------------------------------------------------------------
# GPT-2's own files: vocab.json + merges.txt, as a Hugging Face GPT-2 directory holds them


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (openai/gpt-2 encoder.py). vocab.json and
    merges.txt spell every token's bytes with these characters, so that no token contains a
    space, newline or control byte: the byte b" " is "Ġ", b"\\n" is "Ċ". Printable Latin-1
    bytes map to themselves; the 68 others to chr(256), chr(257), ... in byte order."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def gpt2_ranks(vocab: dict, merges: list, vocab_where: str, merges_where: str) -> dict[bytes, int]:
    """GPT-2's vocabulary ({token string: id}, with <|endoftext|>) and merges ([(where, a, b),
    ...], highest priority first) -> tiktoken mergeable ranks {token bytes: id}, without
    <|endoftext|>. Errors are ValueError whose message starts with the file (and line).

    tiktoken uses the id of a token as its merge priority: at each step it merges the
    adjacent pair whose concatenation has the lowest id. GPT-2's own code instead merges
    the pair listed earliest in merges.txt. The two agree when the k-th merge creates token
    id 256 + k and ids 0..255 are the single bytes, which is how GPT-2's files are laid out
    (and what tiktoken's own gpt2 loader, `data_gym_to_mergeable_bpe_ranks`, asserts). A
    file pair laid out otherwise would need the model's embedding rows renumbered; we
    refuse it with the first merge that breaks the rule.
    """
    byte_of = {c: b for b, c in bytes_to_unicode().items()}

    def to_bytes(token, where):
        try:
            return bytes(byte_of[c] for c in token)
        except KeyError as e:
            raise ValueError(f"{where}: token {token!r} has character {e.args[0]!r}, which is not in "
                             "GPT-2's byte-to-unicode table: not a byte-level BPE vocabulary") from None

    if not isinstance(vocab, dict) or not all(isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()):
        raise ValueError(f"{vocab_where}: expected a JSON object {{token string: integer id}}")
    vocab = dict(vocab)
    eot = vocab.pop("<|endoftext|>", None)
    # GPT-2 puts <|endoftext|> right after the BPE tokens (50256); Tokenizer does the same
    if eot != len(vocab):
        raise ValueError(f"{vocab_where}: '<|endoftext|>' has id {eot}, expected {len(vocab)} "
                         "(right after the BPE tokens, as in GPT-2)")
    ranks = {to_bytes(t, vocab_where): i for t, i in vocab.items()}
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{vocab_where}: ids must be exactly 0..{len(ranks) - 1} plus '<|endoftext|>'")
    single = [b for b in range(256) if ranks.get(bytes([b]), 256) >= 256]
    if single:
        raise ValueError(f"{vocab_where}: ids 0..255 must be the 256 single bytes; byte {single[0]} is "
                         f"{'missing' if bytes([single[0]]) not in ranks else 'elsewhere'}")
    for k, (where, a, b) in enumerate(merges):
        a, b = to_bytes(a, where), to_bytes(b, where)
        new = ranks.get(a + b)
        if new != 256 + k or not (ranks.get(a, new) < new and ranks.get(b, new) < new):
            raise ValueError(f"{where}: merge {a!r} + {b!r} creates id {new}, expected {256 + k} from "
                             "parts of lower id: the ids do not follow the merge order, which tiktoken "
                             "needs (it merges by id)")
    if 256 + len(merges) != len(ranks):
        raise ValueError(f"{merges_where}: {len(merges)} merges for {len(ranks)} BPE tokens, expected "
                         f"{len(ranks) - 256} (every token but the 256 bytes is one merge)")
    return ranks


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({e})") from None


def read_gpt2_tokenizer_files(path: str) -> tuple[dict, list, str, str]:
    """A Hugging Face GPT-2 directory -> gpt2_ranks' arguments: (vocab, merges, where each is)
    from vocab.json + merges.txt (GPT-2's own files, what the Hub holds) or, failing
    those, tokenizer.json (all that transformers >= 5 `save_pretrained` writes)."""
    vocab_path, merges_path = os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt")
    tj_path = os.path.join(path, "tokenizer.json")
    if os.path.isfile(vocab_path) or os.path.isfile(merges_path) or not os.path.isfile(tj_path):
        for p in (vocab_path, merges_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"{p} not found: a GPT-2 directory needs the tokenizer's vocab.json "
                                        "and merges.txt (or tokenizer.json)")
        try:
            with open(merges_path, encoding="utf-8") as f:
                lines = f.read().splitlines()  # safe: no line-break character is in the byte table
        except UnicodeDecodeError as e:
            raise ValueError(f"{merges_path}: not UTF-8 (byte offset {e.start})") from None
        merges = []
        for line_no, line in enumerate(lines, start=1):
            if not line.strip() or (line_no == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"{merges_path}:{line_no}: expected two tokens separated by one space, "
                                 f"got {line!r}")
            merges.append((f"{merges_path}:{line_no}", *parts))
        return read_json(vocab_path), merges, vocab_path, merges_path

    # tokenizer.json: the same vocabulary and merges, plus settings that must be GPT-2's
    tj = read_json(tj_path)
    model = tj.get("model") if isinstance(tj, dict) else None
    pre = tj.get("pre_tokenizer") or {} if isinstance(tj, dict) else None
    if not (isinstance(model, dict) and isinstance(pre, dict)):
        raise ValueError(f"{tj_path}: expected an object with 'model' and 'pre_tokenizer' objects")
    expected = {"model.type": (model.get("type"), "BPE"), "pre_tokenizer.type": (pre.get("type"), "ByteLevel"),
                "pre_tokenizer.use_regex": (pre.get("use_regex", True), True),
                "pre_tokenizer.add_prefix_space": (pre.get("add_prefix_space", False), False),
                "normalizer": (tj.get("normalizer"), None)}
    for key, (got, want) in expected.items():
        if got != want:
            raise ValueError(f"{tj_path}: {key} is {got!r}, GPT-2's is {want!r}")
    vocab = model.get("vocab")
    for t in tj.get("added_tokens") or []:  # <|endoftext|> may live only here
        if isinstance(t, dict) and t.get("content") == "<|endoftext|>" and isinstance(vocab, dict):
            vocab = {**vocab, "<|endoftext|>": t.get("id")}
    merges = []
    for i, m in enumerate(model.get("merges") or []):
        parts = m.split(" ") if isinstance(m, str) else m  # tokenizer.json spells a merge "a b" or ["a", "b"]
        if not (isinstance(parts, list) and len(parts) == 2 and all(isinstance(x, str) and x for x in parts)):
            raise ValueError(f"{tj_path}: model.merges[{i}] is {m!r}, expected two tokens")
        merges.append((f"{tj_path}: model.merges[{i}]", *parts))
    return vocab, merges, f"{tj_path}: model.vocab", f"{tj_path}: model.merges"


# -----------------------------------------------------------------------------
# the tokenizer every stage uses

class Tokenizer:
    """tiktoken.Encoding with our four special tokens, ids right after the last rank."""

    def __init__(self, ranks: dict[bytes, int], name: str = "bpe", pat_str: str = GPT2_PATTERN):
        n = len(ranks)
        if sorted(ranks.values()) != list(range(n)):
            raise ValueError("ranks must be exactly 0..len(ranks)-1")
        special = {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}
        self.enc = tiktoken.Encoding(name, pat_str=pat_str, mergeable_ranks=ranks,
                                     special_tokens=special)
        self.name = name
        self.vocab_size = n + len(SPECIAL_TOKENS)
        self.eot_id, self.pad_id, self.user_id, self.assistant_id = (special[s] for s in SPECIAL_TOKENS)

    @classmethod
    def from_file(cls, path: str, name: str = "bpe") -> "Tokenizer":
        return cls(load_ranks(path), name=name)

    @classmethod
    def from_hf_dir(cls, path: str) -> "Tokenizer":
        """GPT-2's tokenizer from a local Hugging Face GPT-2 directory (vocab.json + merges.txt,
        or tokenizer.json), no network: the same ids as transformers' GPT2Tokenizer, with
        <|endoftext|> at its vocabulary id (50256) and <|pad|>, <|user|>, <|assistant|> after it.
        Serialised by its ranks (`to_dict`): checkpoints load offline."""
        ranks = gpt2_ranks(*read_gpt2_tokenizer_files(path))
        cfg_path = os.path.join(path, "config.json")
        if os.path.isfile(cfg_path):  # tokenizer files from another model would index past its embedding
            try:
                with open(cfg_path, encoding="utf-8") as f:
                    n_model = json.load(f).get("vocab_size", len(ranks) + 1)
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
                raise ValueError(f"{cfg_path}: not a JSON object ({e})") from None
            if n_model < len(ranks) + 1:
                raise ValueError(f"{cfg_path}: vocab_size {n_model} is smaller than the {len(ranks) + 1} tokens "
                                 "of vocab.json: the tokenizer files belong to another model")
        return cls(ranks, name="gpt2-hf")

    def encode(self, text: str) -> list[int]:
        # encode_ordinary: special-token text in user data stays plain bytes. (tiktoken's
        # encode() would instead raise on it, or with allowed_special inject the control
        # token: a prompt-injection hole in a chat model.)
        return self.enc.encode_ordinary(text)

    def decode(self, ids) -> str:
        # errors="replace": a sampled sequence can stop in the middle of a multi-byte
        # character; show U+FFFD rather than crash.
        return self.enc.decode(list(ids), errors="replace")

    def to_dict(self) -> dict:
        # plain str/int only: stored in checkpoints loaded with torch.load(weights_only=True)
        return {"name": self.name, "ranks": ranks_to_text(self.enc._mergeable_ranks)}

    @classmethod
    def from_dict(cls, d: dict) -> "Tokenizer":
        return cls(ranks_from_text(d["ranks"]), name=d["name"])


def render(tok: Tokenizer, prompt: str, response: str | None = None) -> tuple[list[int], list[int]]:
    """Turn a (prompt, response) pair into token ids and a loss mask. Every stage uses this.

        ids  = [<|user|>] + encode(prompt) + [<|assistant|>] + encode(response) + [<|endoftext|>]
        mask =     0      +    0 ... 0     +        0        +     1 ... 1      +       1

    mask[i] == 1 exactly on the tokens the model is trained to produce: the response and
    the <|endoftext|> that ends it (so the model learns to stop). With response=None you
    get just the prompt part, ending in <|assistant|>, ready for sampling.

    Worked example, with a tokenizer where "2+2?" is the 4 tokens '2' '+' '2' '?' and
    " 4" is one token ' 4':
        render(tok, "2+2?", " 4")
        ids:  [<|user|>, '2', '+', '2', '?', <|assistant|>, ' 4', <|endoftext|>]
        mask: [    0,     0,   0,   0,   0,        0,         1,        1      ]
        render(tok, "2+2?") -> ids [<|user|>, '2', '+', '2', '?', <|assistant|>], mask all 0

    Prompt and response are encoded separately, so no token straddles the boundary and
    the response tokens do not depend on the prompt. Note decode(encode(x)) == x but
    encode(decode(ids)) need not equal ids: in PPO keep the sampled ids, don't re-encode.
    """
    ids = [tok.user_id] + tok.encode(prompt) + [tok.assistant_id]
    mask = [0] * len(ids)
    if response is not None:
        response_ids = tok.encode(response) + [tok.eot_id]
        ids += response_ids
        mask += [1] * len(response_ids)
    return ids, mask


def decode_response(tok, ids, mask=None):
    """The text of one generated response: the tokens where mask is 1 (all if None), without
    EOT and padding. decode_response(tok, [.., eot_id, pad_id], [1, .., 1, 0]) -> "..."."""
    keep = ids if mask is None else [t for t, m in zip(ids, mask) if m]
    return tok.decode([t for t in keep if t not in (tok.eot_id, tok.pad_id)])


def decode_responses(tok, out):
    """The texts of a batch that model.generate returned (its `response` and `response_mask`)."""
    return [decode_response(tok, r, m) for r, m in zip(out["response"].tolist(), out["response_mask"].tolist())]
