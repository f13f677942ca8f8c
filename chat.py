"""
Talk to what you trained: one prompt, every model's answer side by side, each with the
reward model's score; on the world's own prompts also the gold judge's score and flags.

    python chat.py                                   # out/{sft,ppo,ppo_ptx,dpo}.pt, whichever exist, + out/rm.pt
    python chat.py --run=out/quick                   # the models of `python pipeline.py --quick`
    python chat.py --models=sft=out/sft.pt,ppo=out/ppo.pt --temperature=0 --rm=none
    echo "Where does Nuvan live?" | python chat.py --run=out/quick     # prompts from a pipe, one per line
    python chat.py --web --run=out/quick             # the same in a page: http://127.0.0.1:8000/

In the terminal, type a prompt, `/random` for one of the world's evaluation prompts, or
`/quit`. A prompt that is one of the world's own (drawn by /random, or typed exactly)
also gets the gold judge's verdict: it reads the world's hidden answer key, which is why
a real project has no such thing. What you type is encoded as plain text by
tokenizer.render: typing "<|endoftext|>" does not end anything.

The page (chat.html, served with the standard library's http.server) posts to
`/api/chat` {"prompt", "temperature", "models"}; `/api/random` gives a world prompt and
`/api/info` what was loaded. One generation runs at a time (a lock); bad requests get a
4xx JSON answer. `/?prompt=...` asks on load (`&random=1` draws one), for links and screenshots.
"""
import json
import os
import random
import sys
import textwrap
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from common import die, get_device, parse_config
from data import DataError, load_prompts
from data.labelers import judge
from data.world import FILES
from policy import load_policy, load_reward_model, sample_responses, score_texts
from tokenizer import Tokenizer, render


@dataclass
class ChatConfig:
    run: str = "out"  # the run's folder: its models and rm.pt (`pipeline.py --quick` writes out/quick)
    models: str = ""  # name=checkpoint or checkpoint, comma-separated ("" = sft, ppo, ppo_ptx, dpo in --run)
    rm: str = ""  # reward model for the scores ("" = RUN/rm.pt if it exists, "none" = no scores)
    world: str = ""  # the world's folder, for /random and gold scores ("" = RUN/world or data/world, "none" = off)
    temperature: float = 0.7  # sampling temperature (0 = greedy); the page can change it
    max_new_tokens: int = 48  # the longest answer, in tokens
    seed: int = 1337  # the n-th prompt is sampled with seed + n: the same session gives the same answers
    device: str = "auto"  # cuda > mps > cpu, or name one
    web: bool = False  # serve a page instead of reading the terminal
    host: str = "127.0.0.1"  # --web: the address to listen on (127.0.0.1: this machine only)
    port: int = 8000  # --web: the port (0 = any free one)
    max_prompt_chars: int = 2000  # longer prompts are refused


DEFAULT_MODELS = ["sft", "ppo", "ppo_ptx", "dpo"]
WORLD_PROMPT_FILES = [f for f in FILES if f.endswith("prompts.jsonl")] + ["sft.jsonl"]  # records with `meta`
GOLD_NOTE = "gold: the world's judge, 1-7 (a real project has no such thing)"
MAX_BODY = 16 * 1024  # bytes of a POST body; a prompt is far smaller
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat.html")


# -----------------------------------------------------------------------------
# setup: which models, which reward model, which world


def parse_models(spec, run):
    """'sft=out/sft.pt,out/ppo.pt' -> [('sft', 'out/sft.pt'), ('ppo', 'out/ppo.pt')]; '' -> the
    default names found in `run`. Bad syntax dies with one line."""
    if not spec:
        found = [(n, os.path.join(run, n + ".pt")) for n in DEFAULT_MODELS]
        found = [(n, p) for n, p in found if os.path.isfile(p)]
        if not found:
            die(f"no models in {run}/ (looked for {', '.join(n + '.pt' for n in DEFAULT_MODELS)}): "
                "run `python pipeline.py --quick` and pass --run=out/quick, or name them with --models=")
        return found
    pairs = []
    for item in spec.split(","):
        name, _, path = item.rpartition("=") if "=" in item else ("", "", item)
        name = name.strip() or os.path.splitext(os.path.basename(path.rstrip("/")))[0]
        if not path.strip() or not name.replace("_", "").replace("-", "").isalnum():
            die(f"--models: bad entry {item!r}: expected name=checkpoint or a checkpoint path, comma-separated")
        if name in dict(pairs):
            die(f"--models: the name {name!r} is given twice (name them: a=path1,b=path2)")
        pairs.append((name, path.strip()))
    return pairs


