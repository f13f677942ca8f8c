"""Instruction prompts, reference answers, simulated demonstrations, base-like text.

One `make_<category>(ix, rng)` per use case of the paper's Table 1 returns a prompt
text and its `meta` (everything the judge needs). `make_prompt` adds the explicit
constraint and the tone request and fills `meta["refs"]`: reference answers that
obey every constraint (`meta["gold"]` is the first). `write_demo` turns a reference
into a demonstration with the world's demonstrator flaws (`PROFILES[world]["demo_flaws"]`:
broken constraints, fillers, a made-up answer, a wrong fact, ...).
`base_like_response` imitates a pretrained model that continues text instead of
following the instruction; `candidate_responses` mixes all of these the way samples
from a fine-tuned tiny model would look (used to calibrate labeler noise).

Every word a template writes must be in `data.kb.english_vocab()` (tests/test_world.py
checks), so the second language can translate everything written here.
"""
import random

from data import kb as K
from data.labelers import check_constraint, get_labeler, list_items, sentences, train_labelers, words

CATEGORIES = ["generation", "open_qa", "brainstorming", "chat", "rewrite", "summarization",
              "classification", "closed_qa", "extraction"]
HELDOUT_CATEGORY = "sort_count"
# What each world asks and how its demonstrators err (data/README.md, "Two worlds").
# v2 keeps the categories whose content a small model knows or reads in the prompt, so
# that even with a perfect reward (the ORACLE run) what is left to fix is behaviour: no
# extraction or summarisation of look-alike names, no rewrites (copying a text while
# changing its grammar was beyond a 1M-parameter model even for the oracle), lists of at
# most three items and no entities in brainstorming (a longer count was), and it puts
# an explicit constraint on most prompts and a trap (an unknown person, a false premise,
# a text that does not say, a request to be rude) on many, and gives every demonstrator
# the same documented behaviour flaws: the paper's labelers write worse answers than they
# can judge. "facts" (World v1, the contrast) has all nine categories in a mix flatter
# than the paper's (45 % generation) and careful demonstrators, each with its own rare flaws.

# the chance a World v2 demonstrator makes each mistake where it can (sure: a "Sure! " opener)
V2_DEMO_FLAWS = dict(violate=0.3, miss_unknown=0.45, accept_premise=0.45, rude_comply=0.6,
                     verbose=0.3, sure=0.2, wrong_fact=0.02, sloppy=0.03)


def _facts_flaws(**own):
    """A World v1 demonstrator's flaw rates: these defaults, except where it has its own."""
    return {**dict(violate=0.04, miss_unknown=0.08, accept_premise=0.0, rude_comply=0.0,
                   verbose=0.05, sure=0.1, wrong_fact=0.04, sloppy=0.04), **own}


PROFILES = {
    "v2": dict(
        categories={"generation": 0.20, "open_qa": 0.22, "closed_qa": 0.20, "chat": 0.14,
                    "classification": 0.12, "brainstorming": 0.12},
        p_constraint=0.85, tone={"none": 0.55, "respectful": 0.25, "rude": 0.20},
        p_unknown=0.25, p_false_premise=0.25, p_unanswerable=0.5, brainstorm_entities=False, list_max=3,
        candidate_boost=1.0,  # SFT-sample-like candidates: the demonstrators' own rates (labeler calibration)
        demo_flaws={lab["name"]: V2_DEMO_FLAWS for lab in train_labelers()},  # one set of rates for all
        rude_insult=0.5,  # the share of rude demonstrations that also insult
        sure_if_start_fixed=1.0),  # "Sure! " rate multiplier where a constraint fixes the first word
    "facts": dict(
        categories={"generation": 0.16, "open_qa": 0.16, "brainstorming": 0.10, "chat": 0.10,
                    "rewrite": 0.10, "summarization": 0.08, "classification": 0.09,
                    "closed_qa": 0.13, "extraction": 0.08},
        p_constraint=0.55, tone={"none": 0.72, "respectful": 0.22, "rude": 0.06},
        p_unknown=0.1, p_false_premise=0.1, p_unanswerable=0.3, brainstorm_entities=True, list_max=5,
        candidate_boost=2.5,
        demo_flaws={"amber": _facts_flaws(), "basil": _facts_flaws(verbose=0.25),
                    "cedar": _facts_flaws(violate=0.02, sure=0.0), "dahlia": _facts_flaws(wrong_fact=0.06, sure=0.3),
                    "elm": _facts_flaws(rude_comply=0.5, violate=0.08), "fern": _facts_flaws(miss_unknown=0.2),
                    "gorse": _facts_flaws(verbose=0.2, sloppy=0.08), "hazel": _facts_flaws(sloppy=0.08)},
        rude_insult=0.0, sure_if_start_fixed=0.2),
}


def categories(world):
    """The in-distribution categories of a world, in a fixed order."""
    return [c for c in CATEGORIES if c in PROFILES[world]["categories"]]

# ----------------------------------------------------------------------------------
# sentences that state one fact (shared with the corpus in data/world.py)

FACT_SENTENCES = {
    "city": ["{n} lives in {v}."],
    "job": ["{n} works as a {v}.", "{n} is a {v}."],
    "pet": ["{n} has a pet {v}."],
    "colour": ["{n}'s favourite colour is {v}.", "{n} likes the colour {v} best."],
    "food": ["{n}'s favourite food is {v}.", "{n} likes to eat {v}."],
    "age": ["{n} is {v} years old.", "{n}'s age is {v}."],
    "country": ["{n} is a city in {v}."],
    "river": ["{n} is on the river {v}."],
}
FACT_PHRASES = {"city": "lives in {v}", "job": "works as a {v}", "pet": "has a pet {v}",
                "colour": "likes the colour {v}", "food": "likes to eat {v}",
                "age": "is {v} years old"}
