"""Strict loaders for the world's files and your own. Every problem raises DataError naming
the file and line, e.g. `data/world/sft.jsonl:17: missing field 'response'`.

    prompts        {"prompt"} + optional "id", "category", "split", "lang", "meta"
                   (the world's files have them all; any file of the other two kinds works too)
    demonstrations {"prompt", "response"} + optional prompt fields and "labeler"
    comparisons    {"prompt", "responses": [K >= 2 distinct strings],
                    "ranking": [best first, a permutation of range(K)]}
                   + optional "id", "category", "labeler", "split", "lang", "meta"
    corpus         plain UTF-8 text, documents separated by one empty line

Optional fields are type-checked when given; when absent, demonstrations and comparisons
get `id` = "<file stem>-<line>", `category` = "unknown", `labeler` = "unknown", so the
minimal records of the README load as they are. `meta` (the world's gold-judge fields) is
never invented: the stages skip gold-judge metrics for records without it. Extra fields
are kept.

Length checks (when max_tokens and count_tokens are given): count_tokens(prompt) +
count_tokens(response) must be <= max_tokens for every response. Pass a max_tokens
that already leaves room for whatever the renderer adds (special tokens, EOS).
"""
import codecs
import json
import os


class DataError(ValueError):
    """Malformed data file; the message starts with 'path:line:'."""


_PROMPT_OPTIONAL = {"id": str, "category": str, "split": str, "lang": str, "meta": dict}
_DEMO_FIELDS = {"prompt": str, "response": str}
_DEMO_OPTIONAL = {"id": str, "category": str, "split": str, "lang": str, "meta": dict, "labeler": str}
_COMP_FIELDS = {"prompt": str, "responses": list, "ranking": list}
_COMP_OPTIONAL = {"id": str, "category": str, "split": str, "lang": str, "meta": dict, "labeler": str}
_NONEMPTY = ("prompt", "response")


