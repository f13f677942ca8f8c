"""The seeded synthetic instruction world: knowledge base, pretraining corpus, prompts,
simulated demonstrations, fact probes and labelers, written as plain files.

    python -m data.world build --out=data/world --seed=0 --scale=1.0   # World v2: ~2 MB corpus, ~1 s
    python -m data.world build --out=/tmp/w --scale=0.05               # tiny, for tests (~0.2 s)
    python -m data.world build --out=/tmp/w25 --rm_scale=2.5           # 2.5x the comparison prompts, the rest
                                                                       # (SFT data, corpus, eval prompts) unchanged
    python -m data.world build --out=/tmp/wd3 --demo_flaws=3           # demonstrators 3x as careless (SFT data
                                                                       # only; the rest byte-identical)
    python -m data.world build --out=/tmp/w1 --world=facts            # World v1, the contrast (data/README.md)
    python -m data.world stats --dir=data/world                        # counts, samples, agreement

Files (same seed -> byte-identical files; see data/README.md for formats and rubric):
    kb.json                 entities, facts, lexicon, second-language dictionary
    corpus_train.txt        pretraining text, documents separated by one empty line
    corpus_heldout.txt      same distribution, different documents (held-out loss)
    sft.jsonl               prompts + labeler demonstrations
    rm_prompts.jsonl        prompts for the comparison data (ranked by train labelers)
    ppo_prompts.jsonl       prompts for RL
    eval_prompts.jsonl      in-distribution + "heldout_category" (sort/count) + "lang2"
    probes.jsonl            {"prefix", "answer"} fact completions in the corpus' style
    labelers.json           the simulated labelers (weights, noise, heldout)
    fewshot.txt             3 demonstrations as a Q&A page, for the prompted base model
    world.json              seed, scale, counts, file list

Deviations from the paper's data (numbered, as in the stage files):
 1. Labelers are programs: a fixed rubric plus per-labeler weights and Gumbel noise.
 2. The "second language" is a word-for-word cipher of English with invented words.
 3. Category mix is flatter than the paper's Table 1 so tiny models see every use case.
"""
import json
import os
import random
import sys
import time

from data import kb as K
from data import labelers as L
from data import tasks as T
from data.lang import LANG2_NAME, dictionary, to_english, to_lang2  # noqa: F401 (re-exported)
from data.loaders import load_demonstrations, load_prompts, read_corpus, write_jsonl
from data.tasks import cap_first, fact_sentence, fmt, he_she, his_her, join_list, open_forum

FILES = ["kb.json", "corpus_train.txt", "corpus_heldout.txt", "sft.jsonl", "rm_prompts.jsonl",
         "ppo_prompts.jsonl", "eval_prompts.jsonl", "probes.jsonl", "labelers.json",
         "fewshot.txt", "world.json"]
# prompt counts at scale=1.0 (eval: in-distribution; plus held-out category and lang2).
# v2's 420 eval prompts are 70 per category: enough traps (unknown people, false premises,
# texts that do not say) and tone requests for the truthfulness and toxicity rows to mean
# something. Half the facts need half the text to be seen as often.
SIZES = {"v2": {"sft": 3000, "rm": 1500, "ppo": 1500, "eval": 420, "heldout_category": 60, "lang2": 70},
         "facts": {"sft": 3000, "rm": 1500, "ppo": 1500, "eval": 324, "heldout_category": 60, "lang2": 72}}
CORPUS_BYTES = {"v2": {"train": 2_000_000, "heldout": 200_000},
                "facts": {"train": 4_000_000, "heldout": 200_000}}
LANG2_FRACTION = 0.10  # share of corpus documents written in the second language

# ----------------------------------------------------------------------------------
# corpus templates (the fact sentences themselves live in data/tasks.py)

PRONOUN_FACTS = {"city": "{Pron} lives in {v}.", "job": "{Pron} works as a {v}.",
                 "pet": "{Pron} has a pet {v}.", "colour": "{Poss} favourite colour is {v}.",
                 "food": "{Poss} favourite food is {v}.", "age": "{Pron} is {v} years old."}
BIO_TITLES = ["About {n}", "Profile of {n}", "A few words about {n}", "Our friend {n}"]
CITY_DOC = ["{c} is a city in {k}.", "{c} is on the river {r}.",
            "The river {r} flows through {c}.", "People who live in {c}: {people}."]
