"""Your own data as the README describes it: minimal demonstrations {prompt, response} and
comparisons {prompt, responses, ranking} load as they are (defaults filled, types still
checked), files that are not UTF-8 stop at file:line, and sft.py + reward.py run on such
files from a Hugging Face GPT-2 directory, with no `meta` for the gold judge and no network."""
import json
import sys

import pytest

from data import DataError, load_comparisons, load_demonstrations, read_corpus
from test_gpt2_dir import tiny_gpt2_dir, write_gpt2_tokenizer
from test_tokenizer import make_corpus
from tokenizer import train_bpe

DEMOS = [{"prompt": "What is 2+2?", "response": "4."},
         {"prompt": "Name a colour.", "response": "Blue."},
         {"prompt": "Say hi\nin two lines.", "response": "Hi.\nHi again."},  # newlines are allowed
         {"prompt": "Capital of France?", "response": "Paris."}]
COMPS = [{"prompt": "What is 2+2?", "responses": ["4.", "5.", "22."], "ranking": [0, 2, 1]},
         {"prompt": "Name a colour.", "responses": ["Blue.", "Table."], "ranking": [0, 1]}]


def write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return str(path)


def test_minimal_records_load_with_defaults(tmp_path):
    demos = load_demonstrations(write(tmp_path / "mine.jsonl", DEMOS))
    assert demos[0] == {**DEMOS[0], "id": "mine-1", "category": "unknown", "labeler": "unknown"}
    assert demos[2]["prompt"] == "Say hi\nin two lines." and demos[3]["id"] == "mine-4"
    comps = load_comparisons(write(tmp_path / "ranked.jsonl", ["", COMPS[0], COMPS[1]]))
    assert comps[1] == {**COMPS[1], "id": "ranked-3", "category": "unknown", "labeler": "unknown"}
    # what a file does give is kept, not overwritten by defaults
    given = {**DEMOS[0], "id": "q7", "labeler": "ann", "category": "math", "meta": {"x": 1}, "extra": [1]}
    assert load_demonstrations(write(tmp_path / "d.jsonl", [given])) == [given]


@pytest.mark.parametrize("loader, record, fragment", [
    (load_demonstrations, {"response": "x"}, "missing field 'prompt'"),
    (load_demonstrations, {"prompt": "p"}, "missing field 'response'"),
    (load_demonstrations, {**DEMOS[0], "labeler": 3}, "field 'labeler' must be str, got int"),
    (load_demonstrations, {**DEMOS[0], "id": None}, "field 'id' must be str, got NoneType"),
    (load_demonstrations, {**DEMOS[0], "meta": []}, "field 'meta' must be dict, got list"),
    (load_comparisons, {"prompt": "p", "responses": ["a", "b"]}, "missing field 'ranking'"),
    (load_comparisons, {**COMPS[1], "category": 5}, "field 'category' must be str, got int"),
    (load_comparisons, {**COMPS[1], "labeler": None}, "field 'labeler' must be str, got NoneType"),
])
def test_given_fields_are_still_type_checked(tmp_path, loader, record, fragment):
    path = write(tmp_path / "x.jsonl", [DEMOS[1] if loader is load_demonstrations else COMPS[1], record])
    with pytest.raises(DataError) as e:
        loader(path)
    assert str(e.value).startswith(f"{path}:2: ") and fragment in str(e.value), str(e.value)


def test_not_utf8_is_a_data_error_with_line_and_offset(tmp_path):
    corpus = tmp_path / "corpus.txt"
    data = "first document\n\nsecond, with a café\n".encode("utf-8") + "third: naïve\n".encode("latin-1")
    corpus.write_bytes(data)
    with pytest.raises(DataError) as e:
        read_corpus(str(corpus))
    assert str(e.value).startswith(f"{corpus}:4: not UTF-8 text (byte offset {data.index(0xEF)}:"), str(e.value)
    demos = tmp_path / "d.jsonl"
    data = b'{"prompt": "a", "response": "b"}\n{"prompt": "\xff", "response": "b"}\n'
    demos.write_bytes(data)
    with pytest.raises(DataError, match=rf"d.jsonl:2: not UTF-8 text \(byte offset {data.index(0xFF)}\b"):
        load_demonstrations(str(demos))
    # a UTF-8 signature (BOM) and Windows line ends are fine
    corpus.write_bytes(b"\xef\xbb\xbfdoc one\r\n\r\ndoc two\r\n")
    assert read_corpus(str(corpus)) == ["doc one", "doc two"]
    demos.write_bytes(b'\xef\xbb\xbf{"prompt": "a", "response": "b"}\r\n')
    assert load_demonstrations(str(demos))[0]["response"] == "b"


def test_sft_and_reward_run_on_minimal_files_from_a_gpt2_dir(tmp_path, monkeypatch, capsys):
    """The whole own-data path, in process: GPT-2 directory -> SFT -> RM, no meta anywhere."""
    import reward
    import sft
    monkeypatch.setattr("tiktoken.get_encoding", lambda name: pytest.fail("tiktoken download attempted"))
    gpt2 = tmp_path / "gpt2"
    ranks = train_bpe(make_corpus(300), 300)
    write_gpt2_tokenizer(ranks, gpt2)
    tiny_gpt2_dir(gpt2, vocab_size=len(ranks) + 1)
    demos, comps = write(tmp_path / "demos.jsonl", DEMOS * 3), write(tmp_path / "comps.jsonl", COMPS * 2)
    common = ["--device=cpu", "--epochs=1", "--batch_size=4", "--log_interval=1"]

    monkeypatch.setattr(sys, "argv", ["sft.py", f"--init={gpt2}", f"--data={demos}", f"--out={tmp_path}/sft.pt",
                                      "--n_eval=2", "--max_new_tokens=4", "--warmup_steps=1", "--heldout=",
                                      "--ptx_data="] + common)
    sft.main()
    out = capsys.readouterr().out
    assert "has no 'meta'" in out and "--select=val_loss" in out and "[unknown]" in out
    assert (tmp_path / "sft.pt").exists()

    monkeypatch.setattr(sys, "argv", ["reward.py", f"--init={tmp_path}/sft.pt", f"--data={comps}",
                                      f"--val={comps}", "--val_heldout=", f"--demos={demos}",
                                      f"--out={tmp_path}/rm.pt", "--warmup_steps=1"] + common)
    reward.main()
    out = capsys.readouterr().out
    assert "(labeler unknown)" in out and "acc_train_labelers" in out and "gold_corr" not in out
    assert (tmp_path / "rm.pt").exists()