def read_text(path):
    """The whole file as str, newlines normalised to "\\n" as open() does. Not UTF-8 ->
    DataError with the line and byte offset, not a UnicodeDecodeError traceback."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, "rb") as f:
        return decode_text(f.read(), path)


def decode_text(data, path):
    """UTF-8 bytes of the file `path` -> str (see read_text). A leading UTF-8 signature (BOM),
    which Windows editors add, is dropped."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start
        line_no = data.count(b"\n", 0, at) + 1
        raise DataError(f"{path}:{line_no}: not UTF-8 text (byte offset {at}: {data[at:at + 4]!r}...); "
                        "save the file as UTF-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _records(path, fields, optional=None):
    """Yield (line_no, record) for each non-blank line, checking fields and types."""
    for i, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: bad JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for name, typ in {**fields, **(optional or {})}.items():
            if name not in rec:
                if name in fields:
                    raise DataError(f"{where}: missing field '{name}'")
            elif not isinstance(rec[name], typ):
                raise DataError(f"{where}: field '{name}' must be {typ.__name__}, "
                                f"got {type(rec[name]).__name__}")
        for name in _NONEMPTY:
            if name in fields and not rec[name].strip():
                raise DataError(f"{where}: empty '{name}'")
        yield i, rec


def _fill_defaults(rec, path, line_no, labeler=True):
    """What the stages print and log for a record, when your own file leaves it out."""
    stem = os.path.splitext(os.path.basename(path))[0]
    rec.setdefault("id", f"{stem}-{line_no}")
    rec.setdefault("category", "unknown")
    if labeler:
        rec.setdefault("labeler", "unknown")
    return rec


def has_meta(records):
    """True if every record carries the world's `meta`, which the gold judge needs."""
    return all("meta" in r for r in records)


def _check_len(where, prompt, response, max_tokens, count_tokens, what="response"):
    if max_tokens is None:
        return
    if count_tokens is None:
        raise ValueError("max_tokens needs count_tokens (a function text -> int)")
    n = count_tokens(prompt) + count_tokens(response)
    if n > max_tokens:
        raise DataError(f"{where}: prompt+{what} is {n} tokens, longer than the context "
                        f"(max_tokens={max_tokens})")


def load_prompts(path):
    """List of prompt records: 'prompt', 'id', 'category' (+ any others, kept)."""
    return [_fill_defaults(rec, path, i, labeler=False) for i, rec in _records(path, {"prompt": str}, _PROMPT_OPTIONAL)]


def load_probes(path):
    """Fact-completion probes {"prefix", "answer"}: a model that knows the fact continues the
    prefix with the answer (pretrain.py and evaluate.py measure it)."""
    probes = [rec for _, rec in _records(path, {"prefix": str, "answer": str})]
    for i, rec in enumerate(probes):
        if not rec["answer"].strip():
            raise DataError(f"{path}: probe {i + 1} has an empty 'answer'")
    return probes


def load_demonstrations(path, max_tokens=None, count_tokens=None):
    """List of demonstration records: 'prompt', 'response', 'id', 'category', 'labeler' (+ any others)."""
    out = []
    for i, rec in _records(path, _DEMO_FIELDS, _DEMO_OPTIONAL):
        _check_len(f"{path}:{i}", rec["prompt"], rec["response"], max_tokens, count_tokens)
        out.append(_fill_defaults(rec, path, i))
    return out


def load_comparisons(path, max_tokens=None, count_tokens=None):
    """List of comparison records; ranking[0] is the index of the best response."""
    out = []
    for i, rec in _records(path, _COMP_FIELDS, _COMP_OPTIONAL):
        where = f"{path}:{i}"
        resp, ranking = rec["responses"], rec["ranking"]
        if len(resp) < 2:
            raise DataError(f"{where}: need at least 2 responses, got {len(resp)}")
        for j, r in enumerate(resp):
            if not isinstance(r, str):
                raise DataError(f"{where}: responses[{j}] must be str, got {type(r).__name__}")
            if not r.strip():
                raise DataError(f"{where}: empty responses[{j}]")
            _check_len(where, rec["prompt"], r, max_tokens, count_tokens, f"responses[{j}]")
        if len(set(resp)) != len(resp):
            raise DataError(f"{where}: duplicate responses")
        if (not all(isinstance(x, int) and not isinstance(x, bool) for x in ranking)
                or sorted(ranking) != list(range(len(resp)))):
            raise DataError(f"{where}: ranking {ranking} is not a permutation of range({len(resp)})")
        out.append(_fill_defaults(rec, path, i))
    return out


def read_corpus(path):
    """Documents of a corpus file (split on empty lines), stripped, none empty. Text that
    looks like a special token ("<|endoftext|>") is ordinary text: tokenizer.encode keeps
    it plain, so a user's file can never inject a control token."""
    lines = read_text(path).split("\n")
    docs, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            docs.append("\n".join(cur))
            cur = []
    if cur:
        docs.append("\n".join(cur))
    if not docs:
        raise DataError(f"{path}: no documents")
    return docs


def write_jsonl(path, records):
    """Write records one JSON object per line (the format the loaders read), atomically: to
    `path.tmp`, then renamed, so an interrupted run never leaves half a file behind."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def ranked_pairs(ranking):
    """A comparison's ranking (best first) -> all C(K,2) (winner, loser) index pairs: what a
    ranking of K answers says. reward.py and dpo.py both learn from every pair.
    ranked_pairs([2, 0, 1]) -> [(2, 0), (2, 1), (0, 1)]"""
    return [(ranking[a], ranking[b]) for a in range(len(ranking)) for b in range(a + 1, len(ranking))]


def flatten_comparisons(comps):
    """Comparison records -> (prompts, answers, groups): every answer with its prompt, record
    after record, and per record (offset of its first answer, its ranking best first): how
    reward.py and dpo.py lay out a batch for their C(K,2) losses."""
    prompts, answers, groups = [], [], []
    for c in comps:
        groups.append((len(answers), c["ranking"]))
        prompts += [c["prompt"]] * len(c["responses"])
        answers += c["responses"]
    return prompts, answers, groups