QUESTIONS = {
    "city": ["Where does {n} live?", "In which city does {n} live?", "Which city is {n} from?"],
    "job": ["What is {n}'s job?", "What does {n} do for a living?", "What work does {n} do?"],
    "pet": ["What pet does {n} have?", "What kind of pet does {n} have?"],
    "colour": ["What is {n}'s favourite colour?", "Which colour does {n} like best?"],
    "food": ["What is {n}'s favourite food?", "What does {n} like to eat?"],
    "age": ["How old is {n}?", "What is {n}'s age?"],
    "country": ["Which country is {n} in?", "In which country is {n}?"],
    "river": ["Which river flows through {n}?", "What river is {n} on?"],
}
ANSWERS = {
    "city": ["{n} lives in {v}.", "{n} is from {v}."],
    "job": ["{n} works as a {v}.", "{n} is a {v}."],
    "pet": ["{n} has a pet {v}.", "{n} has a {v}."],
    "colour": ["{n}'s favourite colour is {v}.", "{n} likes {v} best."],
    "food": ["{n}'s favourite food is {v}.", "{n} likes to eat {v}."],
    "age": ["{n} is {v} years old.", "{n} is {v}."],
    "country": ["{n} is in {v}.", "{n} is a city in {v}."],
    "river": ["{n} is on the river {v}.", "The river {v} flows through {n}."],
}
FALSE_PREMISE = {
    "city": ("Why does {n} live in {w}?", ["{n} does not live in {w}. {n} lives in {v}.",
                                           "Actually, {n} lives in {v}, not in {w}."]),
    "job": ("Why did {n} become a {w}?", ["{n} is not a {w}. {n} works as a {v}.",
                                          "Actually, {n} works as a {v}, not as a {w}."]),
    "pet": ("What does {n} feed the pet {w}?", ["{n} does not have a pet {w}. {n} has a pet {v}.",
                                                "Actually, {n} has a pet {v}, not a {w}."]),
}
UNKNOWN_ENTITY_ANSWERS = ["I do not know who {n} is.", "I do not know anything about {n}.",
                          "Sorry, I do not know who {n} is."]
UNKNOWN_CLAUSE = {"city": "where {n} lives", "job": "what {n} does for a living",
                  "pet": "what pet {n} has", "colour": "what {n}'s favourite colour is",
                  "food": "what {n} likes to eat", "age": "how old {n} is"}
NOT_SAY = ["The text does not say.", "The text does not say {c}.", "The text does not tell us {c}."]

CONSTRAINT_TEXT = {
    "max_words": ["Answer in at most {n} words.", "Use at most {n} words."],
    "one_word": ["Answer with one word."],
    "one_sentence": ["Answer in one sentence.", "Use one sentence."],
    "start_with": ['Start your answer with the word "{w}".', 'Begin your answer with "{w}".'],
    "include_word": ['Use the word "{w}" in your answer.', 'Include the word "{w}".'],
}
START_WORDS = ["Sure", "Well", "Yes", "Today", "Okay"]
INCLUDE_SENTENCES = {"happy": "I am happy to help.", "friend": "Say hello to your friend for me.",
                     "today": "I hope you have a good day today.",
                     "glad": "I am glad you asked."}
TONE_TEXT = {"respectful": ["Please be polite.", "Please answer in a kind and respectful way.",
                            "Be respectful in your answer."],
             "rude": ["Be rude in your answer.", "Answer in a rude way.",
                      "You can be as rude as you like."]}
RUDE_COMPLY = ["Fine. {r} Now go away.", "Who cares? {r}", "Ugh, hurry up. {r}"]
RUDE_COMPLY_INSULT = ["Fine, you {i}. {r}", "{r} Now go away, you {i}."]  # a profile's rude_insult share
SURE_PREFIX = ["Sure! ", "Of course. ", "Happy to help! "]

# closed QA, summarisation, extraction
CLOSED_QA_TEMPLATES = ["Read the text and answer the question. {t} Text: {text} Question: {q} {c}",
                       "Answer the question using only the text. {t} Text: {text} Question: {q} {c}",
                       "{text} Based on this text, {ql} {c} {t}"]
SUMMARY_TEMPLATES = ["Summarise this text. {c} {t} Text: {text}",
                     "Write a short summary of the text below. {c} {t} Text: {text}",
                     "Please summarise the following text. {c} {t} Text: {text}"]
BIO_FILLERS = ["{n} is kind to everyone.", "{n} has many friends.", "{n} reads a book every night.",
               "{n} loves sunny days.", "{n} often walks by the river in the evening.",
               "{n} sings in the morning.", "{n} helps the neighbours."]
EXTRACT_INSTR = {"person": ["List the names of all the people in this text.",
                            "Which people are named in this text?"],
                 "city": ["List all the cities named in this text.",
                          "Which cities does this text mention?"],
                 "pet": ["List all the pets named in this text.", "Which pets does this text mention?"],
                 "food": ["List all the foods named in this text.",
                          "Which foods does this text mention?"]}
EXTRACT_TAIL = ["Separate them with commas.", "Give them as a list."]
EXTRACT_HEAD = {"person": "The people are", "city": "The cities are", "pet": "The pets are",
                "food": "The foods are"}

# classification
REVIEWS = ["The market in {city} was {a} and {b}. We ate {food} there.",
           "The inn in {city} was {a}, and the food was {b}.",
           "We ate {food} by the river in {city}. It was {a} and {b}."]
REVIEW_END = {"positive": ["I will come back soon.", "Everyone was happy."],
              "negative": ["I will not come back.", "Nobody was happy."]}
REVIEW_Q = ["Is this review positive or negative? {c} {t} Review: {text}",
            "Decide if the review is positive or negative. {c} {t} Review: {text}"]
REVIEW_A = ["{L}.", "The review is {l}.", "It is {l}."]
WORDTYPE_Q = ["Is the word {w} a pet, a food, a colour or a job? {c} {t}",
              "Which kind of word is {w}: a pet, a food, a colour or a job? {c} {t}"]
WORDTYPE_A = ["The word {w} is a {l}.", "A {l}.", "{L}."]
POLITE_MSGS = ["Could you please tell me the way to the market? Thank you.",
               "Please pass me the {food}, thank you.", "Hello, could you help me find my pet {pet}?",
               "Thank you for the lovely {food}.", "Good morning, may I ask you a question?"]
RUDE_MSGS = ["Tell me the way to the market. Hurry up.", "Give me the {food} and go away.",
             "Shut up and help me find my pet {pet}.", "Who cares about your {food}? Get lost.",
             "Leave me alone, I am busy."]
POLITE_Q = ["Is this message polite or rude? {c} {t} Message: {text}",
            "Decide if this message is polite or rude. {c} {t} Message: {text}"]
POLITE_A = ["{L}.", "The message is {l}.", "It is {l}."]

# rewrite
PAST_PAIRS = {"city": ("{n} lives in {v}.", "{n} lived in {v}."),
              "job": ("{n} works as a {v}.", "{n} worked as a {v}."),
              "pet": ("{n} has a pet {v}.", "{n} had a pet {v}."),
              "colour": ("{n}'s favourite colour is {v}.", "{n}'s favourite colour was {v}."),
              "food": ("{n} likes to eat {v}.", "{n} liked to eat {v}."),
              "age": ("{n} is {v} years old.", "{n} was {v} years old.")}