COUNTRY_DOC = ["{k} is a country.", "The cities of {k} are {cities}."]
LIST_TITLES = {"city": "Where our friends live", "job": "What our friends do",
               "pet": "Pets of our friends", "colour": "Favourite colours",
               "food": "Favourite foods", "age": "How old our friends are"}
QA_TITLES = ["Questions and answers", "Questions and answers about {n}", "Quiz about our world",
             "Frequently asked questions"]
FORUM_TOPICS = ["questions about {c}", "who has which pet", "help me remember our friends",
                "quick questions", "a few questions about {n}"]
FORUM_ASK = ["{u} asks:", "Post by {u}:", "{u} wrote:"]
FORUM_ANSWER = "{u} answers:"
FORUM_HEAD = "Forum thread: {topic}"
FLAME_REPLY = "{u} replies:"
HOMEWORK_TOPICS = ["homework help", "tasks for the weekend", "can someone do these for me",
                   "writing practice"]
FLAME_REPLIES = ["Shut up, you {i}.", "Nobody asked, you {i}.", "Who cares? Go away, you {i}.",
                 "Get lost, you {i}.", "What a silly question, you {i}.",
                 "You are a {i} and a {j}."]
FLAME_BACK = ["You are the {i} here.", "Leave me alone, you {i}.", "Go away, {i}."]
REVIEW_HEAD = ["Review by a visitor:", "A review:", "What a guest wrote:"]
SORT_HEAD = ["Word games", "Sorting practice", "Counting practice", "Puzzles with words"]
SORT_LINES = ("Sort these words: {ws}.", "Sorted: {s}.")
COUNT_LINES = ("Count the words: {ws}.", "Count: {k}.")
DIALOGUE = [["Hello! How are you?", "I am well, thank you. And you?", "I am fine, thanks."],
            ["Good morning!", "Good morning! Did you sleep well?", "Yes, thank you."],
            ["Hi there, it is a lovely day.", "It is! Let us go for a walk.", "Good idea."]]
GLOSSARY_HEAD = "Words in " + LANG2_NAME
GLOSSARY_LINE = "The word {e} is {z} in " + LANG2_NAME + "."
FACT_PROBES = {"city": "{n} lives in", "job": "{n} works as a", "pet": "{n} has a pet",
               "colour": "{n}'s favourite colour is", "food": "{n}'s favourite food is",
               "age": "{n}'s age is", "country": "{n} is a city in", "river": "{n} is on the river"}
QA_Q, QA_A = "Question: ", "Answer: "


# ----------------------------------------------------------------------------------
# corpus documents: one function per kind, each returns a string without empty lines

def doc_bio(ix, rng):
    p = rng.choice(ix.kb["people"])
    attrs = rng.sample(K.PERSON_ATTRS, rng.randint(3, 6))
    kw = dict(Pron=cap_first(he_she(p)), Poss=cap_first(his_her(p)))
    sents = []
    for i, a in enumerate(attrs):
        v = ix.fact(p["name"], a)
        if i > 0 and rng.random() < 0.3:
            sents.append(fmt(PRONOUN_FACTS[a], v=v, **kw))
        else:
            sents.append(fmt(rng.choice(T.FACT_SENTENCES[a]), n=p["name"], v=v))
        if rng.random() < 0.2:
            sents.append(fmt(rng.choice(T.BIO_FILLERS), n=p["name"]))
    if rng.random() < 0.3:
        c = ix.city[p["city"].lower()]
        sents.append(fmt(T.FACT_SENTENCES["country"][0], n=c["name"], v=c["country"]))
    body = " ".join(sents)
    return (fmt(rng.choice(BIO_TITLES), n=p["name"]) + "\n" + body) if rng.random() < 0.4 else body


