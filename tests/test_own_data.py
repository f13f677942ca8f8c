"""Your own data as the README describes it: minimal demonstrations {prompt, response} and
comparisons {prompt, responses, ranking} load as they are (defaults filled, types still
checked), files that are not UTF-8 stop at file:line, and sft.py + reward.py run on such
files from a Hugging Face GPT-2 directory, with no `meta` for the gold judge and no network."""
import json
import math
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


def test_pipeline_gpt2_preset_on_converted_public_data(tmp_path):
    """`pipeline.py --preset=gpt2` end to end, offline: a GPT-2 directory (tiny, random), Alpaca
    demonstrations and HH-RLHF comparisons converted by public_data.convert, a plain-text corpus for
    PPO-ptx; split -> SFT -> RM -> PPO, PPO-ptx -> an evaluation judged by the reward model."""
    import gzip
    import os
    import random
    import subprocess
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    gpt2 = tmp_path / "gpt2"
    write_gpt2_tokenizer(train_bpe(make_corpus(300), 300), gpt2)
    tiny_gpt2_dir(gpt2, vocab_size=len(json.loads((gpt2 / "vocab.json").read_text())))
    rng = random.Random(0)
    words = "red blue cat dog sun tree river one two yes no hello thanks".split()
    say = lambda n: " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."  # noqa: E731
    with gzip.open(tmp_path / "hh.jsonl.gz", "wt") as f:
        for _ in range(30):
            q = f"\n\nHuman: {say(3)}"
            f.write(json.dumps({"chosen": q + f"\n\nAssistant: {say(3)}", "rejected": q + f"\n\nAssistant: {say(2)}"}) + "\n")
    (tmp_path / "alpaca.json").write_text(json.dumps(
        [{"instruction": say(3), "input": say(2) if i % 3 == 0 else "", "output": say(4)} for i in range(40)]))
    (tmp_path / "text.txt").write_text("\n\n".join(say(12) for _ in range(40)))
    convert = [sys.executable, "-m", "public_data.convert"]
    for fmt, src, dst in (("hh", "hh.jsonl.gz", "hh_rm.jsonl"), ("alpaca", "alpaca.json", "alpaca_sft.jsonl")):
        r = subprocess.run(convert + [fmt, str(tmp_path / src), str(tmp_path / dst)], cwd=root, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0 and "kept" in r.stdout, r.stdout + r.stderr

    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "pipeline.py", "--preset=gpt2", "--quick", f"--init={gpt2}",
                        f"--sft_data={tmp_path}/alpaca_sft.jsonl", f"--comparisons={tmp_path}/hh_rm.jsonl",
                        f"--ptx_data={tmp_path}/text.txt", f"--heldout={tmp_path}/text.txt", f"--out={out}"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for stage in ("split", "sft", "reward", "dpo", "ppo", "ppo_ptx", "evaluate"):
        assert f"=== {stage}:" in r.stdout
    assert "no gold score is logged" in r.stdout and "gold" not in (out / "ppo_log.jsonl").read_text()
    results = json.loads((out / "results.json").read_text())
    assert results["judge"] == "reward_model" and set(results["models"]) == {"base", "sft", "sft_best_of_4", "ppo", "ppo_ptx", "dpo"}
    for m in results["models"].values():
        assert math.isfinite(m["rm_score"]) and math.isfinite(m["heldout_loss"])
    report = (out / "report.md").read_text()
    assert "Evaluation by a reward model" in report and "PPO was trained to raise this very score" in report
    # the split keeps evaluation prompts out of PPO's
    ppo_prompts = {json.loads(x)["prompt"] for x in (out / "ppo_prompts.jsonl").read_text().splitlines()}
    eval_prompts = {json.loads(x)["prompt"] for x in (out / "eval_prompts.jsonl").read_text().splitlines()}
    assert eval_prompts and ppo_prompts and not ppo_prompts & eval_prompts


def test_pipeline_gpt2_preset_names_what_is_missing(tmp_path, capsys):
    import pipeline
    with pytest.raises(SystemExit) as e:
        pipeline.main(["--preset=gpt2", f"--init={tmp_path}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--sft_data=" in err and "--comparisons=" in err
    with pytest.raises(SystemExit):
        pipeline.main(["--preset=gpt2", f"--init={tmp_path}/nope", "--sft_data=a", "--comparisons=b"])
    assert "--init=" in capsys.readouterr().err