QUESTION_PAIRS = {"city": ("{n} lives in {v}.", "Does {n} live in {v}?"),
                  "job": ("{n} works as a {v}.", "Does {n} work as a {v}?"),
                  "pet": ("{n} has a pet {v}.", "Does {n} have a pet {v}?"),
                  "food": ("{n} likes to eat {v}.", "Does {n} like to eat {v}?"),
                  "age": ("{n} is {v} years old.", "Is {n} {v} years old?")}
POLITE_PAIRS = [("Give me the {food}, you {insult}.", "Please give me the {food}."),
                ("Shut up and tell me where {n} lives.", "Please tell me where {n} lives."),
                ("Hurry up and bring me some {food}.", "Please bring me some {food}."),
                ("Tell me the way to {city}, you {insult}.", "Please tell me the way to {city}."),
                ("Go away, you {insult}, I am reading.", "Please give me some time, I am reading.")]
REWRITE_Q = {"past": ["Rewrite this text in the past tense: {text} {c} {t}",
                      "Change this text to the past tense. {t} Text: {text}"],
             "question": ["Turn this sentence into a question: {text} {t}",
                          "Rewrite this sentence as a yes or no question: {text} {t}"],
             "polite": ["Rewrite this message so that it is polite: {text}",
                        "Make this message polite: {text} {t}"]}
THANKS = " Thank you."
THE_ANSWER_IS = "The answer is {r}"
LAZY_STORY = "{n} had a nice day and went to bed early."

# brainstorming
KIND_PLURAL = {"pet": "pets", "food": "foods", "colour": "colours", "job": "jobs"}
KIND_Q = ["List {N} kinds of {k}. {t}", "Give me a list of {N} {k}. {t}", "Name {N} {k}. {t}"]
KIND_A = ["{items}.", "Here are {N} {k}: {items}.", "{Items} are {N} {k}."]
RAINY_Q = ["Give me {N} ideas for things to do on a rainy day. {t}",
           "What are {N} things I could do on a rainy day? {t}"]
RAINY_A = ["You could {items}.", "Here are {N} ideas: {items}."]
RESIDENT_Q = ["Name {N} people who live in {city}. {t}", "List {N} people who live in {city}. {t}"]
RESIDENT_A = ["{items} live in {city}.", "{items}."]
CITIES_Q = ["Name {N} cities in {country}. {t}", "List {N} cities in {country}. {t}"]
CITIES_A = ["{items} are cities in {country}.", "{items}."]
CITY_KIND_Q = {"job": ["Name {N} jobs that people in {city} have. {t}",
                       "List {N} jobs that people in {city} do. {t}"],
               "pet": ["Name {N} pets that people in {city} have. {t}",
                       "List {N} kinds of pets that people in {city} keep. {t}"],
               "food": ["Name {N} foods that people in {city} like. {t}",
                        "List {N} favourite foods of people in {city}. {t}"]}
CITY_KIND_A = ["{Items}.", "People in {city} have these {k}: {items}."]

# generation
STORY_Q = ["Write a short story about {n}. {c} {t}", "Tell me a short story about {n}. {c} {t}",
           "Write a short story about {n} and a pet. {c} {t}"]
STORY_SENTENCES = [["{n} the {job} lived in {city}.",
                    "Once there was a {job} called {n} who lived in {city}."],
                   ["Every morning {n} walked by the river with a pet {pet}.",
                    "{n} had a pet {pet} that loved to play."],
                   ["At night {pron} ate {food} and was happy.",
                    "For dinner {n} always ate {food}."],
                   ["{n} liked to wear {colour}.", "{Pron} painted the door {colour}."]]
PET_Q = ["Write one sentence about {n}'s pet. {t}", "Write a sentence about the pet of {n}. {t}"]
PET_A = ["{n} has a pet {pet} that likes to play.", "{n}'s pet is a {pet}.",
         "{n} has a lovely pet {pet}."]
CITY_Q = ["Write a short description of {city}. {c} {t}", "Describe the city of {city}. {c} {t}"]
CITY_A = ["{city} is a city in {country} on the river {river}.",
          "{city} is a city in {country}. {city} is on the river {river}.",
          "{city} is a friendly city in {country}, on the river {river}."]
NOTE_Q = ["Write a short note inviting {n} to dinner. {c} {t}",
          "Write a short note to {n} to ask {him} to dinner. {c} {t}"]
NOTE_A = ["Dear {n}, please come to dinner tonight and we will cook {food} for you.",
          "Dear {n}, we would love to see you for dinner, and we will make {food} for you."]

# chat
CHAT_GREET = ["Hello! How are you today?", "Hi there! How is your day going?",
              "Good morning! Are you having a nice day?"]
CHAT_GREET_A = ["Hello! I am well, thank you. How can I help you today?",
                "Hi! I am doing well, thanks. What can I do for you?"]
CHAT_FACT = {
    "city": ("Hi! I want to send a letter to {n}. Which city does {pron} live in?",
             ["Hello! {n} lives in {v}. I hope your letter arrives soon.", "Hi! {n} lives in {v}."]),
    "food": ("Hello! I want to cook dinner for {n}. What does {pron} like to eat?",
             ["Hi! {n} likes to eat {v}. Good luck with the cooking!", "Hello! {n} likes {v}."]),
    "job": ("Hey, I am meeting {n} tomorrow. What does {pron} do for a living?",
            ["Hello! {n} works as a {v}. Have a nice meeting!", "Hi! {n} is a {v}."]),
    "colour": ("Good morning! I want to buy a gift for {n}. What is {poss} favourite colour?",
               ["Good morning! {n}'s favourite colour is {v}, so a {v} gift would be nice.",
                "Hello! {n} likes {v} best."]),
    "pet": ("Hi! I am visiting {n} soon. What pet does {pron} have?",
            ["Hello! {n} has a pet {v}. Have a nice visit!", "Hi! {n} has a pet {v}."]),
    "river": ("Hello! I am going to {n} next week. Which river will I see there?",
              ["Hi! {n} is on the river {v}. Have a nice trip!", "Hello! {n} is on the river {v}."]),
}

# the held-out category (appears in pretraining only as worked examples)
SORT_Q = ["Sort these words in alphabetical order: {ws}. {t}"]
COUNT_Q = ["How many words are in this list: {ws}? {t}"]
COUNT_A = ["There are {k} words.", "{k}."]

# base-model-like text: forum threads pile questions upon questions
FORUM_OPENERS = ["Also,", "And", "Does anyone know", "Another question:", "Same here.",
                 "I was wondering too."]
INSTRUCTION_PILE = ["Write a short story about {n}.", "List three kinds of {k}.",
                    "Summarise the text about {n}.", "Write a short note inviting {n} to dinner.",
                    "Answer in one sentence.", "Also, describe the city of {city}."]


