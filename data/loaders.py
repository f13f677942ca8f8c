"""Strict loaders for the world's files. Every problem raises DataError naming the
file and line, e.g. `data/world/sft.jsonl:17: missing field 'response'`.

    prompts        {"id", "prompt", "category", "split", "lang", "meta"}
    demonstrations prompt fields + {"response", "labeler"}  (extra fields are kept)
    comparisons    {"prompt", "responses": [K >= 2 distinct strings],
                    "ranking": [best first, a permutation of range(K)], "labeler"}
                   + optional "id", "category" (and anything else, kept)
    corpus         plain text, documents separated by one empty line

Length checks (when max_tokens and count_tokens are given): count_tokens(prompt) +
count_tokens(response) must be <= max_tokens for every response. Pass a max_tokens
that already leaves room for whatever the renderer adds (special tokens, EOS).
"""
import json
import os


class DataError(ValueError):
    """Malformed data file; the message starts with 'path:line:'."""


_PROMPT_FIELDS = {"id": str, "prompt": str, "category": str, "split": str, "lang": str, "meta": dict}
_DEMO_FIELDS = dict(_PROMPT_FIELDS, response=str, labeler=str)
_COMP_FIELDS = {"prompt": str, "responses": list, "ranking": list, "labeler": str}
_COMP_OPTIONAL = {"id": str, "category": str}
_NONEMPTY = ("prompt", "response")


def _read_lines(path):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")


def _records(path, fields, optional=None):
    """Yield (line_no, record) for each non-blank line, checking fields and types."""
    for i, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{i}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: bad JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for name, typ in fields.items():
            if name not in rec:
                raise DataError(f"{where}: missing field '{name}'")
            if not isinstance(rec[name], typ):
                raise DataError(f"{where}: field '{name}' must be {typ.__name__}, "
                                f"got {type(rec[name]).__name__}")
        for name, typ in (optional or {}).items():
            if name in rec and not isinstance(rec[name], typ):
                raise DataError(f"{where}: field '{name}' must be {typ.__name__}, "
                                f"got {type(rec[name]).__name__}")
        for name in _NONEMPTY:
            if name in fields and not rec[name].strip():
                raise DataError(f"{where}: empty '{name}'")
        yield i, rec


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
    """List of prompt records (dicts)."""
    return [rec for _, rec in _records(path, _PROMPT_FIELDS)]


def load_demonstrations(path, max_tokens=None, count_tokens=None):
    """List of demonstration records: prompt fields + 'response', 'labeler'."""
    out = []
    for i, rec in _records(path, _DEMO_FIELDS):
        _check_len(f"{path}:{i}", rec["prompt"], rec["response"], max_tokens, count_tokens)
        out.append(rec)
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
        out.append(rec)
    return out


def read_corpus(path):
    """Documents of a corpus file (split on empty lines), stripped, none empty. Text that
    looks like a special token ("<|endoftext|>") is ordinary text: tokenizer.encode keeps
    it plain, so a user's file can never inject a control token."""
    lines = _read_lines(path)
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
    """Write records one JSON object per line (the format the loaders read)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
