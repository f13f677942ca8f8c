"""
Convert public instruction / preference datasets into this project's formats: demonstrations
for sft.py, comparisons for reward.py (the jsonl files data/loaders.py reads).

    python -m public_data.convert FORMAT INPUT OUTPUT [--kind=sft|rm] [--max_tokens=N --tokenizer=PATH]

    python -m public_data.convert hh        helpful-base/train.jsonl.gz  out/hh_rm.jsonl
    python -m public_data.convert hh        helpful-base/train.jsonl.gz  out/hh_sft.jsonl --kind=sft
    python -m public_data.convert summarize comparisons/batch3.json      out/tldr_rm.jsonl
    python -m public_data.convert alpaca    alpaca_data.json             out/alpaca_sft.jsonl
    python -m public_data.convert dolly     databricks-dolly-15k.jsonl   out/dolly_sft.jsonl
    python -m public_data.convert oasst     2023-04-12_oasst_ready.trees.jsonl.gz out/oasst_rm.jsonl \\
                                     --max_tokens=1021 --tokenizer=path/to/gpt2_dir

then    python sft.py --init=path/to/gpt2_dir --data=out/alpaca_sft.jsonl
        python reward.py --init=out/sft.pt --data=out/hh_rm.jsonl --val= --val_heldout= --demos=out/hh_sft.jsonl

FORMAT     INPUT (.json or .jsonl, either may be .gz)                       --kind (first = default)
hh         Anthropic HH-RLHF {"chosen", "rejected"}                         rm, sft
summarize  OpenAI summarize-from-feedback comparisons {"info", "summaries", rm, sft
           "choice"}
alpaca     a JSON list (or jsonl) of {"instruction", "input", "output"}     sft
dolly      Databricks Dolly {"instruction", "context", "response",          sft
           "category"}
oasst      OpenAssistant oasst1/oasst2 message trees {"prompt": {...,       rm, sft
           "replies": [...]}}, or the flat messages {"message_id",
           "parent_id", "role", "text", "rank"}

hh: the chosen and rejected transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...") must agree up
to their last "\\n\\nAssistant:"; that is the prompt, what follows are the two responses.
summarize: info = {"post", "title", "subreddit"} (Reddit) or {"article"} (CNN/DM), turned into
OpenAI's query ("SUBREDDIT: r/...\\n\\nTITLE: ...\\n\\nPOST: ...\\n\\nTL;DR:"); choice = the better
of the two summaries. alpaca/dolly: prompt = instruction, plus "\\n\\n" + input/context when
that is not empty. oasst: the assistant replies to one user message that carry a rank form
one K-wise ranking (rank 0 best); deleted messages and trees not "ready_for_export" are left out.

--kind=rm writes comparisons {"prompt", "responses", "ranking" (best first), "id", "category"
(+ "labeler", "lang" where the data has them)}; --kind=sft writes demonstrations {"prompt",
"response", "id", "category", ...}: the best response of each comparison (for oasst also a
lone unranked reply). --max_tokens (with --tokenizer = a GPT-2 directory, a .tiktoken file
or a checkpoint) skips examples whose prompt + any response is longer, as the trainers would
otherwise stop on them: use the model's context minus 3 (1021 for GPT-2).

Choices, numbered as in the stage files:
1. Multi-turn dialogues (hh, oasst): `render()` has one user turn and one assistant turn,
   so the earlier turns stay in the prompt as the plain transcript text
   "Human: ...\\n\\nAssistant: ...\\n\\nHuman: <last message>" (HH's own spelling), and a
   one-turn prompt is just the message. It is inert text (`encode` never makes control
   tokens) and keeps `render`, which every stage shares, a single-turn function.
2. Newlines are kept. The world's prompts happen to be one line, but neither the loaders
   nor `render` forbid "\\n" (the jsonl escapes it; BPE encodes it like any byte).
   Prompts and responses are stripped of surrounding whitespace.
3. Malformed input (not JSON, a missing or mistyped key) stops with `file:line: ...`;
   well-formed examples the trainers cannot use (prompts that differ, identical or empty
   responses, tied ranks, too long) are skipped and counted by reason.
4. Standard library only, like data/; --tokenizer imports tokenizer.py.
"""
import gzip
import json
import os
import re
import sys
import zlib
from collections import Counter

from data.loaders import DataError, decode_text, load_comparisons, load_demonstrations, write_jsonl

FORMATS = {"hh": ("rm", "sft"), "summarize": ("rm", "sft"), "alpaca": ("sft",), "dolly": ("sft",),
           "oasst": ("rm", "sft")}  # the kinds each format can give, default first
OPTIONS = {"kind": "", "max_tokens": "0", "tokenizer": ""}
JSON_TYPE = {str: "a string", int: "an integer", list: "an array", dict: "an object"}