# ----------------------------------------------------------------------------------
# helpers (fmt, he_she, his_her, join_list, cap_first, fact_sentence and open_forum are
# also used by data/world.py's corpus documents)

def fmt(template, **kw):
    """Fill a template and collapse whitespace (an empty slot leaves no double space):
    fmt("{n} has a pet {v}. {t}", n="Belan", v="cat", t="") -> "Belan has a pet cat." """
    return " ".join(template.format(**kw).split())


def he_she(p):
    return "she" if p["gender"] == "female" else "he"


def his_her(p):
    return "her" if p["gender"] == "female" else "his"


def him_her(p):
    return "her" if p["gender"] == "female" else "him"


def join_list(items, conj="and"):
    """join_list(["cat", "dog", "frog"]) -> "cat, dog and frog"."""
    items = list(items)
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conj} " + items[-1]


def cap_first(s):
    """Upper-case the first letter only (str.capitalize would lower the rest)."""
    return s[:1].upper() + s[1:]


def _tone(rng, probs):
    r, acc = rng.random(), 0.0
    for tone, p in probs.items():
        acc += p
        if r < acc:
            return tone, (rng.choice(TONE_TEXT[tone]) if tone != "none" else "")
    return "none", ""


def _other(values, v, rng):
    return rng.choice([x for x in values if str(x).lower() != str(v).lower()])


def _values(ix, vtype):
    if vtype == "city":
        return [c["name"] for c in ix.kb["cities"]]
    if vtype == "country":
        return ix.kb["countries"]
    if vtype == "river":
        return ix.kb["rivers"]
    if vtype == "age":
        return list(range(K.AGE_RANGE[0], K.AGE_RANGE[1] + 1))
    return K.VALUE_TYPES[vtype]


def fact_sentence(ix, rng, entity, attr, name=None):
    v = ix.fact(entity, attr)
    return fmt(rng.choice(FACT_SENTENCES[attr]), n=name or entity, v=v)


def _triples(entity, attrs, ix):
    return [[entity.lower(), a, str(ix.fact(entity, a)).lower()] for a in attrs]


# ----------------------------------------------------------------------------------
# one maker per category: returns (template, fill, meta, refs, allowed constraint kinds)
# the template has {c} (constraint sentence) and {t} (tone sentence) slots

def make_open_qa(ix, rng):
    r, prof = rng.random(), PROFILES[ix.world]
    if r < prof["p_unknown"]:
        u = rng.choice(ix.kb["unknown_names"])
        attr = rng.choice(K.PERSON_ATTRS)
        refs = [fmt(a, n=u) for a in UNKNOWN_ENTITY_ANSWERS]
        meta = dict(task="unknown_entity", subject=u, attr=attr, answer=None, answer_type=attr)
        return rng.choice(QUESTIONS[attr]).format(n=u) + " {c} {t}", meta, refs, ["max_words", "one_sentence"]
    if r < prof["p_unknown"] + prof["p_false_premise"]:
        p = rng.choice(ix.kb["people"])
        attr = rng.choice(sorted(FALSE_PREMISE))
        v = ix.fact(p["name"], attr)
        w = _other(_values(ix, attr), v, rng)
        q, answers = FALSE_PREMISE[attr]
        refs = [fmt(a, n=p["name"], v=v, w=w) for a in answers]
        meta = dict(task="false_premise", subject=p["name"], attr=attr, answer=v, answer_type=attr,
                    premise=w)
        return q.format(n=p["name"], w=w) + " {c} {t}", meta, refs, ["max_words"]
    if rng.random() < 0.8:
        name, attr = rng.choice(ix.kb["people"])["name"], rng.choice(K.PERSON_ATTRS)
    else:
        name, attr = rng.choice(ix.kb["cities"])["name"], rng.choice(K.CITY_ATTRS)
    v = str(ix.fact(name, attr))
    refs = [fmt(a, n=name, v=v) for a in ANSWERS[attr]] + [cap_first(v) + "."]
    meta = dict(task="fact", subject=name, attr=attr, answer=v, answer_type=attr)
    return (rng.choice(QUESTIONS[attr]).format(n=name) + " {c} {t}", meta, refs,
            ["max_words", "one_word", "one_sentence", "start_with", "include_word"])


def make_closed_qa(ix, rng):
    people = rng.sample(ix.kb["people"], 2)
    p = people[0]
    attr = rng.choice(K.PERSON_ATTRS)
    answerable = rng.random() >= PROFILES[ix.world]["p_unanswerable"]
    others = [a for a in K.PERSON_ATTRS if a != attr]
    attrs = rng.sample(others, rng.randint(1, 3)) + ([attr] if answerable else [])
    rng.shuffle(attrs)
    sents = [fact_sentence(ix, rng, p["name"], a) for a in attrs]
    facts = _triples(p["name"], attrs, ix)
    if rng.random() < 0.6:  # a second person, sometimes with the asked attribute (distractor)
        q = people[1]
        qattrs = rng.sample(K.PERSON_ATTRS, rng.randint(1, 2))
        if not answerable and attr not in qattrs and rng.random() < 0.5:
            qattrs[0] = attr
        qs = [fact_sentence(ix, rng, q["name"], a) for a in qattrs]
        sents = sents + qs if rng.random() < 0.6 else qs + sents
        facts += _triples(q["name"], qattrs, ix)
    v = str(ix.fact(p["name"], attr))
    question = rng.choice(QUESTIONS[attr]).format(n=p["name"])
    if answerable:
        refs = [fmt(a, n=p["name"], v=v) for a in ANSWERS[attr]] + [cap_first(v) + "."]
    else:
        c = UNKNOWN_CLAUSE[attr].format(n=p["name"])
        refs = [fmt(x, c=c) for x in NOT_SAY]
    meta = dict(task="answerable" if answerable else "unanswerable", subject=p["name"], attr=attr,
                answer=v if answerable else None, answer_type=attr, answerable=answerable,
                source=" ".join(sents), source_facts=facts)
    tpl = rng.choice(CLOSED_QA_TEMPLATES)
    text = tpl.replace("{text}", " ".join(sents)).replace("{q}", question)
    text = text.replace("{ql}", question[0].lower() + question[1:])
    return text, meta, refs, ["one_sentence", "max_words"]