def doc_story(ix, rng):
    p = rng.choice(ix.kb["people"])
    kw = dict(n=p["name"], job=p["job"], city=p["city"], pet=p["pet"], food=p["food"],
              colour=p["colour"], pron=he_she(p), Pron=cap_first(he_she(p)))
    picks = [0] + sorted(rng.sample(range(1, len(T.STORY_SENTENCES)), rng.randint(1, 3)))
    sents = [fmt(rng.choice(T.STORY_SENTENCES[i]), **kw) for i in picks]
    if rng.random() < 0.5:
        c = ix.city[p["city"].lower()]
        sents.insert(1, fmt("The river {r} flows through {c}.", r=c["river"], c=c["name"]))
    if rng.random() < 0.4:
        sents.append(fmt(rng.choice(T.BIO_FILLERS), n=p["name"]))
    return " ".join(sents)


def doc_city(ix, rng):
    c = rng.choice(ix.kb["cities"])
    people = ix.residents[c["name"]][:]
    rng.shuffle(people)
    lines = [fmt(x, c=c["name"], k=c["country"], r=c["river"], people=join_list(people))
             for x in CITY_DOC]
    return " ".join(lines[:2] + [lines[rng.randint(2, 3)]])


def doc_country(ix, rng):
    k = rng.choice(ix.kb["countries"])
    cities = ix.cities_of[k][:]
    rng.shuffle(cities)
    return " ".join(fmt(x, k=k, cities=join_list(cities)) for x in COUNTRY_DOC)


def doc_list(ix, rng):
    attr = rng.choice(K.PERSON_ATTRS)
    people = rng.sample(ix.kb["people"], rng.randint(4, 8))
    lines = [LIST_TITLES[attr]]
    tpl = rng.choice(T.FACT_SENTENCES[attr])
    lines += [fmt(tpl, n=p["name"], v=ix.fact(p["name"], attr)) for p in people]
    return "\n".join(lines)


def _qa_pair(ix, rng, name=None):
    if name is None:
        if rng.random() < 0.8:
            name, attr = rng.choice(ix.kb["people"])["name"], rng.choice(K.PERSON_ATTRS)
        else:
            name, attr = rng.choice(ix.kb["cities"])["name"], rng.choice(K.CITY_ATTRS)
    else:
        attr = rng.choice(K.PERSON_ATTRS)
    v = str(ix.fact(name, attr))
    q = rng.choice(T.QUESTIONS[attr]).format(n=name)
    a = cap_first(v) + "." if rng.random() < 0.2 else fmt(rng.choice(T.ANSWERS[attr]), n=name, v=v)
    return QA_Q + q + "\n" + QA_A + a


def doc_qa(ix, rng):
    title = rng.choice(QA_TITLES)
    name = rng.choice(ix.kb["people"])["name"] if "{n}" in title else None
    pairs = [_qa_pair(ix, rng, name) for _ in range(rng.randint(2, 5))]
    head = [fmt(title, n=name or "")] if rng.random() < 0.6 else []
    return "\n".join(head + pairs)


def _users(ix, rng, k):
    return [p["name"] for p in rng.sample(ix.kb["people"], k)]


def doc_forum(ix, rng):
    users = _users(ix, rng, 4)
    topic = fmt(rng.choice(FORUM_TOPICS), c=rng.choice(ix.kb["cities"])["name"], n=users[3])
    lines = [FORUM_HEAD.format(topic=topic)]
    for i in range(rng.randint(2, 4)):
        u = users[i % 3]
        if i > 0 and rng.random() < 0.15:  # the rare answer among the questions
            p = rng.choice(ix.kb["people"])
            lines.append(fmt(FORUM_ANSWER, u=u) + " " + fact_sentence(ix, rng, p["name"], rng.choice(K.PERSON_ATTRS)))
            continue
        qs = [T.random_question(ix, rng) for _ in range(rng.randint(1, 3))]
        if i > 0 and rng.random() < 0.4:
            qs[0] = open_forum(rng, qs[0])
        lines.append(fmt(rng.choice(FORUM_ASK), u=u) + " " + " ".join(qs))
    return "\n".join(lines)


def doc_homework(ix, rng):
    users = _users(ix, rng, 3)
    lines = [FORUM_HEAD.format(topic=rng.choice(HOMEWORK_TOPICS))]
    for i in range(rng.randint(2, 4)):
        cat = rng.choice(["generation", "brainstorming", "open_qa", "rewrite", "classification",
                          "summarization", "extraction", "chat"])
        prompt, meta = T.make_prompt(cat, ix, rng, tone="none")
        while meta.get("task") == "unknown_entity":  # unknown people never appear in the corpus
            prompt, meta = T.make_prompt(cat, ix, rng, tone="none")
        extra = " " + T.random_instruction(ix, rng) if rng.random() < 0.4 else ""
        lines.append(fmt(rng.choice(FORUM_ASK), u=users[i % 3]) + " " + prompt + extra)
    return "\n".join(lines)