def load_world(cfg):
    """-> ({prompt text: record with meta}, the evaluation prompts) of --world, or RUN/world, or
    data/world (pipeline.py's places). Files that are not there are skipped: no gold judge then."""
    folder = cfg.world or next((f for f in (os.path.join(cfg.run, "world"), "data/world") if os.path.isdir(f)), "")
    by_prompt, eval_recs = {}, []
    for name in WORLD_PROMPT_FILES if folder not in ("", "none") else []:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            recs = [r for r in load_prompts(path) if "meta" in r]
        except DataError as e:
            die(str(e))
        for r in recs:
            by_prompt.setdefault(r["prompt"], r)
        if name == "eval_prompts.jsonl":
            eval_recs = recs
    return by_prompt, eval_recs


class Chat:
    """The loaded models, reward model and world, and `answer`, which the terminal and the
    web page both call. One generation at a time: `lock`."""

    def __init__(self, cfg):
        self.cfg, self.device = cfg, get_device(cfg.device)
        self.models = {}  # name -> (GPT, Tokenizer, path)
        for name, path in parse_models(cfg.models, cfg.run):
            if not os.path.exists(path):
                die(f"--models: checkpoint '{path}' ({name}) not found")
            model, tok, _ = load_policy(path, self.device, dropout=0.0)
            self.models[name] = (model.eval(), tok, path)
        rm_path = cfg.rm or os.path.join(cfg.run, "rm.pt")
        self.rm = self.rm_tok = None
        if cfg.rm != "none" and (cfg.rm or os.path.isfile(rm_path)):
            self.rm, ck = load_reward_model(rm_path, self.device)  # dies on a missing/wrong file
            self.rm_tok = Tokenizer.from_dict(ck["tokenizer"])
        self.rm_path = rm_path if self.rm is not None else None
        self.world, self.eval_prompts = load_world(cfg)
        self.lock, self.n_asked, self.rng = threading.Lock(), 0, random.Random(cfg.seed)

    def info(self):
        return {"models": [{"name": n, "path": p, "params": sum(x.numel() for x in m.parameters())}
                           for n, (m, _, p) in self.models.items()],
                "rm": self.rm_path, "world_prompts": len(self.eval_prompts), "gold_note": GOLD_NOTE,
                "temperature": self.cfg.temperature, "max_prompt_chars": self.cfg.max_prompt_chars}

    def random_prompt(self):
        with self.lock:
            return self.rng.choice(self.eval_prompts)["prompt"] if self.eval_prompts else None

    def answer(self, prompt, temperature=None, names=None):
        """Every model's (or `names`') answer to `prompt` -> a JSON-able dict:
        {prompt, world: {id, category} or None, answers: [{model, text, ended, rm, gold, flags, error}]}."""
        temperature = self.cfg.temperature if temperature is None else temperature
        rec = self.world.get(prompt)
        with self.lock:
            seed, self.n_asked = self.cfg.seed + self.n_asked, self.n_asked + 1  # every model: the same draws
            answers = [self.answer_one(n, prompt, temperature, seed, rec) for n in names or self.models]
        world = {"id": rec.get("id"), "category": rec.get("category")} if rec else None
        return {"prompt": prompt, "temperature": temperature, "world": world, "answers": answers}

    def answer_one(self, name, prompt, temperature, seed, rec):
        model, tok, _ = self.models[name]
        out = {"model": name, "text": None, "ended": None, "rm": None, "gold": None, "flags": [], "error": None}
        n_prompt = len(render(tok, prompt)[0])
        if n_prompt + self.cfg.max_new_tokens > model.config.block_size:
            out["error"] = (f"the prompt is {n_prompt} tokens: with max_new_tokens {self.cfg.max_new_tokens} "
                            f"that is more than this model's {model.config.block_size}")
            return out
        [text], [ended] = sample_responses(model, tok, [prompt], self.cfg.max_new_tokens, temperature, seed=seed)
        out.update(text=text, ended=bool(ended))
        if self.rm is not None and len(render(self.rm_tok, prompt, text)[0]) <= self.rm.trunk.config.block_size:
            out["rm"] = round(score_texts(self.rm, self.rm_tok, [prompt], [text], self.device)[0].item(), 3)
        if rec is not None:
            verdict = judge(rec, text)
            out.update(gold=verdict["score"], flags=gold_flags(verdict))
        return out