# -----------------------------------------------------------------------------
# reading: every record with the place it came from, for error messages


def open_bytes(path):
    """A binary file object for .jsonl/.json, or for their .gz (decompressed as it is read)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_jsonl(path):
    """Yield (where, record) for each non-blank line of a .jsonl or .jsonl.gz file, where =
    "path:line". Bad JSON or non-UTF-8 bytes raise DataError naming the line."""
    offset = 0  # bytes before this line, for the not-UTF-8 message
    try:
        with open_bytes(path) as f:
            for i, raw in enumerate(f, start=1):
                where = f"{path}:{i}"
                try:
                    line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: not UTF-8 text (byte offset {offset + e.start}: "
                                    f"{raw[e.start:e.start + 4]!r}...)") from None
                offset += len(raw)
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{where}: bad JSON ({e.msg}, column {e.colno})") from None
                yield where, rec
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None


def read_json_list(path):
    """Yield (where, record) from a file holding one JSON list (Alpaca's format); where =
    "path: item i". A file that does not start with '[' is read as jsonl instead."""
    try:
        with open_bytes(path) as f:
            data = f.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a valid gzip file ({e})") from None
    text = decode_text(data, path)
    if not text.lstrip().startswith("["):
        yield from read_jsonl(path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: bad JSON ({e.msg}, column {e.colno})") from None
    for i, rec in enumerate(items):
        yield f"{path}: item {i}", rec


def number(where):
    """The line (or item) number at the end of `where`: "a.jsonl:17" -> "17"."""
    return re.search(r"\d+$", where).group()


def get(rec, key, typ, where, optional=False):
    """rec[key], checked: a missing or mistyped key raises DataError naming where and key.
    None (JSON null) for an optional key counts as absent."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if rec.get(key) is None and optional:
        return None
    if key not in rec:
        raise DataError(f"{where}: missing key '{key}' ({JSON_TYPE[typ]})")
    value = rec[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise DataError(f"{where}: key '{key}' must be {JSON_TYPE[typ]}, got {json.dumps(value)[:40]}")
    return value


# -----------------------------------------------------------------------------
# the converters: convert_X(path, kind) yields (prompt, responses, ranking best first, extra
# fields) for each example to keep, or a string: the reason one example is skipped


def dialogue_prompt(turns):
    """[(role, text), ...] ending with the user's message -> one prompt string (choice 1).
    dialogue_prompt([("Human", "Hi")]) -> "Hi"
    dialogue_prompt([("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "Bye")])
        -> "Human: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Bye"
    """
    if len(turns) == 1:
        return turns[0][1]
    return "\n\n".join(f"{role}: {text}" for role, text in turns)


def split_hh(transcript):
    """HH's "\\n\\nHuman: a\\n\\nAssistant: b" -> (prompt turns, last response), or a skip reason."""
    cut = transcript.rfind("\n\nAssistant:")
    if cut < 0:
        return "no '\\n\\nAssistant:' turn"
    head, response = transcript[:cut], transcript[cut + len("\n\nAssistant:"):]
    parts = re.split(r"\n\n(Human|Assistant):", head)  # [before, role, text, role, text, ...]
    if parts[0].strip() or len(parts) < 3 or parts[1] != "Human":
        return "transcript does not start with '\\n\\nHuman:'"
    turns = [(role, text.strip()) for role, text in zip(parts[1::2], parts[2::2])]
    return turns, response


def convert_hh(path, kind):
    for where, rec in read_jsonl(path):
        chosen, rejected = get(rec, "chosen", str, where), get(rec, "rejected", str, where)
        a, b = split_hh(chosen), split_hh(rejected)
        if isinstance(a, str) or isinstance(b, str):
            yield a if isinstance(a, str) else b
        elif a[0] != b[0]:
            yield "chosen and rejected prompts differ"
        else:
            yield dialogue_prompt(a[0]), [a[1], b[1]], [0, 1], {"id": f"hh-{number(where)}", "category": "hh-rlhf"}


def convert_summarize(path, kind):
    for where, rec in read_jsonl(path):
        info = get(rec, "info", dict, where)
        post, article = get(info, "post", str, where, True), get(info, "article", str, where, True)
        # the query formats of openai/summarize-from-feedback (utils/experiment_helpers.py)
        if post is not None:  # Reddit TL;DR
            prompt = (f"SUBREDDIT: r/{get(info, 'subreddit', str, where, True) or ''}\n\n"
                      f"TITLE: {get(info, 'title', str, where, True) or ''}\n\nPOST: {post}\n\nTL;DR:")
        elif article is not None:  # the CNN/DM part of the data
            prompt = f"Article:\n{article}\n\nTL;DR:"
        else:
            raise DataError(f"{where}: 'info' needs a 'post' or an 'article' (a string)")
        summaries = get(rec, "summaries", list, where)
        if len(summaries) != 2:
            raise DataError(f"{where}: 'summaries' must hold 2 summaries, got {len(summaries)}")
        texts = [get(s, "text", str, f"{where}: summaries[{j}]") for j, s in enumerate(summaries)]
        choice = get(rec, "choice", int, where)
        if choice not in (0, 1):
            raise DataError(f"{where}: 'choice' must be 0 or 1, got {choice}")
        extra = {"id": f"summarize-{number(where)}", "category": "summarize"}
        worker = get(rec, "worker", str, where, True)
        if worker:
            extra["labeler"] = worker
        yield prompt, texts, [choice, 1 - choice], extra


def convert_alpaca(path, kind):
    for where, rec in read_json_list(path):
        instruction, output = get(rec, "instruction", str, where), get(rec, "output", str, where)
        context = (get(rec, "input", str, where, True) or "").strip()
        prompt = instruction.strip() + (f"\n\n{context}" if context else "")
        yield prompt, [output], [0], {"id": f"alpaca-{number(where)}", "category": "alpaca"}


def convert_dolly(path, kind):
    for where, rec in read_jsonl(path):
        instruction, response = get(rec, "instruction", str, where), get(rec, "response", str, where)
        context = (get(rec, "context", str, where, True) or "").strip()
        category = get(rec, "category", str, where, True) or "dolly"
        prompt = instruction.strip() + (f"\n\n{context}" if context else "")
        yield prompt, [response], [0], {"id": f"dolly-{number(where)}", "category": category}


def check_message(msg, where):
    """One OpenAssistant message: the keys the conversion reads, type-checked."""
    role = get(msg, "role", str, where)
    if role not in ("prompter", "assistant"):
        raise DataError(f"{where}: 'role' must be 'prompter' or 'assistant', got {role!r}")
    get(msg, "text", str, where)
    get(msg, "rank", int, where, optional=True)
    get(msg, "replies", list, where, optional=True)


def oasst_examples(msg, where, history, kind):
    """Walk one message tree depth first. At every user (prompter) message: its ranked
    assistant replies -> one ranking (rm), or its best reply -> one demonstration (sft)."""
    check_message(msg, where)
    replies = [r for r in msg.get("replies") or [] if not (isinstance(r, dict) and r.get("deleted"))]
    for j, r in enumerate(replies):
        check_message(r, f"{where}.replies[{j}]")
    turns = history + [("Human" if msg["role"] == "prompter" else "Assistant", msg["text"].strip())]
    if msg["role"] == "prompter":
        ranked = sorted((r for r in replies if r["role"] == "assistant" and r.get("rank") is not None),
                        key=lambda r: r["rank"])
        if kind == "sft" and not ranked and len(replies) == 1 and replies[0]["role"] == "assistant":
            ranked = replies  # a lone reply: nobody ranked it, but it is a human demonstration
        extra = {"id": f"oasst-{msg.get('message_id', where)}", "category": "oasst"}
        if isinstance(msg.get("lang"), str):
            extra["lang"] = msg["lang"]
        if len(ranked) < (2 if kind == "rm" else 1):
            yield "fewer than 2 ranked assistant replies" if kind == "rm" else "no assistant reply"
        elif len({r["rank"] for r in ranked}) < len(ranked):
            yield "tied ranks"
        else:
            yield dialogue_prompt(turns), [r["text"] for r in ranked], list(range(len(ranked))), extra
    for j, r in enumerate(replies):
        yield from oasst_examples(r, f"{where}.replies[{j}]", turns, kind)


def convert_oasst(path, kind):
    messages = {}  # flat export: message_id -> message, assembled into trees at the end
    for where, rec in read_jsonl(path):
        if isinstance(rec, dict) and isinstance(rec.get("prompt"), dict):  # one tree per line
            if rec.get("tree_state", "ready_for_export") != "ready_for_export":
                yield "tree not ready_for_export"  # the "all" export also holds unreviewed trees
                continue
            yield from oasst_examples(rec["prompt"], f"{where}: prompt", [], kind)
        elif isinstance(rec, dict) and "message_id" in rec:
            check_message(rec, where)
            get(rec, "parent_id", str, where, optional=True)
            messages[get(rec, "message_id", str, where)] = dict(rec, replies=[], where=where)
        else:
            raise DataError(f"{where}: expected an OpenAssistant tree {{'prompt': {{...}}}} "
                            "or a message {'message_id', 'parent_id', 'role', 'text', ...}")
    roots = []
    for m in messages.values():
        parent = m.get("parent_id")
        if parent is None:
            roots.append(m)
        elif parent in messages:
            messages[parent]["replies"].append(m)
        else:
            yield "parent message not in the file"
    for m in roots:
        yield from oasst_examples(m, m["where"], [], kind)


CONVERTERS = {"hh": convert_hh, "summarize": convert_summarize, "alpaca": convert_alpaca,
              "dolly": convert_dolly, "oasst": convert_oasst}


# -----------------------------------------------------------------------------
# main: convert, check, count, write atomically


def convert(fmt, src, dst, kind="", max_tokens=0, tokenizer=""):
    """Convert `src` (format `fmt`) to `dst` and print what was kept and skipped; returns
    (number kept, Counter of skip reasons). Raises DataError for malformed input, ValueError
    for bad arguments; `dst` is only replaced by a complete, loader-checked file."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown FORMAT {fmt!r}; one of {', '.join(FORMATS)}")
    kind = kind or FORMATS[fmt][0]
    if kind not in FORMATS[fmt]:
        raise ValueError(f"--kind={kind}: {fmt} gives {' or '.join(FORMATS[fmt])} data")
    if max_tokens and not tokenizer:
        raise ValueError("--max_tokens needs --tokenizer=PATH (a GPT-2 directory, .tiktoken file or checkpoint)")
    count = load_tokenizer(tokenizer) if max_tokens else None

    out, skipped = [], Counter()
    for ex in CONVERTERS[fmt](src, kind):
        if isinstance(ex, str):
            skipped[ex] += 1
            continue
        prompt, responses, ranking, extra = ex
        prompt, responses = prompt.strip(), [r.strip() for r in responses]
        if kind == "sft":  # a comparison's best response is the demonstration
            responses, ranking = [responses[ranking[0]]], [0]
        reason = None
        if not prompt:
            reason = "empty prompt"
        elif not all(responses):
            reason = "empty response"
        elif len(set(responses)) < len(responses):
            reason = "identical responses"
        elif not all(is_utf8(s) for s in [prompt] + responses):
            reason = "invalid unicode (lone surrogate escape)"
        elif count and max(count(prompt) + count(r) for r in responses) > max_tokens:
            reason = f"longer than --max_tokens={max_tokens}"
        if reason:
            skipped[reason] += 1
        elif kind == "sft":
            out.append({"prompt": prompt, "response": responses[0], **extra})
        else:
            out.append({"prompt": prompt, "responses": responses, "ranking": ranking, **extra})

    if not out:
        raise DataError(f"{src}: nothing kept (skipped: {dict(skipped) or 'no records'})")
    # check the output with the loaders the trainers use before it replaces anything
    tmp = dst + ".check.tmp"
    write_jsonl(tmp, out)
    try:
        (load_demonstrations if kind == "sft" else load_comparisons)(tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    reasons = ", ".join(f"{n} {why}" for why, n in skipped.most_common())
    print(f"kept {len(out)} {'demonstrations' if kind == 'sft' else 'comparisons'}, skipped "
          f"{sum(skipped.values())}" + (f" ({reasons})" if reasons else "") + f" -> {dst}")
    return len(out), skipped


def is_utf8(s):
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def load_tokenizer(path):
    """A token counter from a GPT-2 directory, a .tiktoken ranks file or a project checkpoint."""
    from tokenizer import Tokenizer  # only here: everything else is standard library only
    if os.path.isdir(path):
        tok = Tokenizer.from_hf_dir(path)
    elif path.endswith(".pt"):
        from common import load_checkpoint
        ckpt = load_checkpoint(path)
        if "tokenizer" not in ckpt:
            raise ValueError(f"--tokenizer: {path} is a checkpoint without a tokenizer")
        tok = Tokenizer.from_dict(ckpt["tokenizer"])
    elif os.path.isfile(path):
        tok = Tokenizer.from_file(path)
    else:
        raise FileNotFoundError(f"--tokenizer: {path} not found")
    return lambda s: len(tok.encode(s))


def die(msg, code=1):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or "-h" in argv or "--help" in argv:
        print(__doc__)
        sys.exit(0 if argv else 2)
    pos, opts = [a for a in argv if not a.startswith("--")], dict(OPTIONS)
    for a in argv:
        if a.startswith("--"):
            key, eq, value = a[2:].partition("=")
            if key not in OPTIONS or not eq:
                die(f"bad option {a!r}; options: --kind=sft|rm --max_tokens=N --tokenizer=PATH", 2)
            opts[key] = value
    if len(pos) != 3:
        die(f"expected FORMAT INPUT OUTPUT, got {pos}; see --help", 2)
    if not opts["max_tokens"].isdigit():
        die(f"--max_tokens expects a whole number, got {opts['max_tokens']!r}", 2)
    try:
        convert(*pos, opts["kind"], int(opts["max_tokens"]), opts["tokenizer"])
    except DataError as e:
        die(str(e))
    except (ValueError, OSError) as e:  # bad arguments; an unreadable tokenizer or output path
        die(str(e), 2 if isinstance(e, ValueError) else 1)


if __name__ == "__main__":
    main()