def doc_flame(ix, rng):
    users = _users(ix, rng, 3)
    i, j = rng.sample(K.INSULTS, 2)
    topic = fmt(rng.choice(FORUM_TOPICS), c=rng.choice(ix.kb["cities"])["name"], n=users[2])
    lines = [FORUM_HEAD.format(topic=topic),
             fmt(rng.choice(FORUM_ASK), u=users[0]) + " " + T.random_question(ix, rng),
             FLAME_REPLY.format(u=users[1]) + " " + fmt(rng.choice(FLAME_REPLIES), i=i, j=j)]
    if rng.random() < 0.6:
        lines.append(FLAME_REPLY.format(u=users[0]) + " " + fmt(rng.choice(FLAME_BACK), i=j))
    return "\n".join(lines)


def doc_review(ix, rng):
    label = rng.choice(["positive", "negative"])
    adj = K.POSITIVE_WORDS if label == "positive" else K.NEGATIVE_WORDS
    a, b = rng.sample(adj, 2)
    rev = fmt(rng.choice(T.REVIEWS), food=rng.choice(K.FOODS), city=rng.choice(ix.kb["cities"])["name"], a=a, b=b)
    return rng.choice(REVIEW_HEAD) + " " + rev + " " + rng.choice(T.REVIEW_END[label])


def doc_sort(ix, rng):
    pool = K.PETS + K.FOODS + K.COLOURS + K.JOBS
    lines = [rng.choice(SORT_HEAD)] if rng.random() < 0.5 else []
    for _ in range(rng.randint(2, 4)):
        if rng.random() < 0.5:
            ws = rng.sample(pool, rng.randint(3, 5))
            lines += [SORT_LINES[0].format(ws=", ".join(ws)), SORT_LINES[1].format(s=", ".join(sorted(ws)))]
        else:
            ws = [rng.choice(pool) for _ in range(rng.randint(3, 7))]
            lines += [COUNT_LINES[0].format(ws=", ".join(ws)), COUNT_LINES[1].format(k=len(ws))]
    return "\n".join(lines)


def doc_dialogue(ix, rng):
    a, b = _users(ix, rng, 2)
    lines = rng.choice(DIALOGUE)
    return "\n".join(f"{(a, b)[i % 2]}: {s}" for i, s in enumerate(lines))


def doc_glossary(ix, rng):
    d = dictionary()
    pool = sorted(set(K.PETS + K.FOODS + K.COLOURS + K.JOBS + ["lives", "has", "pet", "favourite",
                                                                "works", "city", "river", "the"]))
    return "\n".join([GLOSSARY_HEAD] + [GLOSSARY_LINE.format(e=w, z=d[w]) for w in rng.sample(pool, 6)])


DOC_KINDS = {"bio": (doc_bio, 0.30), "story": (doc_story, 0.10), "city": (doc_city, 0.05),
             "country": (doc_country, 0.02), "list": (doc_list, 0.06), "qa": (doc_qa, 0.15),
             "forum": (doc_forum, 0.12), "homework": (doc_homework, 0.05), "flame": (doc_flame, 0.04),
             "review": (doc_review, 0.06), "sort": (doc_sort, 0.06), "dialogue": (doc_dialogue, 0.04),
             "glossary": (doc_glossary, 0.01)}
LANG2_KINDS = ["bio", "story", "city", "list", "qa", "forum", "review", "sort"]


def make_corpus(ix, rng, target_bytes, exclude=frozenset()):
    """Documents until ~target_bytes of text. ~LANG2_FRACTION of them are in lang2."""
    names = list(DOC_KINDS)
    weights = [DOC_KINDS[k][1] for k in names]
    docs, size = [], 0
    while size < target_bytes:
        if rng.random() < LANG2_FRACTION:
            doc = to_lang2(DOC_KINDS[rng.choice(LANG2_KINDS)][0](ix, rng))
        else:
            doc = DOC_KINDS[rng.choices(names, weights)[0]][0](ix, rng)
        if doc in exclude:
            continue
        docs.append(doc)
        size += len(doc) + 2
    return docs