def gold_flags(verdict):
    """data.labelers.judge's verdict -> the failures it found, in words (the paper's Figure 4),
    and whether the answer says it does not know (right on a trap question, wrong elsewhere)."""
    flags = []
    if not verdict["did_task"]:
        flags.append("did not do the task")
    elif verdict["correct"] is False:
        flags.append("wrong answer")
    if verdict["constraint_ok"] is False:
        flags.append("broke a constraint")
    if verdict["hallucinated"]:
        flags.append("hallucination")
    if verdict["filler"]:
        flags.append("filler")
    if verdict["toxic"] or verdict["inappropriate"]:
        flags.append("insult" if verdict["toxic"] else "inappropriate/rude")
    if verdict["wrong_language"]:
        flags.append("wrong language")
    if verdict["says_unknown"]:
        flags.append("says it does not know")
    return flags


# -----------------------------------------------------------------------------
# the terminal


def format_result(result, width=100):
    """One block per model: its answer, then the RM's score and the gold judge's verdict."""
    lines = []
    if result["world"]:
        w = result["world"]
        lines.append(f"  world prompt {w['id']} [{w['category']}]; {GOLD_NOTE}")
    pad = max(len(a["model"]) for a in result["answers"]) + 2
    for a in result["answers"]:
        text = a["error"] and f"({a['error']})" or repr(a["text"]) + ("" if a["ended"] else " [cut at max_new_tokens]")
        wrapped = textwrap.wrap(text, width - pad - 2) or [""]
        lines.append(f"  {a['model']:<{pad}}" + wrapped[0])
        lines += [" " * (pad + 2) + w for w in wrapped[1:]]
        scores = [f"RM {a['rm']:+.2f}"] if a["rm"] is not None else []
        if a["gold"] is not None:
            scores.append(f"gold {a['gold']:.2f}" + (f" ({', '.join(a['flags'])})" if a["flags"] else ""))
        if scores:
            lines.append(" " * (pad + 2) + " | ".join(scores))
    return "\n".join(lines)


def terminal(chat):
    """Read prompts until EOF or /quit: typed at a `>` prompt, or one per line from a pipe."""
    interactive = sys.stdin.isatty()
    if interactive:
        print("type a prompt, /random for a world prompt, /quit to leave")
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not interactive and not line:
            break  # end of the pipe
        prompt = line.rstrip("\n")
        if not prompt.strip():
            continue
        if prompt.strip() in ("/quit", "/exit"):
            break
        if prompt.strip() == "/random":
            prompt = chat.random_prompt()
            if prompt is None:
                print("  (no world prompts: /random needs the world's eval_prompts.jsonl, see --world)")
                continue
            print(f"> {prompt}" if interactive else f"> /random: {prompt}")
        elif not interactive:
            print(f"> {prompt}")
        if len(prompt) > chat.cfg.max_prompt_chars:
            print(f"  (prompt of {len(prompt)} characters: the limit is --max_prompt_chars={chat.cfg.max_prompt_chars})")
            continue
        print(format_result(chat.answer(prompt)), flush=True)


# -----------------------------------------------------------------------------
# the web page: http.server, JSON in and out


