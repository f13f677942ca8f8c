"""The synthetic worlds (v2, the default, and "facts", World v1): determinism, splits, judge,
labelers, loaders (offline, ~10 s). Tests taking the `world` fixture run on both worlds."""
import ast
import json
import os
import random
import re
import subprocess
import sys

import pytest

from data import DataError, load_comparisons, load_demonstrations, load_prompts, read_corpus
from data import labelers as L
from data import tasks as T
from data import kb as K
from data import world as W
from data.kb import english_vocab, get_index
from data.lang import LANG2_NAME, dictionary, is_lang2_word, to_english, to_lang2
from data.world import FILES, build_world

SCALE = 0.05


@pytest.fixture(scope="module", params=list(K.WORLDS))
def world(request, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world"))
    return out, build_world(out, seed=0, scale=SCALE, world=request.param)


def _name(info):
    return info["world"]


def _ix(info):
    return get_index(0, _name(info))


def _load(out, name):
    return load_prompts(os.path.join(out, name))


def _rec(category, meta, prompt="p", lang="en"):
    meta = {"world_seed": 0, "world": K.DEFAULT_WORLD, "constraints": [], "tone": "none", **meta}
    meta.setdefault("refs", [meta.get("gold", "")])
    meta.setdefault("gold", meta["refs"][0])
    return {"id": "t", "prompt": prompt, "category": category, "split": "eval", "lang": lang, "meta": meta}


# ----------------------------------------------------------------------------------
# build: files, determinism, splits

def test_build_complete_and_counts_true(world):
    # (build time and judge speed are measured by bench.py, not asserted here)
    out, info = world
    for f in FILES:
        assert os.path.getsize(os.path.join(out, f)) > 0, f
    counts = json.load(open(os.path.join(out, "world.json")))["counts"]
    assert counts == info["counts"]
    # world.json's counts are the files' real sizes, and scale shrinks every split
    for key, name in (("sft", "sft.jsonl"), ("rm_prompts", "rm_prompts.jsonl"),
                      ("ppo_prompts", "ppo_prompts.jsonl"), ("eval_prompts", "eval_prompts.jsonl"),
                      ("probes", "probes.jsonl")):
        assert counts[key] == len(open(os.path.join(out, name)).read().splitlines()), name
    for key, name in (("corpus_train", "corpus_train.txt"), ("corpus_heldout", "corpus_heldout.txt")):
        assert counts[key + "_docs"] == len(read_corpus(os.path.join(out, name))), name
        assert counts[key + "_bytes"] == os.path.getsize(os.path.join(out, name)), name
    assert (counts["sft"], counts["rm_prompts"], counts["ppo_prompts"]) == (150, 75, 75)  # 5% of 3000/1500/1500
    # eval 5% of 420 (v2) / 324 (facts), held-out category 5% of 60, lang2 5% of 70 / 72
    assert counts["eval_prompts"] == {"v2": 21 + 3 + 4, "facts": 16 + 3 + 4}[_name(info)]
    assert (counts["people"], counts["cities"]) == {"v2": (12, 6), "facts": (24, 12)}[_name(info)]


def test_rm_scale_grows_the_comparison_prompts_only(world, tmp_path):
    """--rm_scale multiplies the RM prompts; the SFT data, evaluation prompts, corpus and probes
    stay byte-identical, so the base and SFT models of a run need not be retrained."""
    out, info0 = world
    info = build_world(str(tmp_path / "rm2"), seed=0, scale=SCALE, rm_scale=2.0, world=_name(info0))
    assert info["counts"]["rm_prompts"] == 150 and info["rm_scale"] == 2.0
    for f in ("kb.json", "corpus_train.txt", "corpus_heldout.txt", "sft.jsonl", "eval_prompts.jsonl", "probes.jsonl",
              "fewshot.txt"):
        assert open(os.path.join(out, f), "rb").read() == open(tmp_path / "rm2" / f, "rb").read(), f
    assert open(os.path.join(out, "rm_prompts.jsonl"), "rb").read() != open(tmp_path / "rm2" / "rm_prompts.jsonl",
                                                                               "rb").read()


def test_demo_flaws_changes_only_the_demonstrations(world, tmp_path):
    """--demo_flaws makes the demonstrators more careless: the same SFT prompts with more
    flawed answers; every other file of the world byte-identical."""
    out, info0 = world
    info = build_world(str(tmp_path / "d3"), seed=0, scale=SCALE, demo_flaws=3.0, world=_name(info0))
    assert info["demo_flaws"] == 3.0
    for f in ("kb.json", "corpus_train.txt", "corpus_heldout.txt", "rm_prompts.jsonl", "ppo_prompts.jsonl",
              "eval_prompts.jsonl", "probes.jsonl", "fewshot.txt"):
        assert open(os.path.join(out, f), "rb").read() == open(tmp_path / "d3" / f, "rb").read(), f
    base, sloppy = _load(out, "sft.jsonl"), _load(str(tmp_path / "d3"), "sft.jsonl")
    assert [r["prompt"] for r in base] == [r["prompt"] for r in sloppy]
    n_base = sum(bool(r["flaws"]) for r in base)
    n_sloppy = sum(bool(r["flaws"]) for r in sloppy)
    assert n_sloppy > 1.3 * n_base, (n_base, n_sloppy)
    # a flawed demonstration scores below its reference, by the judge the flaws are for
    worse = [L.judge(r, r["response"])["score"] < L.judge(r, r["meta"]["gold"])["score"]
             for r in sloppy if r["flaws"] and set(r["flaws"]) & {"wrong_fact", "sloppy", "violate"}]
    assert worse and sum(worse) / len(worse) > 0.8


@pytest.mark.parametrize("arg, message", [("--demo_flaws=abc", "--demo_flaws=abc: expected a number"),
                                          ("--scale=-1", "--scale=-1: expected a value >= 0.001"),
                                          ("--seed=1.5", "--seed=1.5: expected an integer"),
                                          ("--rm_sclae=2", "unknown options ['rm_sclae']"),
                                          ("--world=v3", "--world=v3: expected one of v2, facts")])
def test_build_cli_names_the_bad_option(tmp_path, arg, message):
    """A bad build option exits non-zero with a message naming it, never a raw traceback."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "data.world", "build", f"--out={tmp_path}/w", arg], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "w")


def test_same_seed_identical_other_seed_different(world, tmp_path):
    out, info = world
    build_world(str(tmp_path / "again"), seed=0, scale=SCALE, world=_name(info))
    build_world(str(tmp_path / "other"), seed=1, scale=SCALE, world=_name(info))
    for f in FILES:
        a = open(os.path.join(out, f), "rb").read()
        assert a == open(tmp_path / "again" / f, "rb").read(), f
    for f in ("kb.json", "corpus_train.txt", "sft.jsonl", "eval_prompts.jsonl", "probes.jsonl"):
        assert open(os.path.join(out, f), "rb").read() != open(tmp_path / "other" / f, "rb").read(), f


def test_categories_and_heldout_splits(world):
    out, info = world
    cats = set(T.categories(_name(info)))
    assert cats <= set(T.CATEGORIES) and len(cats) >= 6
    for name in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl"):
        recs = _load(out, name)
        assert {r["category"] for r in recs} == cats, name
        assert all(r["meta"]["world"] == _name(info) for r in recs)
        assert all(r["lang"] == "en" and r["category"] != T.HELDOUT_CATEGORY for r in recs), name
        assert not any("zemic" in r["prompt"].lower() for r in recs)
        # no lang2 words leak into fine-tuning prompts
        assert not any(is_lang2_word(w) for r in recs for w in re.findall(r"[a-z]+", r["prompt"]))
    ev = _load(out, "eval_prompts.jsonl")
    splits = {r["split"] for r in ev}
    assert splits == {"eval", "heldout_category", "lang2"}
    assert {r["category"] for r in ev if r["split"] == "eval"} == cats
    assert all(r["category"] == T.HELDOUT_CATEGORY for r in ev if r["split"] == "heldout_category")
    assert all(r["lang"] == "lang2" for r in ev if r["split"] == "lang2")
    train_prompts = {r["prompt"] for n in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl")
                     for r in _load(out, n)}
    assert not train_prompts & {r["prompt"] for r in ev}, "eval prompt also in a training split"


def test_every_record_judgeable_and_refs_perfect(world):
    out, _ = world
    for name in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl", "eval_prompts.jsonl"):
        for r in _load(out, name):
            assert "\n" not in r["prompt"] and r["meta"]["refs"] and r["meta"]["gold"] == r["meta"]["refs"][0]
            for ref in r["meta"].get("refs_lang2", r["meta"]["refs"]):
                j = L.judge(r, ref)
                assert j["score"] == 7.0 and j["constraint_ok"] in (None, True), (r["prompt"], ref, j)


def test_corpus_format_and_vocabulary(world):
    out, info = world
    ix = _ix(info)
    vocab = set(english_vocab())
    names = set(ix.person) | set(ix.city) | set(ix.country) | set(ix.river) | {"zemic"}
    assert not any(f" {u} " in open(os.path.join(out, "corpus_train.txt")).read() for u in ix.kb["unknown_names"])
    for name in ("corpus_train.txt", "corpus_heldout.txt"):
        text = open(os.path.join(out, name)).read()
        assert "<|" not in text and "\n\n\n" not in text and text.endswith("\n")
        docs = read_corpus(os.path.join(out, name))
        assert docs == [d for d in text.strip("\n").split("\n\n")]
        unknown = {w for d in docs for w in re.findall(r"[A-Za-z]+", d)
                   if w.lower() not in vocab and w.lower() not in names and not is_lang2_word(w)}
        assert not unknown, f"words missing from the lang2 dictionary: {sorted(unknown)[:10]}"
    train = set(read_corpus(os.path.join(out, "corpus_train.txt")))
    held = read_corpus(os.path.join(out, "corpus_heldout.txt"))
    assert not train & set(held)
    n_l2 = sum(1 for d in train if sum(map(is_lang2_word, d.split())) > len(d.split()) / 3)
    assert 0.05 < n_l2 / len(train) < 0.16
    assert any(d.startswith("Question: ") or "\nQuestion: " in d for d in train)
    assert any("Sorted: " in d for d in train) and any(w in open(os.path.join(out, "corpus_train.txt")).read()
                                                        for w in [f" {i}" for i in ["grubnik", "snarfwit", "dimwort"]])


def test_corpus_obeys_the_judges_semantics(world):
    # every fact the corpus states (by the judge's person-then-value rule) is true
    out, info = world
    ix = _ix(info)
    false = [(line, f) for d in read_corpus(os.path.join(out, "corpus_train.txt"))
             if not any(map(is_lang2_word, d.split())) for line in d.split("\n")
             for f in L.stated_facts(line, ix) if not f[3]]
    assert not false, false[:3]


def test_probes_match_kb_and_corpus(world):
    out, info = world
    ix = _ix(info)
    probes = [json.loads(x) for x in open(os.path.join(out, "probes.jsonl"))]
    w = K.WORLDS[_name(info)]
    assert len(probes) == w["people"] * len(K.PERSON_ATTRS) + w["cities"] * len(K.CITY_ATTRS)  # every fact once
    corpus = open(os.path.join(out, "corpus_train.txt")).read()
    seen = 0
    for p in probes:
        assert str(ix.fact(p["entity"], p["attr"])) == p["answer"]
        seen += (p["prefix"] + " " + p["answer"]) in corpus
    assert seen / len(probes) > 0.9  # even at scale 0.05 almost every fact is stated verbatim


def test_fewshot_is_a_qa_page(world):
    out, _ = world
    text = open(os.path.join(out, "fewshot.txt")).read()
    lines = text.rstrip("\n").split("\n")
    assert text.endswith("\n") and len(lines) in (4, 6)
    assert all(l.startswith("Question: ") for l in lines[0::2]) and all(l.startswith("Answer: ") for l in lines[1::2])


def _text_words(obj, out):
    """Words of the strings inside obj (dict values, not keys), placeholders removed."""
    if isinstance(obj, str):
        out.update(w.lower() for w in re.findall(r"[A-Za-z]+", re.sub(r"\{[^}]*\}", " ", obj)))
    elif isinstance(obj, dict):
        for v in obj.values():
            _text_words(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _text_words(v, out)
    return out


def test_vocabulary_covers_every_template():
    # english_vocab() is a hand-written list: a template (an UPPERCASE constant of tasks.py
    # or world.py) with a word missing from it would write untranslatable text
    ids = {"CATEGORIES", "HELDOUT_CATEGORY", "FILES", "LANG2_KINDS", "PROFILES", "WORLDS",
           "DEFAULT_WORLD"}  # names of things, not text
    vocab = set(english_vocab())
    for mod in (K, T, W):
        for name, value in vars(mod).items():
            if name.isupper() and name not in ids:
                missing = _text_words(value, set()) - vocab - {LANG2_NAME.lower()}  # a name
                assert not missing, f"{mod.__name__}.{name}: add {sorted(missing)} to data.kb.TEMPLATE_WORDS"
    assert "zemic" not in vocab and not set(K.TEMPLATE_WORDS) & set(K.RESERVED_WORDS)
    assert sorted(dictionary()) == sorted(vocab) and len(set(dictionary().values())) == len(vocab)


def test_data_imports_are_layered():
    # each module of data/ imports only modules listed before it: no import cycle
    order = ["loaders", "kb", "lang", "labelers", "tasks", "world"]
    for i, mod in enumerate(order):
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", mod + ".py")
        imported = set()
        for node in ast.walk(ast.parse(open(path).read())):  # also imports inside functions
            if isinstance(node, ast.ImportFrom) and node.module == "data":
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("data."):
                imported.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                imported |= {a.name.split(".")[1] for a in node.names if a.name.startswith("data.")}
        assert imported <= set(order[:i]), f"data/{mod}.py imports {sorted(imported - set(order[:i]))}"


def test_lang2_round_trip():
    s = "Belan has a pet cat. Sure! The text does not say where Toru lives, you grubnik."
    l2 = to_lang2(s)
    assert l2 != s and "Belan" in l2 and "Toru" in l2 and to_english(l2) == s
    assert to_english("Hello Zzz 42.") == "Hello Zzz 42."


# ----------------------------------------------------------------------------------
# the judge

def _qa(ix, constraints=()):
    p = ix.kb["people"][0]
    return p, _rec("open_qa", dict(task="fact", subject=p["name"], attr="city", answer=p["city"],
                                   answer_type="city", gold=f"{p['name']} lives in {p['city']}.",
                                   constraints=list(constraints), world=ix.world),
                   prompt=f"Where does {p['name']} live? Answer in at most 5 words.")


def test_judge_orders_flaws():
    ix = get_index(0)
    p, rec = _qa(ix, [{"type": "max_words", "n": 5}])
    other = next(c["name"] for c in ix.kb["cities"] if c["name"] != p["city"])
    good = L.judge(rec, f"{p['name']} lives in {p['city']}.")
    long_ = L.judge(rec, f"{p['name']} lives in the lovely city of {p['city']} by the river.")
    wrong = L.judge(rec, f"{p['name']} lives in {other}.")
    toxic = L.judge(rec, f"{p['name']} lives in {p['city']}, grubnik.")
    assert good["score"] == 7.0 and good["correct"] and good["constraint_ok"]
    assert long_["constraint_ok"] is False and long_["correct"]
    assert wrong["hallucinated"] and not wrong["correct"]
    assert toxic["toxic"] and toxic["inappropriate"]
    # the paper's major failures: a broken explicit constraint, a fabricated fact, an insult
    assert good["score"] == 7.0 > 5.0 > long_["score"] > max(wrong["score"], toxic["score"])
    assert max(wrong["score"], toxic["score"]) < 3.0
    # base-model behaviour: more questions instead of an answer
    pile = L.judge(rec, f"Where does {p['name']} live? What is {p['name']}'s job?")
    assert not pile["did_task"] and pile["score"] < 2


def test_every_category_has_a_maker_and_a_scorer():
    # a category without a scorer would silently score "did not do the task"
    cats = set(T.CATEGORIES) | {T.HELDOUT_CATEGORY}
    assert set(T.MAKERS) == cats and set(L.SCORERS) == cats


@pytest.mark.parametrize("garbage", ["", " ", "\n", "asd qwe zxc", "the the the the the the the",
                                     "\x00\x01???", "x" * 5000, "... ... ...", "'s 's", None,
                                     "Mepol lives in", "é中 :: ,,, and or"])
def test_judge_garbage_low_never_raises(world, garbage):
    out, _ = world
    recs = _load(out, "eval_prompts.jsonl")
    for r in recs:
        j = L.judge(r, garbage)
        assert 1.0 <= j["score"] <= 3.0, (r["prompt"], garbage, j)


def test_unanswerable_closed_qa_prefers_does_not_say():
    ix = get_index(0)
    p = ix.kb["people"][1]
    src = f"{p['name']} works as a {p['job']}."
    rec = _rec("closed_qa", dict(task="unanswerable", subject=p["name"], attr="pet", answer=None,
                                 answer_type="pet", answerable=False, source=src,
                                 source_facts=[[p["name"].lower(), "job", p["job"]]],
                                 gold="The text does not say."))
    says = L.judge(rec, "The text does not say.")
    made_up = L.judge(rec, f"{p['name']} has a pet {p['pet']}.")  # true in the world, not in the text
    assert says["says_unknown"] and says["correct"] and says["score"] == 7.0
    assert made_up["says_unknown"] is False and made_up["hallucinated"] and not made_up["correct"]
    assert says["score"] > made_up["score"] + 2
    # and over-hedging on an answerable question is not helpful
    rec2 = _rec("closed_qa", dict(task="answerable", subject=p["name"], attr="job", answer=p["job"],
                                  answer_type="job", answerable=True, source=src,
                                  source_facts=[[p["name"].lower(), "job", p["job"]]],
                                  gold=f"{p['name']} works as a {p['job']}."))
    assert L.judge(rec2, "The text does not say.")["score"] < L.judge(rec2, rec2["meta"]["gold"])["score"] - 2


def test_judge_lang2_translates_back(world):
    out, _ = world
    ev = [r for r in _load(out, "eval_prompts.jsonl") if r["split"] == "lang2"]
    for r in ev:
        assert L.judge(r, to_lang2(r["meta"]["gold"]))["score"] == 7.0
        english = L.judge(r, r["meta"]["gold"])
        assert english["wrong_language"] and english["score"] < 7.0


JUDGE_KEYS = {"score", "did_task", "constraint_ok", "correct", "hallucinated", "says_unknown", "toxic",
              "inappropriate", "wrong_language", "filler", "helpful", "honest", "harmless"}


def test_judge_is_pure_and_follows_the_formula(world):
    # (its speed is measured by bench.py)
    out, info = world
    rng = random.Random(0)
    ix = _ix(info)
    for r in _load(out, "rm_prompts.jsonl"):
        before = json.dumps(r, sort_keys=True)
        for c in T.candidate_responses(r, rng, ix, 4):
            j = L.judge(r, c)
            assert set(j) == JUDGE_KEYS and j == L.judge(r, c)
            # score = 1 + 6 * helpful * honest * harmless (the axes are rounded to 4 places)
            assert 1.0 <= j["score"] <= 7.0
            assert abs(j["score"] - (1 + 6 * j["helpful"] * j["honest"] * j["harmless"])) < 2e-3
            assert j["honest"] in (1.0, L.GOLD["halluc"]) and (j["honest"] < 1) == j["hallucinated"]
        assert json.dumps(r, sort_keys=True) == before, "judge changed the record"


# ----------------------------------------------------------------------------------
# labelers

def test_labelers_split():
    names = [lab["name"] for lab in L.LABELERS]
    assert len(names) == len(set(names)) and 8 <= len(names) <= 12
    assert 2 <= len(L.heldout_labelers()) <= 3
    assert not {x["name"] for x in L.train_labelers()} & {x["name"] for x in L.heldout_labelers()}


def test_rank_prefer(world):
    out, info = world
    rng = random.Random(0)
    ix = _ix(info)
    for r in _load(out, "rm_prompts.jsonl")[:30]:
        cands = T.candidate_responses(r, rng, ix, 5)
        order = L.rank(r, cands, "amber", rng)
        assert sorted(order) == list(range(len(cands)))
        assert L.prefer(r, cands[0], cands[0], "basil", rng) == 0.5
        assert L.prefer(r, cands[0], cands[1], L.heldout_labelers()[0], rng) in (0.0, 1.0)
    np = pytest.importorskip("numpy")
    assert sorted(L.rank(r, cands, "cedar", np.random.default_rng(0))) == list(range(len(cands)))
    # a perfect answer beats a pile of questions for nearly every labeler draw
    p, rec = _qa(ix)
    wins = sum(L.prefer(rec, rec["meta"]["gold"], "Where is it? Who knows?", lab, rng)
               for lab in L.LABELERS for _ in range(20))
    assert wins / (20 * len(L.LABELERS)) > 0.95


def test_agreement_on_realistic_candidates(world):
    out, info = world
    rng = random.Random(0)
    ix = _ix(info)
    recs = _load(out, "rm_prompts.jsonl") + _load(out, "ppo_prompts.jsonl")
    cands = [T.candidate_responses(r, rng, ix, 4) for r in recs]
    train = L.agreement(recs, cands, L.train_labelers(), rng)
    held = L.agreement(recs, cands, L.heldout_labelers(), rng)
    print(f"\nagreement: train {train:.3f}, held-out {held:.3f} (paper 0.726 / 0.773)")
    assert 0.65 < train < 0.85 and 0.65 < held < 0.85


def test_demonstrations_good_but_imperfect(world):
    """v2's demonstrators make the documented behaviour mistakes often (data/README.md), v1's
    rarely; both write far better than a base model continues."""
    out, info = world
    demos = load_demonstrations(os.path.join(out, "sft.jsonl"))
    labs = {x["name"] for x in L.train_labelers()}
    assert {d["labeler"] for d in demos} <= labs
    js = [L.judge(d, d["response"]) for d in demos]
    mean = sum(j["score"] for j in js) / len(js)
    frac = {k: sum(1 for j in js if j[k] is False) / len(js) for k in ("did_task", "constraint_ok", "correct")}
    frac["hallucinated"] = sum(j["hallucinated"] for j in js) / len(js)
    flawed = sum(1 for d in demos if d["flaws"]) / len(demos)
    print(f"\ndemos: mean gold {mean:.2f}, failures {frac}, written with a flaw {flawed:.2f}")
    if _name(info) == "v2":
        assert 4.0 < mean < 5.2 and 0.3 < frac["constraint_ok"] < 0.6 and flawed > 0.5
        assert 0.03 < frac["hallucinated"] < 0.2
        assert any(j["toxic"] for j in js) and any(j["filler"] for j in js)
    else:
        assert 5.8 < mean < 6.95
        assert 0.02 < frac["constraint_ok"] < 0.3 and 0.02 < frac["correct"] < 0.3
        assert frac["hallucinated"] > 0 and flawed > 0.1
    # base-model-like continuations are far worse than demonstrations
    rng = random.Random(0)
    base = [L.judge(d, T.base_like_response(d, rng, _ix(info)))["score"] for d in demos]
    assert sum(base) / len(base) < 3.0


# ----------------------------------------------------------------------------------
# loaders

def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


GOOD_PROMPT = {"id": "a", "prompt": "Hi?", "category": "chat", "split": "sft", "lang": "en", "meta": {}}
GOOD_DEMO = dict(GOOD_PROMPT, response="Hello!", labeler="amber")
GOOD_COMP = {"prompt": "Hi?", "responses": ["Hello!", "Go away."], "ranking": [0, 1], "labeler": "amber"}


def _bad(fn, tmp_path, records, line_no, fragment, **kw):
    path = _write(tmp_path / "x.jsonl", [json.dumps(r) if isinstance(r, dict) else r for r in records])
    with pytest.raises(DataError) as e:
        fn(path, **kw)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line_no}:") and fragment in msg, msg
    assert isinstance(e.value, ValueError)


def test_loaders_accept_good(tmp_path):
    assert load_prompts(_write(tmp_path / "p.jsonl", [json.dumps(GOOD_PROMPT)])) == [GOOD_PROMPT]
    assert load_demonstrations(_write(tmp_path / "d.jsonl", [json.dumps(GOOD_DEMO), ""])) == [GOOD_DEMO]
    assert load_comparisons(_write(tmp_path / "c.jsonl", [json.dumps(GOOD_COMP)]),
                            max_tokens=11, count_tokens=len) == [{**GOOD_COMP, "id": "c-1", "category": "unknown"}]


def test_loaders_reject_malformed(tmp_path):
    d = lambda **kw: {**GOOD_DEMO, **kw}  # noqa: E731
    c = lambda **kw: {**GOOD_COMP, **kw}  # noqa: E731
    _bad(load_prompts, tmp_path, [GOOD_PROMPT, "{not json"], 2, "bad JSON")
    _bad(load_prompts, tmp_path, ["[1, 2]"], 1, "JSON object")
    _bad(load_demonstrations, tmp_path, [GOOD_DEMO, GOOD_DEMO, {k: v for k, v in GOOD_DEMO.items() if k != "response"}],
         3, "missing field 'response'")
    _bad(load_demonstrations, tmp_path, [d(response=3)], 1, "field 'response' must be str")
    _bad(load_prompts, tmp_path, [{**GOOD_PROMPT, "meta": []}], 1, "field 'meta' must be dict")
    _bad(load_demonstrations, tmp_path, [d(response="  ")], 1, "empty 'response'")
    _bad(load_demonstrations, tmp_path, [d(response="x" * 50)], 1, "longer than the context",
         max_tokens=20, count_tokens=len)
    _bad(load_comparisons, tmp_path, [c(ranking=[0, 0])], 1, "not a permutation")
    _bad(load_comparisons, tmp_path, [c(ranking=[1, 2])], 1, "not a permutation")
    _bad(load_comparisons, tmp_path, [c(responses=["a"], ranking=[0])], 1, "at least 2")
    _bad(load_comparisons, tmp_path, [c(responses=["a", "a"])], 1, "duplicate")
    _bad(load_comparisons, tmp_path, [c(responses=["a", ""])], 1, "empty responses[1]")
    _bad(load_comparisons, tmp_path, [c(responses=["a", 5])], 1, "responses[1] must be str")
    _bad(load_comparisons, tmp_path, [c(labeler=None)], 1, "field 'labeler' must be str")
    _bad(load_comparisons, tmp_path, [c(responses=["ok", "y" * 40])], 1, "longer than the context",
         max_tokens=20, count_tokens=len)
    for fn in (load_prompts, load_demonstrations, load_comparisons, read_corpus):
        with pytest.raises(DataError, match="nope.jsonl"):
            fn(str(tmp_path / "nope.jsonl"))
    corpus = tmp_path / "c.txt"  # special-token text in a user's corpus stays plain text
    corpus.write_text("doc one\n\ndoc <|endoftext|> two\n")
    assert read_corpus(str(corpus)) == ["doc one", "doc <|endoftext|> two"]