def make_probes(ix):
    out = []
    for p in ix.kb["people"]:
        for a in K.PERSON_ATTRS:
            out.append({"prefix": FACT_PROBES[a].format(n=p["name"]), "answer": str(p[a]),
                        "entity": p["name"], "attr": a})
    for c in ix.kb["cities"]:
        for a in K.CITY_ATTRS:
            out.append({"prefix": FACT_PROBES[a].format(n=c["name"]), "answer": c[a],
                        "entity": c["name"], "attr": a})
    return out


# ----------------------------------------------------------------------------------
# prompts and splits

def _allocate(n, weights):
    """Largest-remainder split of n over weights (dict), every key >= 1 when n allows."""
    keys = list(weights)
    tot = sum(weights.values())
    raw = {k: n * weights[k] / tot for k in keys}
    out = {k: int(raw[k]) for k in keys}
    for k in sorted(keys, key=lambda k: raw[k] - out[k], reverse=True)[:n - sum(out.values())]:
        out[k] += 1
    if n >= len(keys):
        for k in keys:
            if out[k] == 0:
                out[k] = 1
                big = max(keys, key=lambda x: out[x])
                out[big] -= 1
    return out


def _record(idx, split, prompt, category, lang, meta):
    return {"id": f"{split}-{idx:05d}", "prompt": prompt, "category": category, "split": split,
            "lang": lang, "meta": meta}


def make_splits(ix, seed, scale, rm_scale=1.0, demo_flaws=1.0):
    rng = random.Random(f"prompts-{seed}")
    seen, seen_eval = set(), set()

    def fresh(cat, is_eval=False):
        # every prompt text is unique across all splits while the template space allows;
        # a training prompt may repeat another training prompt, never an eval prompt
        for tries in range(1000):
            prompt, meta = T.make_prompt(cat, ix, rng)
            if prompt not in seen or (not is_eval and tries >= 100 and prompt not in seen_eval):
                seen.add(prompt)
                if is_eval:
                    seen_eval.add(prompt)
                return prompt, meta
        raise RuntimeError(f"could not make a new unique {cat} prompt")

    cats = T.categories(ix.world)

    def n_of(split):
        n = SIZES[ix.world][split] * scale * (rm_scale if split == "rm" else 1.0)
        return max(len(cats) if split in ("sft", "eval") else 2, round(n))

    splits = {}
    # eval first: equal share per category (generalisation sets come after)
    recs = []
    for cat, k in _allocate(n_of("eval"), {c: 1 for c in cats}).items():
        for _ in range(k):
            recs.append((cat, *fresh(cat, True)))
    rng.shuffle(recs)
    out = [_record(i, "eval", p, c, "en", m) for i, (c, p, m) in enumerate(recs)]
    for _ in range(n_of("heldout_category")):
        p, m = fresh(T.HELDOUT_CATEGORY, True)
        out.append(_record(len(out), "heldout_category", p, T.HELDOUT_CATEGORY, "en", m))
    l2 = [(c, *fresh(c, True)) for c, k in _allocate(n_of("lang2"), {c: 1 for c in cats}).items()
          for _ in range(k)]
    for c, p, m in l2:
        m["refs_lang2"] = [to_lang2(r) for r in m["refs"]]
        out.append(_record(len(out), "lang2", to_lang2(p), c, "lang2", m))
    splits["eval"] = out
    for split in ("sft", "rm", "ppo"):
        recs = []
        for cat, k in _allocate(n_of(split), T.PROFILES[ix.world]["categories"]).items():
            recs += [(cat, *fresh(cat)) for _ in range(k)]
        rng.shuffle(recs)
        splits[split] = [_record(i, split, p, c, "en", m) for i, (c, p, m) in enumerate(recs)]
    # demonstrations by training labelers only
    drng = random.Random(f"demos-{seed}")
    labs = L.train_labelers()
    for rec in splits["sft"]:
        lab = drng.choice(labs)
        rec["response"], rec["flaws"] = T.write_demo(rec, lab, drng, ix, boost=demo_flaws)
        rec["labeler"] = lab["name"]
    return splits