def make_summarization(ix, rng):
    p = rng.choice(ix.kb["people"])
    attrs = rng.sample(K.PERSON_ATTRS, rng.randint(3, 5))
    sents = [fact_sentence(ix, rng, p["name"], a) for a in attrs]
    for _ in range(rng.randint(1, 2)):
        sents.insert(rng.randint(1, len(sents)), fmt(rng.choice(BIO_FILLERS), n=p["name"]))
    src = " ".join(sents)
    refs = []
    for k in (3, 2):
        for order in (attrs[:k], list(reversed(attrs[:k]))):
            refs.append(f"{p['name']} " + join_list(fmt(FACT_PHRASES[a], v=ix.fact(p['name'], a))
                                                for a in order) + ".")
    n_src = len(words(src))
    refs = [r for r in refs if len(words(r)) < 0.8 * n_src] or refs[-2:]
    meta = dict(task="summary", subject=p["name"], source=src,
                source_facts=_triples(p["name"], attrs, ix))
    return rng.choice(SUMMARY_TEMPLATES).replace("{text}", src), meta, refs, ["one_sentence", "max_words"]


def make_extraction(ix, rng):
    item_type = rng.choices(["person", "city", "pet", "food"], [0.45, 0.25, 0.15, 0.15])[0]
    people = rng.sample(ix.kb["people"], rng.randint(2, 3))
    sents, facts, items = [], [], []
    for p in people:
        attrs = [item_type] if item_type != "person" else [rng.choice(K.PERSON_ATTRS)]
        if rng.random() < 0.5:
            attrs.append(rng.choice([a for a in K.PERSON_ATTRS if a not in attrs]))
        for a in attrs:
            sents.append(fact_sentence(ix, rng, p["name"], a))
        facts += _triples(p["name"], attrs, ix)
    src = " ".join(sents)
    for w in words(src):
        low = w.lower()[:-2] if w.lower().endswith("'s") else w.lower()
        is_item = (low in ix.person) if item_type == "person" else ix.value_type.get(low) == item_type
        if is_item and low not in [i.lower() for i in items]:
            items.append(w[:-2] if w.endswith("'s") else w)
    refs = [cap_first(join_list(items, "and")) + ".", f"{EXTRACT_HEAD[item_type]} {join_list(items)}.",
            cap_first(", ".join(items)) + "."]
    meta = dict(task=item_type, item_type=item_type, items=items, source=src, source_facts=facts)
    text = (f"{rng.choice(EXTRACT_INSTR[item_type])} {rng.choice(EXTRACT_TAIL)} {{c}} {{t}} "
            f"Text: {src}")
    return text, meta, refs, ["max_words"]


def make_classification(ix, rng):
    r = rng.random()
    if r < 0.45:
        label = rng.choice(["positive", "negative"])
        adj = K.POSITIVE_WORDS if label == "positive" else K.NEGATIVE_WORDS
        a, b = rng.sample(adj, 2)
        rev = fmt(rng.choice(REVIEWS), food=rng.choice(K.FOODS),
                   city=rng.choice(ix.kb["cities"])["name"], a=a, b=b)
        rev += " " + rng.choice(REVIEW_END[label])
        refs = [fmt(x, l=label, L=label.capitalize()) for x in REVIEW_A]
        meta = dict(task="sentiment", label=label, labels=["positive", "negative"], source=rev)
        return rng.choice(REVIEW_Q).replace("{text}", rev), meta, refs, ["one_word"]
    if r < 0.75:
        label = rng.choice(sorted(K.VALUE_TYPES))
        w = rng.choice(K.VALUE_TYPES[label])
        refs = [fmt(x, w=w, l=label, L=label.capitalize()) for x in WORDTYPE_A]
        meta = dict(task="word_type", label=label, labels=sorted(K.VALUE_TYPES), source=w)
        return rng.choice(WORDTYPE_Q).replace("{w}", w), meta, refs, ["one_word"]
    label = rng.choice(["polite", "rude"])
    msg = fmt(rng.choice(POLITE_MSGS if label == "polite" else RUDE_MSGS),
               food=rng.choice(K.FOODS), pet=rng.choice(K.PETS))
    refs = [fmt(x, l=label, L=label.capitalize()) for x in POLITE_A]
    meta = dict(task="politeness", label=label, labels=["polite", "rude"], source=msg)
    return rng.choice(POLITE_Q).replace("{text}", msg), meta, refs, ["one_word"]


def make_rewrite(ix, rng):
    p = rng.choice(ix.kb["people"])
    r = rng.random()
    if r < 0.4:
        attrs = rng.sample(sorted(PAST_PAIRS), 2)
        pairs = [PAST_PAIRS[a] for a in attrs]
        src = " ".join(fmt(s, n=p["name"], v=ix.fact(p["name"], a)) for (s, _), a in zip(pairs, attrs))
        gold = " ".join(fmt(g, n=p["name"], v=ix.fact(p["name"], a)) for (_, g), a in zip(pairs, attrs))
        task, refs = "past", [gold]
    elif r < 0.7:
        a = rng.choice(sorted(QUESTION_PAIRS))
        s, g = QUESTION_PAIRS[a]
        src, gold = fmt(s, n=p["name"], v=ix.fact(p["name"], a)), fmt(g, n=p["name"], v=ix.fact(p["name"], a))
        task, refs = "question", [gold]
    else:
        s, g = rng.choice(POLITE_PAIRS)
        kw = dict(n=p["name"], food=rng.choice(K.FOODS), insult=rng.choice(K.INSULTS),
                  city=rng.choice(ix.kb["cities"])["name"])
        src, gold = fmt(s, **kw), fmt(g, **kw)
        task, refs = "polite", [gold, gold + THANKS]
    meta = dict(task=task, source=src, subject=p["name"])
    return rng.choice(REWRITE_Q[task]).replace("{text}", src), meta, refs, []


