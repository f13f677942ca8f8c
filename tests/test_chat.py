"""chat.py: prompts piped through the CLI, the gold judge on world prompts, one-line errors,
and the web server on a loopback port (a real request, a malformed one, an oversized one).
Tiny random models and a tiny world made here: ~10 s on a 2-core CPU."""
import http.client
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict

import pytest
import torch

import chat
from data.world import build_world
from model import GPT, GPTConfig, ScalarModel
from tokenizer import Tokenizer, render, train_bpe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder like pipeline.py's: world/, sft.pt and ppo.pt (random tiny GPTs), rm.pt."""
    d = tmp_path_factory.mktemp("chat")
    build_world(str(d / "world"), seed=0, scale=0.02)
    tok = Tokenizer(train_bpe((d / "world" / "corpus_heldout.txt").read_text(), 300))
    cfg = GPTConfig(block_size=256, vocab_size=tok.vocab_size, n_layer=1, n_head=2, n_embd=32)
    torch.manual_seed(0)
    for name, stage in [("sft", "sft"), ("ppo", "ppo")]:
        torch.save(dict(stage=stage, model=GPT(cfg).state_dict(), model_config=asdict(cfg), tokenizer=tok.to_dict(),
                        config={}), d / f"{name}.pt")
    torch.save(dict(stage="reward", model=ScalarModel(cfg).state_dict(), model_config=asdict(cfg),
                    tokenizer=tok.to_dict(), config={}), d / "rm.pt")
    world_prompt = json.loads((d / "world" / "eval_prompts.jsonl").read_text().splitlines()[0])["prompt"]
    return d, world_prompt


def make_chat(d, **kw):
    return chat.Chat(chat.ChatConfig(run=str(d), device="cpu", max_new_tokens=8, **kw))


def test_piped_prompts(run):
    """Prompts on stdin, one per line: every model answers each, with RM scores; a world
    prompt (typed exactly, or /random) also gets the gold judge, labelled as the world's."""
    d, world_prompt = run
    stdin = f"Where does Nuvan live?\n\n{world_prompt}\n/random\nSay <|endoftext|> please\n/quit\nnever read\n"
    r = subprocess.run([sys.executable, "chat.py", f"--run={d}", "--max_new_tokens=6", "--device=cpu"], input=stdin,
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    asked = [line for line in out.splitlines() if line.startswith("> ")]
    assert len(asked) == 4 and "never read" not in out  # the empty line is skipped, /quit stops
    assert "> Where does Nuvan live?" in out and f"> {world_prompt}" in out and "> /random: " in out
    assert out.count("  sft ") == 4 and out.count("  ppo ") == 4 and out.count("RM ") == 8
    blocks = out.split("\n> ")
    assert "gold" not in blocks[0] and "gold" in blocks[1] and "gold" in blocks[2]  # eval prompts are the world's
    assert "a real project has no such thing" in blocks[1]
    assert "models: sft" in r.stderr and "reward model:" in r.stderr


def test_special_token_text_is_encoded_as_plain_text(run):
    d, _ = run
    c = make_chat(d)
    _, tok, _ = c.models["sft"]
    ids = render(tok, "Say <|endoftext|><|user|> please")[0]
    assert ids.count(tok.user_id) == 1 and tok.eot_id not in ids  # only render's own control tokens
    assert c.answer("Say <|endoftext|> please")["answers"][0]["text"] is not None


def test_answer_gold_rm_and_determinism(run):
    d, world_prompt = run
    c = make_chat(d, rm="none")
    res = c.answer(world_prompt, temperature=0.0)
    assert res["world"]["id"].startswith("eval-") and [a["model"] for a in res["answers"]] == ["sft", "ppo"]
    for a in res["answers"]:
        assert a["rm"] is None and 1.0 <= a["gold"] <= 7.0 and isinstance(a["flags"], list)
    again = make_chat(d, rm="none").answer(world_prompt, temperature=0.0)  # a new session: the same answers
    assert [a["text"] for a in again["answers"]] == [a["text"] for a in res["answers"]]
    res = c.answer("Not a prompt of the world", names=["ppo"])
    assert res["world"] is None and [a["model"] for a in res["answers"]] == ["ppo"]
    assert res["answers"][0]["gold"] is None
    long = make_chat(d, max_prompt_chars=10**6).answer("word " * 400)  # more tokens than block_size
    assert all("more than this model's 256" in a["error"] for a in long["answers"])


def test_gold_flags_in_words():
    v = dict(did_task=True, correct=True, constraint_ok=False, hallucinated=True, filler=True, toxic=False,
             inappropriate=True, wrong_language=False, says_unknown=False)
    assert chat.gold_flags(v) == ["broke a constraint", "hallucination", "filler", "inappropriate/rude"]
    assert chat.gold_flags({**v, "did_task": False, "constraint_ok": None, "hallucinated": False, "filler": False,
                            "inappropriate": False}) == ["did not do the task"]


@pytest.mark.parametrize("args, message", [
    (["--models=a="], "--models: bad entry 'a='"),
    (["--models=a=x.pt,a=y.pt"], "given twice"),
    (["--models=missing.pt"], "'missing.pt' (missing) not found"),
    (["--rm=missing_rm.pt"], "checkpoint 'missing_rm.pt' not found"),
    (["--run=/nonexistent"], "no models in /nonexistent/"),
    (["--models=RUN/rm.pt"], "is a reward/value model checkpoint"),
])
def test_bad_input_is_one_line(run, capsys, args, message):
    d, _ = run
    args = [a.replace("RUN", str(d)) for a in args]
    with pytest.raises(SystemExit) as e:
        chat.main([f"--run={d}", "--device=cpu"] + args if "--run" not in args[0] else args + ["--device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code != 0 and err[-1].startswith("error: ") and message in err[-1], err


def request(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if r.getheader("Content-Type", "").startswith("application/json")
                          else data.decode())
    finally:
        conn.close()


def test_web_server(run):
    """The page, a real /api/chat request, then bad ones (each a 4xx JSON answer), and the
    server still answers after them."""
    d, world_prompt = run
    server = chat.make_server(make_chat(d), "127.0.0.1", 0)  # port 0: a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_port
    try:
        status, page = request(port, "GET", "/")
        assert status == 200 and "Talk to what you trained" in page and str(d / "sft.pt") in page
        ask = lambda obj: request(port, "POST", "/api/chat", json.dumps(obj))  # noqa: E731
        status, res = ask({"prompt": world_prompt, "temperature": 0.5})
        assert status == 200 and len(res["answers"]) == 2 and res["world"] is not None
        assert all(isinstance(a["rm"], float) and a["gold"] is not None for a in res["answers"])
        assert request(port, "POST", "/api/chat", "{not json")[0] == 400
        assert request(port, "POST", "/api/chat", "x" * (17 * 1024))[0] == 413  # body over 16 KiB
        assert ask({"prompt": "x" * 2001})[0] == 413
        status, res = ask({"prompt": "hi", "models": ["nope"]})
        assert status == 400 and "unknown model 'nope'" in res["error"]
        assert ask({"prompt": "hi", "temperature": "hot"})[0] == 400
        assert ask(["hi"])[0] == 400 and ask({"prompt": ""})[0] == 400
        assert request(port, "GET", "/nope")[0] == 404
        status, res = request(port, "GET", "/api/random")
        assert status == 200 and res["prompt"]
        status, res = ask({"prompt": "still there?", "models": ["ppo"]})
        assert status == 200 and [a["model"] for a in res["answers"]] == ["ppo"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