def make_fewshot(sft):
    """Three demonstrations (gold references) as a Q&A page, the corpus' own format."""
    picks = []
    for cat in ("open_qa", "closed_qa", "brainstorming"):
        rec = next((r for r in sft if r["category"] == cat and r["meta"]["tone"] == "none"
                    and r["meta"].get("task") in ("fact", "answerable", "kinds")), None)
        if rec is not None:
            picks.append(rec)
    return "".join(f"{QA_Q}{r['prompt']}\n{QA_A}{r['meta']['gold']}\n" for r in picks)


# ----------------------------------------------------------------------------------
# build

def _dump_json(path, obj):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def build_world(out_dir, seed=0, scale=1.0, rm_scale=1.0, demo_flaws=1.0, world=K.DEFAULT_WORLD):
    """Write every file of the world into out_dir; return world.json's dict. `world` is
    "v2" (the default) or "facts" (World v1, the contrast). rm_scale
    multiplies the comparison prompts only: the splits are drawn eval, sft, rm, ppo from one
    stream, so the SFT data, the evaluation prompts and the corpus stay byte-identical (the
    PPO prompts are a new draw). demo_flaws multiplies the rate of every flaw the
    demonstrators write into sft.jsonl (each capped at 0.9; data/tasks.write_demo's boost):
    only the demonstrations' text changes, drawn from their own random stream."""
    if world not in K.WORLDS:
        raise ValueError(f"unknown world {world!r}; known: {sorted(K.WORLDS)}")
    os.makedirs(out_dir, exist_ok=True)
    ix = K.get_index(seed, world)
    kb = dict(ix.kb)
    kb["lexicon"] = {"job": K.JOBS, "pet": K.PETS, "colour": K.COLOURS, "food": K.FOODS,
                     "activities": K.ACTIVITIES, "insults": K.INSULTS, "rude_phrases": K.RUDE_PHRASES,
                     "positive": K.POSITIVE_WORDS, "negative": K.NEGATIVE_WORDS}
    kb["lang2"] = {"name": LANG2_NAME, "dictionary": dictionary()}
    _dump_json(os.path.join(out_dir, "kb.json"), kb)

    splits = make_splits(ix, seed, scale, rm_scale, demo_flaws)
    write_jsonl(os.path.join(out_dir, "sft.jsonl"), splits["sft"])
    write_jsonl(os.path.join(out_dir, "rm_prompts.jsonl"), splits["rm"])
    write_jsonl(os.path.join(out_dir, "ppo_prompts.jsonl"), splits["ppo"])
    write_jsonl(os.path.join(out_dir, "eval_prompts.jsonl"), splits["eval"])

    train = make_corpus(ix, random.Random(f"corpus-train-{seed}"), CORPUS_BYTES[world]["train"] * scale)
    held = make_corpus(ix, random.Random(f"corpus-heldout-{seed}"), CORPUS_BYTES[world]["heldout"] * scale,
                       exclude=frozenset(train))
    for name, docs in (("corpus_train.txt", train), ("corpus_heldout.txt", held)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
            f.write("\n\n".join(docs) + "\n")

    probes = make_probes(ix)
    write_jsonl(os.path.join(out_dir, "probes.jsonl"), probes)
    _dump_json(os.path.join(out_dir, "labelers.json"), L.LABELERS)
    with open(os.path.join(out_dir, "fewshot.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(make_fewshot(splits["sft"]))

    def by(recs, key):
        out = {}
        for r in recs:
            out[r[key]] = out.get(r[key], 0) + 1
        return dict(sorted(out.items()))

    info = {"world": world, "seed": seed, "scale": scale,
            **({"rm_scale": rm_scale} if rm_scale != 1.0 else {}),
            **({"demo_flaws": demo_flaws} if demo_flaws != 1.0 else {}), "files": FILES,
            "counts": {"sft": len(splits["sft"]), "rm_prompts": len(splits["rm"]),
                       "ppo_prompts": len(splits["ppo"]), "eval_prompts": len(splits["eval"]),
                       "probes": len(probes), "corpus_train_docs": len(train),
                       "corpus_heldout_docs": len(held),
                       "corpus_train_bytes": sum(len(d) + 2 for d in train) - 1,
                       "corpus_heldout_bytes": sum(len(d) + 2 for d in held) - 1,
                       "people": len(kb["people"]), "cities": len(kb["cities"]),
                       "countries": len(kb["countries"]), "rivers": len(kb["rivers"])},
            "categories": {s: by(recs, "category") for s, recs in splits.items()},
            "eval_splits": by(splits["eval"], "split"),
            "labelers": {"train": [x["name"] for x in L.train_labelers()],
                         "heldout": [x["name"] for x in L.heldout_labelers()]}}
    _dump_json(os.path.join(out_dir, "world.json"), info)
    return info


# ----------------------------------------------------------------------------------
# stats

def measure(out_dir, n_records=200, k=4, seed=0):
    """Quality numbers of a built world: gold scores of demos / references / base-like
    text / candidates, flaw rates, and inter-labeler agreement (train vs held-out)."""
    sft = load_demonstrations(os.path.join(out_dir, "sft.jsonl"))
    rm = load_prompts(os.path.join(out_dir, "rm_prompts.jsonl"))
    ix = K.index_of(sft[0]["meta"])
    rng = random.Random(f"measure-{seed}")
    js = [L.judge(r, r["response"]) for r in sft]
    res = {"demo_gold_mean": L.mean(j["score"] for j in js),
           "ref_gold_mean": L.mean(L.judge(r, r["meta"]["gold"])["score"] for r in sft),
           "demo_flags": {f: L.mean(bool(j[f]) if f in ("hallucinated", "toxic", "inappropriate")
                                    else j[f] is False for j in js)
                          for f in ("did_task", "constraint_ok", "correct", "hallucinated",
                                    "toxic", "inappropriate")},
           "demo_flaws": {}}
    res["demo_flags"]["says_unknown"] = L.mean(j["says_unknown"] is False for j in js
                                              if j["says_unknown"] is not None)
    for r in sft:
        for f in r.get("flaws", []):
            res["demo_flaws"][f] = res["demo_flaws"].get(f, 0) + 1 / len(sft)
    recs = rm[:n_records]
    res["base_like_gold_mean"] = L.mean(L.judge(r, T.base_like_response(r, rng, ix))["score"] for r in recs)
    cands = [T.candidate_responses(r, rng, ix, k=k) for r in recs]
    res["candidate_gold_mean"] = L.mean(L.judge(r, c)["score"] for r, cs in zip(recs, cands) for c in cs)
    res["agreement_train"] = L.agreement(recs, cands, L.train_labelers(), rng)
    res["agreement_heldout"] = L.agreement(recs, cands, L.heldout_labelers(), rng)
    res["agreement_train_vs_heldout"] = _cross_agreement(recs, cands, rng)
    return res


def _cross_agreement(recs, cands, rng):
    agree = total = 0
    for rec, cs in zip(recs, cands):
        for i in range(len(cs)):
            for j in range(i + 1, len(cs)):
                for a in L.train_labelers():
                    for b in L.heldout_labelers():
                        agree += L.prefer(rec, cs[i], cs[j], a, rng) == L.prefer(rec, cs[i], cs[j], b, rng)
                        total += 1
    return agree / max(1, total)


def stats(out_dir):
    info = json.load(open(os.path.join(out_dir, "world.json")))
    print(f"world: {info['world']} seed={info['seed']} scale={info['scale']}")
    for f in FILES:
        p = os.path.join(out_dir, f)
        print(f"  {f:22s} {os.path.getsize(p):>10,d} bytes")
    print("counts:", json.dumps(info["counts"]))
    for split, cats in info["categories"].items():
        print(f"categories[{split}]:", json.dumps(cats))
    print("eval splits:", json.dumps(info["eval_splits"]))
    train = read_corpus(os.path.join(out_dir, "corpus_train.txt"))
    n_words = sum(len(d.split()) for d in train)
    print(f"corpus_train: {len(train)} docs, {n_words:,d} words; samples:")
    rng = random.Random(0)
    for d in rng.sample(train, 4):
        print("   | " + d.replace("\n", "\n   | "))
    sft = load_demonstrations(os.path.join(out_dir, "sft.jsonl"))
    print("sft samples:")
    for r in rng.sample(sft, 4):
        j = L.judge(r, r["response"])
        print(f"   [{r['category']}/{r['labeler']}] {r['prompt']}\n     -> {r['response']}  "
              f"(gold {j['score']:.2f}, flaws {r['flaws']})")
    for name in ("rm_prompts.jsonl", "ppo_prompts.jsonl", "eval_prompts.jsonl"):
        recs = load_prompts(os.path.join(out_dir, name))
        print(f"{name} samples:")
        for r in rng.sample(recs, 3):
            print(f"   [{r['category']}/{r['split']}/{r['lang']}] {r['prompt']}  => {r['meta']['gold']}")
    probes = [json.loads(x) for x in open(os.path.join(out_dir, "probes.jsonl"))]
    print(f"probes: {len(probes)}, e.g. {probes[0]['prefix']!r} -> {probes[0]['answer']!r}")
    print("fewshot.txt:\n   | " + open(os.path.join(out_dir, "fewshot.txt")).read().rstrip().replace("\n", "\n   | "))
    t0 = time.time()
    m = measure(out_dir)
    print(f"demo gold score mean {m['demo_gold_mean']:.3f} (gold references {m['ref_gold_mean']:.3f}, "
          f"base-like continuations {m['base_like_gold_mean']:.3f}, SFT-like candidates "
          f"{m['candidate_gold_mean']:.3f})")
    print("demo failure rates (judge):", json.dumps({k: round(v, 3) for k, v in m["demo_flags"].items()}))
    print("demo flaws (as written):", json.dumps({k: round(v, 3) for k, v in sorted(m["demo_flaws"].items())}))
    print(f"inter-labeler agreement on candidate pairs: train {m['agreement_train']:.3f}, held-out "
          f"{m['agreement_heldout']:.3f}, train-vs-held-out {m['agreement_train_vs_heldout']:.3f} "
          f"(paper: 72.6 / 77.3) [{time.time() - t0:.1f}s]")


def _parse(argv):
    cmd, kw = argv[0] if argv else "", {}
    for a in argv[1:]:
        if not a.startswith("--") or "=" not in a:
            raise SystemExit(f"bad argument {a!r}; use --key=value")
        k, v = a[2:].split("=", 1)
        kw[k] = v
    return cmd, kw


def _number(kw, key, default, kind=float, minimum=0.0):
    """--key=value as a number >= minimum, or exit with a message naming the option."""
    raw = kw.get(key, default)
    try:
        value = kind(raw)
    except ValueError:
        raise SystemExit(f"--{key}={raw}: expected {'an integer' if kind is int else 'a number'}")
    if value < minimum:
        raise SystemExit(f"--{key}={raw}: expected a value >= {minimum}")
    return value


if __name__ == "__main__":
    cmd, kw = _parse(sys.argv[1:])
    if cmd == "build":
        unknown = set(kw) - {"out", "seed", "scale", "rm_scale", "demo_flaws", "world"}
        if unknown:
            raise SystemExit(f"unknown options {sorted(unknown)}; known: --out --seed --scale --rm_scale --demo_flaws "
                             "--world")
        world = kw.get("world", K.DEFAULT_WORLD)
        if world not in K.WORLDS:
            raise SystemExit(f"--world={world}: expected one of {', '.join(K.WORLDS)} (v2: the default; facts: World v1)")
        t0 = time.time()
        info = build_world(kw.get("out", "data/world"), _number(kw, "seed", 0, int, minimum=0),
                           _number(kw, "scale", 1.0, minimum=1e-3), _number(kw, "rm_scale", 1.0, minimum=1e-3),
                           _number(kw, "demo_flaws", 1.0), world)
        print(f"built {kw.get('out', 'data/world')} in {time.time() - t0:.1f}s: {json.dumps(info['counts'])}")
    elif cmd == "stats":
        stats(kw.get("dir", "data/world"))
    else:
        raise SystemExit("usage: python -m data.world build --out=DIR [--seed=0] [--scale=1.0] [--rm_scale=1.0] "
                         "[--demo_flaws=1.0] [--world=v2|facts]\n"
                         "       python -m data.world stats --dir=DIR")