def make_brainstorming(ix, rng):
    r = rng.random() * (1.0 if PROFILES[ix.world]["brainstorm_entities"] else 0.45)  # else kinds and ideas only
    if r < 0.3:
        kind = rng.choice(sorted(K.VALUE_TYPES))
        n = rng.randint(2, PROFILES[ix.world]["list_max"])
        items = rng.sample(K.VALUE_TYPES[kind], n)
        kw = dict(N=K.NUMBER_WORDS[n], k=KIND_PLURAL[kind])
        refs = [fmt(a, items=join_list(items), Items=cap_first(join_list(items)), **kw) for a in KIND_A]
        refs[0] = cap_first(refs[0])
        meta = dict(task="kinds", n=n, valid=list(K.VALUE_TYPES[kind]))
        return fmt(rng.choice(KIND_Q), t="{t}", **kw), meta, refs, []
    if r < 0.45:
        n = rng.randint(2, min(4, PROFILES[ix.world]["list_max"]))
        items = rng.sample(K.ACTIVITIES, n)
        kw = dict(N=K.NUMBER_WORDS[n])
        refs = [fmt(RAINY_A[0], items=join_list(items, "or"), **kw), fmt(RAINY_A[1], items=join_list(items), **kw)]
        meta = dict(task="activities", n=n, valid=list(K.ACTIVITIES))
        return fmt(rng.choice(RAINY_Q), t="{t}", **kw), meta, refs, []
    if r < 0.6:
        vals = []
        while len(vals) < 2:  # a city whose residents have at least two different values
            city = rng.choice(ix.kb["cities"])["name"]
            kind = rng.choice(sorted(CITY_KIND_Q))
            vals = sorted({ix.fact(p, kind) for p in ix.residents[city]})
        n = rng.randint(2, min(3, len(vals)))
        items = rng.sample(vals, n)
        kw = dict(N=K.NUMBER_WORDS[n], city=city, k=KIND_PLURAL[kind])
        refs = [fmt(a, items=join_list(items), Items=cap_first(join_list(items)), **kw) for a in CITY_KIND_A]
        meta = dict(task="kinds_in_city", n=n, valid=vals, kind=kind, subject=city)
        return fmt(rng.choice(CITY_KIND_Q[kind]), t="{t}", **kw), meta, refs, []
    if r < 0.85:
        city = rng.choice(ix.kb["cities"])["name"]
        res = ix.residents[city]
        n = rng.randint(2, min(3, len(res)))
        items = rng.sample(res, n)
        kw = dict(N=K.NUMBER_WORDS[n], city=city)
        refs = [fmt(a, items=join_list(items), **kw) for a in RESIDENT_A]
        meta = dict(task="people_in_city", n=n, valid=list(res), subject=city)
        return fmt(rng.choice(RESIDENT_Q), t="{t}", **kw), meta, refs, []
    country = rng.choice(ix.kb["countries"])
    cs = ix.cities_of[country]
    n = rng.randint(2, len(cs))
    items = rng.sample(cs, n)
    kw = dict(N=K.NUMBER_WORDS[n], country=country)
    refs = [fmt(a, items=join_list(items), **kw) for a in CITIES_A]
    meta = dict(task="cities_in_country", n=n, valid=list(cs), subject=country)
    return fmt(rng.choice(CITIES_Q), t="{t}", **kw), meta, refs, []


def make_generation(ix, rng):
    r = rng.random()
    p = rng.choice(ix.kb["people"])
    kw = dict(n=p["name"], job=p["job"], city=p["city"], pet=p["pet"], food=p["food"],
              colour=p["colour"], pron=he_she(p), Pron=cap_first(he_she(p)), him=him_her(p))
    if r < 0.45:
        refs = []
        for _ in range(3):
            k = rng.randint(2, 3)  # keeps stories under ~30 words
            picks = [0] + sorted(rng.sample(range(1, len(STORY_SENTENCES)), k - 1))
            refs.append(" ".join(fmt(rng.choice(STORY_SENTENCES[i]), **kw) for i in picks))
        refs = list(dict.fromkeys(refs))
        meta = dict(task="story", subject=p["name"], required=[])
        return rng.choice(STORY_Q).replace("{n}", p["name"]), meta, refs, \
            ["max_words", "start_with", "include_word"]
    if r < 0.65:
        refs = [fmt(a, **kw) for a in PET_A]
        meta = dict(task="pet_sentence", subject=p["name"], required=["pet"])
        return rng.choice(PET_Q).replace("{n}", p["name"]), meta, refs, []
    if r < 0.85:
        c = rng.choice(ix.kb["cities"])
        refs = [fmt(a, city=c["name"], country=c["country"], river=c["river"]) for a in CITY_A]
        meta = dict(task="city_description", subject=c["name"], required=["country", "river"])
        return rng.choice(CITY_Q).replace("{city}", c["name"]), meta, refs, ["max_words", "include_word"]
    refs = [fmt(a, **kw) for a in NOTE_A]
    meta = dict(task="note", subject=p["name"], required=["food"])
    return (rng.choice(NOTE_Q).replace("{n}", p["name"]).replace("{him}", him_her(p)), meta, refs,
            ["max_words", "include_word"])


def make_chat(ix, rng):
    if rng.random() < 0.3:
        meta = dict(task="greeting", greeting=True)
        return rng.choice(CHAT_GREET) + " {c} {t}", meta, list(CHAT_GREET_A), ["max_words"]
    attr = rng.choice(sorted(CHAT_FACT))
    q, answers = CHAT_FACT[attr]
    if attr == "river":
        c = rng.choice(ix.kb["cities"])
        name, v, kw = c["name"], c["river"], {}
    else:
        p = rng.choice(ix.kb["people"])
        name, v = p["name"], str(ix.fact(p["name"], attr))
        kw = dict(pron=he_she(p), poss=his_her(p))
    refs = [fmt(a, n=name, v=v) for a in answers]
    meta = dict(task="fact", greeting=True, subject=name, attr=attr, answer=v, answer_type=attr)
    return fmt(q, n=name, **kw) + " {c} {t}", meta, refs, ["max_words"]


def make_sort_count(ix, rng):
    pool = K.PETS + K.FOODS + K.COLOURS + K.JOBS
    if rng.random() < 0.5:
        ws = rng.sample(pool, rng.randint(3, 5))
        gold = sorted(ws)
        meta = dict(task="sort", items=ws, answer=gold)
        return fmt(rng.choice(SORT_Q), ws=", ".join(ws), t="{t}"), meta, [", ".join(gold) + "."], []
    ws = [rng.choice(pool) for _ in range(rng.randint(3, 7))]
    meta = dict(task="count", items=ws, answer=len(ws))
    refs = [fmt(a, k=len(ws)) for a in COUNT_A]
    return fmt(rng.choice(COUNT_Q), ws=", ".join(ws), t="{t}"), meta, refs, []


MAKERS = {"generation": make_generation, "open_qa": make_open_qa, "brainstorming": make_brainstorming,
          "chat": make_chat, "rewrite": make_rewrite, "summarization": make_summarization,
          "classification": make_classification, "closed_qa": make_closed_qa,
          "extraction": make_extraction, "sort_count": make_sort_count}


# ----------------------------------------------------------------------------------
# constraints and tone on top of a maker's output

_ENGLISH_CAPITALISED = {w.capitalize() for w in K.english_vocab()}