class ChatHandler(BaseHTTPRequestHandler):
    """GET / (the page), /api/info, /api/random; POST /api/chat. `chat` is set by make_server."""
    chat = None
    timeout = 30  # seconds a client may take to send its request: a stalled one frees its thread

    def send_json(self, code, obj, content_type="application/json; charset=utf-8"):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            with open(PAGE, encoding="utf-8") as f:  # INFO in the page: it opens with the models found
                page = f.read().replace("/*INFO*/null", json.dumps(self.chat.info()).replace("<", "\\u003c"))
            self.send_json(200, page.encode("utf-8"), "text/html; charset=utf-8")
        elif path == "/api/info":
            self.send_json(200, self.chat.info())
        elif path == "/api/random":
            prompt = self.chat.random_prompt()
            if prompt is None:
                return self.send_json(404, {"error": "no world prompts loaded (see --world)"})
            self.send_json(200, {"prompt": prompt})
        else:
            self.send_json(404, {"error": f"no such page: {path}"})

    def do_POST(self):
        if urlsplit(self.path).path != "/api/chat":
            return self.send_json(404, {"error": "POST only to /api/chat"})
        try:
            n = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self.send_json(411, {"error": "a Content-Length header is required"})
        if n < 0:
            return self.send_json(400, {"error": "a negative Content-Length"})
        if n > MAX_BODY:
            if n <= 64 * MAX_BODY:  # read it away: closing on unread bytes resets the connection, and a
                self.rfile.read(n)  # reset can lose this answer before the client reads it
            self.close_connection = True
            return self.send_json(413, {"error": f"request body of {n} bytes: the limit is {MAX_BODY}"})
        try:
            req = json.loads(self.rfile.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return self.send_json(400, {"error": f"malformed JSON: {e}"})
        code, error, args = check_request(req, self.chat)
        if error:
            return self.send_json(code, {"error": error})
        try:
            self.send_json(200, self.chat.answer(*args))
        except Exception as e:  # a bug must not stop the server: say it, keep serving
            self.send_json(500, {"error": f"{type(e).__name__}: {e}"})


def check_request(req, chat):
    """A decoded /api/chat body -> (HTTP code, error or None, (prompt, temperature, names))."""
    if not isinstance(req, dict):
        return 400, "expected a JSON object {\"prompt\": ..., \"temperature\": ..., \"models\": [...]}", None
    prompt, temperature, names = req.get("prompt"), req.get("temperature", chat.cfg.temperature), req.get("models")
    if not isinstance(prompt, str) or not prompt.strip():
        return 400, "'prompt' must be a non-empty string", None
    if len(prompt) > chat.cfg.max_prompt_chars:
        return 413, f"prompt of {len(prompt)} characters: the limit is {chat.cfg.max_prompt_chars}", None
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        return 400, "'temperature' must be a number from 0 (greedy) to 2", None
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(x, str) for x in names):
            return 400, "'models' must be a non-empty list of model names", None
        unknown = [x for x in names if x not in chat.models]
        if unknown:
            return 400, f"unknown model {unknown[0]!r} (loaded: {', '.join(chat.models)})", None
    return 200, None, (prompt, float(temperature), names)


def make_server(chat, host, port):
    """A ThreadingHTTPServer for `chat` (port 0: any free one; server.server_port says which)."""
    handler = type("Handler", (ChatHandler,), {"chat": chat})
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    cfg = parse_config(ChatConfig(), argv)
    if not 0 <= cfg.temperature <= 2 or cfg.max_new_tokens < 1:
        die("--temperature must be in [0, 2] and --max_new_tokens at least 1", 2)
    chat = Chat(cfg)
    names = ", ".join(f"{n} ({p})" for n, (_, _, p) in chat.models.items())
    print(f"models: {names}", file=sys.stderr)
    print(f"reward model: {chat.rm_path}" if chat.rm_path else
          "reward model: none (no RM scores; --rm=PATH to add them)", file=sys.stderr)
    print(f"world: {len(chat.eval_prompts)} evaluation prompts for /random, {len(chat.world)} prompts with gold "
          f"scores" if chat.world else "world: none (no /random, no gold scores)", file=sys.stderr)
    if not cfg.web:
        return terminal(chat)
    try:
        server = make_server(chat, cfg.host, cfg.port)
    except OSError as e:
        die(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e} (try --port=0 for any free port)")
    print(f"serving on http://{cfg.host}:{server.server_port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
