"""public_data/convert.py: each public format -> a file the project's loaders accept, with the
skipped examples counted and malformed input stopped at `file:line`. Fixtures are a few
hand-written records per format (nothing is downloaded)."""
import gzip
import json

import pytest

from data import DataError, load_comparisons, load_demonstrations
from public_data.convert import convert, dialogue_prompt, main
from tokenizer import save_ranks


def write_jsonl(path, records, gz=False):
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def run_main(argv, capsys):
    """main() as the shell runs it -> (exit code, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dialogue_prompt():
    assert dialogue_prompt([("Human", "Hi")]) == "Hi"
    assert (dialogue_prompt([("Human", "Hi"), ("Assistant", "Hello!"), ("Human", "Bye")])
            == "Human: Hi\n\nAssistant: Hello!\n\nHuman: Bye")


# -----------------------------------------------------------------------------
# Anthropic HH-RLHF

HH = [
    {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: A joke?\n\nAssistant: Knock knock.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: A joke?\n\nAssistant: No."},
    {"chosen": "\n\nHuman: A?\n\nAssistant: x", "rejected": "\n\nHuman: B?\n\nAssistant: y"},  # prompts differ
    {"chosen": "\n\nHuman: Same?\n\nAssistant: same", "rejected": "\n\nHuman: Same?\n\nAssistant:  same "},
]


def test_hh_comparisons_and_demonstrations(tmp_path, capsys):
    src = write_jsonl(tmp_path / "train.jsonl.gz", HH, gz=True)
    code, out, _ = run_main(["hh", src, str(tmp_path / "hh.jsonl")], capsys)
    assert code == 0 and "kept 2 comparisons, skipped 2" in out
    assert "1 chosen and rejected prompts differ" in out and "1 identical responses" in out
    comps = load_comparisons(str(tmp_path / "hh.jsonl"))
    assert [(c["prompt"], c["responses"], c["ranking"]) for c in comps] == [
        ("What is 2+2?", ["4.", "5."], [0, 1]),
        # earlier turns stay as transcript text; the last human message ends the prompt
        ("Human: Hi\n\nAssistant: Hello! How can I help?\n\nHuman: A joke?", ["Knock knock.", "No."], [0, 1]),
    ]
    assert comps[0]["id"] == "hh-1" and comps[1]["id"] == "hh-2" and comps[0]["category"] == "hh-rlhf"

    kept, skipped = convert("hh", src, str(tmp_path / "hh_sft.jsonl"), kind="sft")
    demos = load_demonstrations(str(tmp_path / "hh_sft.jsonl"))
    assert kept == 3 and [d["response"] for d in demos] == ["4.", "Knock knock.", "same"]  # the chosen ones


def test_hh_malformed_line_stops_with_file_line_key(tmp_path, capsys):
    dst = tmp_path / "hh.jsonl"
    dst.write_text("old\n")
    src = write_jsonl(tmp_path / "bad.jsonl", [HH[0], {"chosen": HH[0]["chosen"], "rejected": 5}])
    code, _, err = run_main(["hh", src, str(dst)], capsys)
    assert code == 1 and err == f"error: {src}:2: key 'rejected' must be a string, got 5\n"
    assert dst.read_text() == "old\n"  # nothing is replaced by a failed conversion
    src = write_jsonl(tmp_path / "bad2.jsonl", [HH[0], "", '{"chosen": "x"'])
    code, _, err = run_main(["hh", src, str(dst)], capsys)
    assert code == 1 and err.startswith(f"error: {src}:3: bad JSON") and err.count("\n") == 1


# -----------------------------------------------------------------------------
# OpenAI summarize-from-feedback

def summ(choice, a, b, info=None):
    info = info or {"id": "t3_x", "subreddit": "cats", "title": "My cat", "post": "She sleeps all day."}
    return {"info": info, "summaries": [{"text": a, "policy": "ref"}, {"text": b, "policy": "sup"}],
            "choice": choice, "worker": "w7", "split": "train"}


def test_summarize(tmp_path):
    src = write_jsonl(tmp_path / "batch3.json", [
        summ(1, " cat sleeps", " My cat sleeps all day."),
        summ(0, " Storm hits.", " A storm.", {"id": "cnn1", "article": "A storm hit the coast."}),
        summ(0, " same", "same "),  # identical once stripped
    ])
    kept, skipped = convert("summarize", src, str(tmp_path / "s.jsonl"))
    assert kept == 2 and skipped == {"identical responses": 1}
    a, b = load_comparisons(str(tmp_path / "s.jsonl"))
    assert a["prompt"] == "SUBREDDIT: r/cats\n\nTITLE: My cat\n\nPOST: She sleeps all day.\n\nTL;DR:"
    assert a["responses"][a["ranking"][0]] == "My cat sleeps all day." and a["labeler"] == "w7"
    assert b["prompt"] == "Article:\nA storm hit the coast.\n\nTL;DR:" and b["responses"][b["ranking"][0]] == "Storm hits."
    bad = write_jsonl(tmp_path / "bad.json", [summ(0, "a", "b"), summ(2, "a", "b")])
    with pytest.raises(DataError, match=r"bad.json:2: 'choice' must be 0 or 1, got 2"):
        convert("summarize", bad, str(tmp_path / "x.jsonl"))
    bad = write_jsonl(tmp_path / "bad.json", [{**summ(0, "a", "b"), "summaries": [{"text": "a"}, {"txt": "b"}]}])
    with pytest.raises(DataError, match=r"bad.json:1: summaries\[1\]: missing key 'text'"):
        convert("summarize", bad, str(tmp_path / "x.jsonl"))


# -----------------------------------------------------------------------------
# Alpaca and Dolly: demonstrations

def test_alpaca(tmp_path, capsys):
    src = tmp_path / "alpaca_data.json"
    src.write_text(json.dumps([
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Say nothing.", "input": "", "output": "   "},  # empty response: skipped
    ], indent=1), encoding="utf-8")
    code, out, _ = run_main(["alpaca", str(src), str(tmp_path / "a.jsonl")], capsys)
    assert code == 0 and "kept 2 demonstrations, skipped 1 (1 empty response)" in out
    a, b = load_demonstrations(str(tmp_path / "a.jsonl"))
    assert (a["prompt"], a["response"]) == ("Translate to French.\n\nGood morning", "Bonjour")  # newline kept
    assert (b["prompt"], b["id"], b["labeler"]) == ("Name a colour.", "alpaca-1", "unknown")
    code, _, err = run_main(["alpaca", str(src), str(tmp_path / "a.jsonl"), "--kind=rm"], capsys)
    assert code == 2 and "alpaca gives sft data" in err
    src.write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "x", "outptu": "y"}]))
    with pytest.raises(DataError, match="alpaca_data.json: item 1: missing key 'output'"):
        convert("alpaca", str(src), str(tmp_path / "a.jsonl"))
    src.write_text('[\n {"instruction": "x", "output": "y"},\n {"instruction": "x" "output": "y"}\n]')
    with pytest.raises(DataError, match="alpaca_data.json:3: bad JSON"):
        convert("alpaca", str(src), str(tmp_path / "a.jsonl"))


def test_dolly(tmp_path):
    src = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "When was X founded?", "context": "X was founded in 1990.", "response": "1990.",
         "category": "closed_qa"},
        {"instruction": "Give me a fruit.", "context": "", "response": "An apple.", "category": "brainstorming"},
    ])
    assert convert("dolly", src, str(tmp_path / "d.jsonl")) == (2, {})
    a, b = load_demonstrations(str(tmp_path / "d.jsonl"))
    assert a["prompt"] == "When was X founded?\n\nX was founded in 1990." and a["category"] == "closed_qa"
    assert (b["prompt"], b["response"], b["id"]) == ("Give me a fruit.", "An apple.", "dolly-2")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": None, "context": "", "response": "r"}])
    with pytest.raises(DataError, match="bad.jsonl:1: key 'instruction' must be a string, got null"):
        convert("dolly", bad, str(tmp_path / "d.jsonl"))


# -----------------------------------------------------------------------------
# OpenAssistant: message trees and flat messages

def msg(mid, role, text, rank=None, replies=(), **kw):
    return {"message_id": mid, "role": role, "text": text, "rank": rank, "lang": "en",
            "replies": list(replies), **kw}


TREE = msg("p1", "prompter", "What is a cat?", replies=[
    msg("a1", "assistant", "A small animal.", rank=1),
    msg("a2", "assistant", "A small domesticated carnivorous mammal.", rank=0, replies=[
        msg("p2", "prompter", "And a dog?", replies=[
            msg("b1", "assistant", "A domesticated wolf.", rank=0),
            msg("b2", "assistant", "Woof.", rank=1),
            msg("b3", "assistant", "Deleted answer.", rank=2, deleted=True),
        ]),
    ]),
    msg("a3", "assistant", "Unranked answer."),
])


def flatten(m, parent=None):
    yield {**{k: v for k, v in m.items() if k != "replies"}, "parent_id": parent}
    for r in m["replies"]:
        yield from flatten(r, m["message_id"])


def test_oasst_trees_and_flat_messages_agree(tmp_path):
    trees = write_jsonl(tmp_path / "trees.jsonl.gz", [
        {"message_tree_id": "p1", "tree_state": "ready_for_export", "prompt": TREE},
        {"message_tree_id": "q", "tree_state": "aborted_low_grade", "prompt": msg("q", "prompter", "?")},
    ], gz=True)
    kept, skipped = convert("oasst", trees, str(tmp_path / "o.jsonl"))
    assert kept == 2 and skipped == {"tree not ready_for_export": 1}
    first, second = load_comparisons(str(tmp_path / "o.jsonl"))
    assert first["prompt"] == "What is a cat?" and first["lang"] == "en" and first["id"] == "oasst-p1"
    assert [first["responses"][i] for i in first["ranking"]] == ["A small domesticated carnivorous mammal.",
                                                                 "A small animal."]  # rank 0 first
    assert second["prompt"] == ("Human: What is a cat?\n\nAssistant: A small domesticated carnivorous mammal."
                                "\n\nHuman: And a dog?")
    assert [second["responses"][i] for i in second["ranking"]] == ["A domesticated wolf.", "Woof."]  # not deleted

    flat = write_jsonl(tmp_path / "messages.jsonl", list(flatten(TREE)))
    assert convert("oasst", flat, str(tmp_path / "f.jsonl")) == (2, {})
    assert load_comparisons(str(tmp_path / "f.jsonl")) == load_comparisons(str(tmp_path / "o.jsonl"))

    kept, _ = convert("oasst", trees, str(tmp_path / "o_sft.jsonl"), kind="sft")
    demos = load_demonstrations(str(tmp_path / "o_sft.jsonl"))
    assert [d["response"] for d in demos] == ["A small domesticated carnivorous mammal.", "A domesticated wolf."]

    bad = {"message_tree_id": "p1", "prompt": msg("p1", "prompter", "Hi", replies=[msg("a", "bot", "Hello")])}
    bad = write_jsonl(tmp_path / "bad.jsonl", [bad])
    with pytest.raises(DataError, match=r"bad.jsonl:1: prompt.replies\[0\]: 'role' must be 'prompter' or 'assistant'"):
        convert("oasst", bad, str(tmp_path / "x.jsonl"))


# -----------------------------------------------------------------------------
# length filter, bad encodings, the command line

def test_max_tokens_skips_long_examples(tmp_path):
    tok_path = str(tmp_path / "tok.tiktoken")
    save_ranks({bytes([i]): i for i in range(256)}, tok_path)  # one token per byte
    src = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Short?", "context": "", "response": "Yes."},
        {"instruction": "Long? " + "word " * 10, "context": "", "response": "Yes."},  # 60 bytes
    ])
    kept, skipped = convert("dolly", src, str(tmp_path / "d.jsonl"), max_tokens=50, tokenizer=tok_path)
    assert kept == 1 and skipped == {"longer than --max_tokens=50": 1}
    with pytest.raises(ValueError, match="--max_tokens needs --tokenizer"):
        convert("dolly", src, str(tmp_path / "d.jsonl"), max_tokens=50)


def test_not_utf8_and_bad_gzip(tmp_path):
    src = tmp_path / "dolly.jsonl"
    data = b'{"instruction": "a", "response": "b"}\n{"instruction": "caf\xe9", "response": "b"}\n'  # latin-1 é
    src.write_bytes(data)
    with pytest.raises(DataError, match=rf"dolly.jsonl:2: not UTF-8 text \(byte offset {data.index(0xE9)}\b"):
        convert("dolly", str(src), str(tmp_path / "d.jsonl"))
    gz = tmp_path / "hh.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="hh.jsonl.gz: not a valid gzip file"):
        convert("hh", str(gz), str(tmp_path / "h.jsonl"))


def test_cli_usage_errors(tmp_path, capsys):
    for argv, fragment in [(["hh", "a.jsonl"], "expected FORMAT INPUT OUTPUT"),
                           (["nope", "a", "b"], "unknown FORMAT 'nope'"),
                           (["hh", "a", "b", "--kind"], "bad option '--kind'"),
                           (["hh", "a", "b", "--max_tokens=ten"], "--max_tokens expects a whole number")]:
        code, _, err = run_main(argv, capsys)
        assert code == 2 and fragment in err and err.startswith("error: ") and err.count("\n") == 1, err
    code, _, err = run_main(["hh", str(tmp_path / "missing.jsonl"), str(tmp_path / "o.jsonl")], capsys)
    assert code == 1 and "missing.jsonl: no such file" in err
    src = write_jsonl(tmp_path / "hh.jsonl", [HH[2]])  # every example skipped: an error, no empty file
    code, _, err = run_main(["hh", src, str(tmp_path / "o.jsonl")], capsys)
    assert code == 1 and "nothing kept" in err and not (tmp_path / "o.jsonl").exists()
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "python -m public_data.convert FORMAT INPUT OUTPUT" in out