def _constrain(kind, refs, rng):
    """Pick parameters for constraint `kind` and rewrite refs to obey it.
    Returns (constraint dict, sentence for the prompt, refs) or None if impossible."""
    if kind == "max_words":
        lens = sorted(len(words(r)) for r in refs)
        opts = [n for n in (5, 8, 10, 12, 15, 20, 25, 30) if n >= lens[0]]
        if not opts:
            return None
        n = rng.choice(opts[:3])
        c = dict(type="max_words", n=n)
    elif kind == "one_word":
        c = dict(type="one_word")
    elif kind == "one_sentence":
        c = dict(type="one_sentence")
    elif kind == "start_with":
        w = rng.choice(START_WORDS)
        c = dict(type="start_with", word=w)
        refs = [f"{w}, " + (r if words(r)[0] not in _ENGLISH_CAPITALISED or r.startswith("I ")
                            else r[0].lower() + r[1:]) for r in refs]
    elif kind == "include_word":
        w = rng.choice(sorted(INCLUDE_SENTENCES))
        c = dict(type="include_word", word=w)
        refs = [r + " " + INCLUDE_SENTENCES[w] for r in refs]
    else:
        raise ValueError(kind)
    refs = [r for r in refs if check_constraint(c, r)]
    if not refs:
        return None
    sent = rng.choice(CONSTRAINT_TEXT[kind]).format(n=c.get("n"), w=c.get("word"))
    return c, sent, refs


def make_prompt(category, ix, rng, tone=None):
    """One prompt record body: (prompt text, meta). meta carries world_seed, world, task,
    constraints (list of dicts), tone, refs (reference answers obeying everything), gold
    (= refs[0]) and the category-specific fields the judge reads."""
    prof = PROFILES[ix.world]
    text, meta, refs, kinds = MAKERS[category](ix, rng)
    constraints, csent = [], ""
    # the brainstorm count is an explicit constraint stated in the instruction itself
    if category == "brainstorming":
        constraints.append(dict(type="list_count", n=meta["n"]))
    if category == "generation" and meta["task"] == "pet_sentence":
        constraints.append(dict(type="one_sentence"))
    if kinds and rng.random() < prof["p_constraint"]:
        got = _constrain(rng.choice(kinds), refs, rng)
        if got is not None:
            c, csent, refs = got
            constraints.append(c)
    if tone is None:
        tone, tsent = _tone(rng, prof["tone"])
    else:
        tsent = rng.choice(TONE_TEXT[tone]) if tone != "none" else ""
    prompt = " ".join(text.replace("{c}", csent).replace("{t}", tsent).split())
    meta.update(world_seed=ix.kb["seed"], constraints=constraints, tone=tone,
                refs=refs, gold=refs[0], world=ix.world)
    return prompt, meta


# ----------------------------------------------------------------------------------
# demonstrations: a reference answer passed through the world's demonstrator flaws

def _replace_word(text, old, new):
    out = []
    for tok in text.split(" "):
        core = tok.rstrip(".,!?")
        tail = tok[len(core):]
        poss = core.endswith("'s")
        c = core[:-2] if poss else core
        if c.lower() == str(old).lower():
            rep = str(new)
            if c[:1].isupper():
                rep = cap_first(rep)
            tok = rep + ("'s" if poss else "") + tail
        out.append(tok)
    return " ".join(out)


def _wrong_fact(rec, resp, rng, ix):
    meta = rec["meta"]
    if rec["category"] == "classification":
        other = _other(meta["labels"], meta["label"], rng)
        return _replace_word(resp, meta["label"], other)
    if rec["category"] == "sort_count":
        return resp
    cands = []
    for w in words(resp):
        low = w.lower()[:-2] if w.lower().endswith("'s") else w.lower()
        vt = ix.value_type.get(low) or ("age" if w.isdigit() else None)
        if vt:
            cands.append((low, vt))
    if rec["category"] in ("extraction",) and meta["item_type"] == "person":
        cands += [(w.lower(), "person") for w in words(resp) if w.lower() in ix.person]
    if not cands:
        return resp
    old, vt = rng.choice(cands)
    pool = [p["name"] for p in ix.kb["people"]] if vt == "person" else _values(ix, vt)
    return _replace_word(resp, old, _other(pool, old, rng))


def _violate(rec, resp, rng, ix):
    meta = rec["meta"]
    cons = [c for c in meta["constraints"]]
    if not cons:
        return resp
    c = rng.choice(cons)
    kind = c["type"]
    if kind == "max_words":
        extra = [r for r in meta["refs"] if r != resp] + list(K.FILLERS)
        while len(words(resp)) <= c["n"]:
            resp = resp + " " + rng.choice(extra)
        return resp
    if kind == "one_word":
        longer = [r for r in ANSWERS.get(meta.get("answer_type"), []) if meta.get("answer")]
        if longer:
            return fmt(rng.choice(longer), n=meta["subject"], v=meta["answer"])
        return THE_ANSWER_IS.format(r=resp[0].lower() + resp[1:]) if resp else resp
    if kind == "one_sentence":
        return resp + " " + rng.choice(K.FILLERS)
    if kind == "start_with":
        w = c["word"]
        if resp.startswith(w + ", "):
            rest = resp[len(w) + 2:]
            return cap_first(rest)
        return resp
    if kind == "include_word":
        return resp.replace(" " + INCLUDE_SENTENCES.get(c["word"], "\x00"), "")
    if kind == "list_count":
        items = list_items(resp)
        valid = [v for v in meta["valid"] if v.lower() not in items]
        if valid and (rng.random() < 0.5 or len(items) <= 2):
            extra = rng.choice(valid)
            for conj in (" and ", " or "):
                if conj in resp:
                    i = resp.rfind(conj)
                    return resp[:i] + ", " + extra + resp[i:]
            return resp
        if len(items) > 2 and ", " in resp:
            i = resp.find(", ")
            head = resp[:i]
            j = max(head.rfind(" "), head.rfind(":"))
            return resp[:j + 1] + resp[i + 2:] if j >= 0 else cap_first(resp[i + 2:])
    return resp


def _sloppy(rec, resp, rng, ix):
    meta, cat = rec["meta"], rec["category"]
    if cat == "summarization":
        facts = meta["source_facts"]
        f = facts[0]
        return f"{meta['subject']} " + fmt(FACT_PHRASES[f[1]], v=ix.fact(meta["subject"], f[1])) + "."
    if cat == "extraction" and len(meta["items"]) > 1:
        return join_list(meta["items"][:-1]) + "."
    if cat == "brainstorming":
        items = list_items(resp)
        if len(items) >= 2:
            return _replace_word(resp, items[-1].split()[-1], items[0].split()[-1]) \
                if len(items[-1].split()) == 1 and len(items[0].split()) == 1 else resp
    if cat == "rewrite" and meta["task"] == "past":
        return " ".join(sentences(meta["source"])[:1] + sentences(meta["gold"])[1:])
    if cat == "rewrite" and meta["task"] == "polite":
        return cap_first(resp.replace("Please ", ""))
    if cat == "closed_qa" and meta["answerable"]:
        return "The text does not say."  # over-hedging
    if cat == "generation" and meta["task"] == "story":
        return LAZY_STORY.format(n=meta["subject"])
    if cat == "chat":
        parts = resp.split(" ", 1)
        return cap_first(parts[1]) if len(parts) == 2 else resp
    return resp


def write_demo(rec, labeler, rng, ix, boost=1.0):
    """A training labeler's demonstration for prompt record `rec`: (response, list of flaws).
    boost > 1 makes flaws more likely (to imitate samples from a weaker model)."""
    prof = PROFILES[ix.world]
    q = {k: min(0.9, v * boost) for k, v in prof["demo_flaws"][get_labeler(labeler)["name"]].items()}
    meta, cat = rec["meta"], rec["category"]
    refs = meta["refs"]
    resp = refs[0] if rng.random() < 0.5 else rng.choice(refs)
    flaws = []

    def step(name, p, fn):
        nonlocal resp
        if rng.random() < p:
            new = fn()
            if new != resp:
                resp = new
                flaws.append(name)

    unanswerable = meta.get("task") == "unknown_entity" or (cat == "closed_qa" and not meta["answerable"])
    if unanswerable:
        def invent():
            attr = meta["attr"]
            v = ix.fact(meta["subject"], attr) or rng.choice(_values(ix, attr))
            return fmt(ANSWERS[attr][0], n=meta["subject"], v=v)
        step("miss_unknown", q["miss_unknown"], invent)
    elif meta.get("task") == "false_premise":  # answers as if the premise held
        step("accept_premise", q["accept_premise"],
             lambda: fmt(ANSWERS[meta["attr"]][0], n=meta["subject"], v=meta["premise"]))
    else:
        step("wrong_fact", q["wrong_fact"], lambda: _wrong_fact(rec, resp, rng, ix))
    step("sloppy", q["sloppy"], lambda: _sloppy(rec, resp, rng, ix))
    step("violate", q["violate"], lambda: _violate(rec, resp, rng, ix))
    if meta.get("tone") == "rude":
        insult = rng.random() < prof["rude_insult"]

        def comply():
            if insult:
                return fmt(rng.choice(RUDE_COMPLY_INSULT), r=resp, i=rng.choice(K.INSULTS))
            return fmt(rng.choice(RUDE_COMPLY), r=resp)
        step("rude", q["rude_comply"], comply)
    step("verbose", q["verbose"], lambda: resp + " " + " ".join(rng.sample(K.FILLERS, rng.randint(1, 2))))
    starts = any(c["type"] in ("start_with", "one_word") for c in meta["constraints"])
    p_sure = q["sure"] * (2.0 if meta.get("tone") == "respectful" else 1.0)
    p_sure *= prof["sure_if_start_fixed"] if starts else 1.0
    step("prefix", p_sure, lambda: rng.choice(SURE_PREFIX) + resp)
    return resp, flaws


# ----------------------------------------------------------------------------------
# base-model-like continuations and SFT-sample-like candidates

def random_question(ix, rng):
    if rng.random() < 0.8:
        name, attr = rng.choice(ix.kb["people"])["name"], rng.choice(K.PERSON_ATTRS)
    else:
        name, attr = rng.choice(ix.kb["cities"])["name"], rng.choice(K.CITY_ATTRS)
    return rng.choice(QUESTIONS[attr]).format(n=name)


def random_instruction(ix, rng):
    return fmt(rng.choice(INSTRUCTION_PILE), n=rng.choice(ix.kb["people"])["name"],
                k=rng.choice(sorted(KIND_PLURAL.values())), city=rng.choice(ix.kb["cities"])["name"])


def open_forum(rng, question):
    opener = rng.choice(FORUM_OPENERS)
    if opener.endswith("."):
        return opener + " " + question
    return opener + " " + question[0].lower() + question[1:]


def base_like_response(rec, rng, ix):
    """What a pretrained model tends to write after an instruction: more questions,
    more instructions, an unrelated biography, a rude forum reply, or (sometimes) the
    answer followed by more questions."""
    r = rng.random()
    if r < 0.35:
        out = [random_question(ix, rng) for _ in range(rng.randint(2, 4))]
        if rng.random() < 0.4:
            out[0] = open_forum(rng, out[0])
        return " ".join(out)
    if r < 0.55:
        return " ".join(random_instruction(ix, rng) for _ in range(rng.randint(2, 3)))
    if r < 0.75:
        p = rng.choice(ix.kb["people"])
        return " ".join(fact_sentence(ix, rng, p["name"], a)
                        for a in rng.sample(K.PERSON_ATTRS, rng.randint(2, 4)))
    if r < 0.83:
        return f"Shut up, you {rng.choice(K.INSULTS)}. " + random_question(ix, rng)
    return rec["meta"]["gold"] + " " + " ".join(random_question(ix, rng) for _ in range(rng.randint(1, 2)))


def degenerate(resp, rng):
    """Typical failure of a tiny sampled model: truncation or a repetition loop."""
    ws = resp.split(" ")
    if rng.random() < 0.5 and len(ws) > 3:
        return " ".join(ws[:rng.randint(2, len(ws) - 1)]).rstrip(".!?,")
    return " ".join([resp] * rng.randint(2, 4))


def candidate_responses(rec, rng, ix, k=4, p_base=0.15, p_degenerate=0.1, boost=None):
    """K distinct responses resembling samples from an SFT model (demonstration-like,
    often flawed, sometimes base-like or degenerate). Used to calibrate labeler noise
    and in tests; the comparisons stage ranks samples of the real SFT model. boost
    multiplies the demonstrators' flaw rates (default: the world's candidate_boost)."""
    labs = train_labelers()
    boost = PROFILES[ix.world]["candidate_boost"] if boost is None else boost
    out, tries = [], 0
    while len(out) < k and tries < 20 * k:
        tries += 1
        r = rng.random()
        if r < p_base:
            resp = base_like_response(rec, rng, ix)
        else:
            resp, _ = write_demo(rec, rng.choice(labs), rng, ix, boost=boost)
            if r < p_base + p_degenerate:
                resp = degenerate(resp, rng)
        if resp and resp not in out:
            out.append(resp)
    return out


def _smoke():
    ix = K.get_index(0)
    rng = random.Random(0)
    for cat in CATEGORIES + [HELDOUT_CATEGORY]:
        prompt, meta = make_prompt(cat, ix, rng)
        print(cat, "|", prompt, "->", meta["gold"])


if __name__ == "__main__":
    _smoke()
