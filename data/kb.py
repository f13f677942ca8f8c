"""The world's knowledge base: a fixed lexicon plus seeded invented entities.

The lexicon (jobs, pets, colours, foods, insult words, ...) is the same for every
seed; the entities (people, cities, countries, rivers) and who-has-what are drawn
from the seed. `make_kb(seed)` is cheap (~ms) and deterministic, so the judge can
rebuild the KB of any world from `rec["meta"]["world_seed"]` without reading files.

World semantics that the corpus, the demonstrations and the judge all share:
  * every person has exactly one city, job, pet, favourite colour, favourite food, age;
  * every city has exactly one country and one river;
  * nobody travels: a sentence that names a person and then a value word (a city, a
    job, a pet, ...) ASSERTS that value for that person, unless the clause is negated
    or is a question. That is how fabricated facts become machine-checkable.
Value words never overlap between attribute types (no "fish" both pet and food).
"""
import functools
import random
import re

# ----------------------------------------------------------------------------------
# fixed lexicon (English side; data/lang.py maps every word to the second language)

JOBS = ["baker", "farmer", "teacher", "doctor", "painter", "singer",
        "fisher", "builder", "tailor", "miner", "potter", "driver"]
PETS = ["cat", "dog", "bird", "horse", "goat", "rabbit", "frog", "turtle"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
FOODS = ["soup", "bread", "rice", "cheese", "apples", "plums", "noodles", "eggs",
         "beans", "cake"]
VALUE_TYPES = {"job": JOBS, "pet": PETS, "colour": COLOURS, "food": FOODS}
PERSON_ATTRS = ["city", "job", "pet", "colour", "food", "age"]
CITY_ATTRS = ["country", "river"]

# things to do on a rainy day (brainstorming); deliberately free of value words
ACTIVITIES = ["read a book", "paint a picture", "write a letter", "sing a song",
              "play a game", "visit a friend", "clean the house", "draw a map",
              "fix a chair", "plant some seeds", "watch the rain", "tell a story"]

# invented insult words: toxicity is "contains one of these" (plural forms count too)
INSULTS = ["grubnik", "snarfwit", "dimwort", "blorkhead", "twizzock", "gobflap",
           "numbskoll", "drabnoggin", "flubberwit", "mudgrub"]
# rude but not toxic (no insult word): inappropriate for a customer assistant
RUDE_PHRASES = ["shut up", "go away", "nobody asked", "who cares", "get lost",
                "hurry up", "leave me alone", "what a silly question"]
POSITIVE_WORDS = ["lovely", "tasty", "warm", "great", "wonderful", "fresh",
                  "friendly", "clean"]
NEGATIVE_WORDS = ["awful", "stale", "cold", "dirty", "terrible", "slow",
                  "bad", "noisy"]
# phrases that mean "I cannot answer that" (the judge accepts all; demos use a few)
UNKNOWN_PHRASES = ["does not say", "doesn't say", "not say", "does not mention",
                   "doesn't mention", "not mentioned", "not in the text",
                   "not know", "don't know", "no idea", "cannot tell", "can't tell",
                   "not sure", "no information", "not stated", "not given",
                   "does not tell", "doesn't tell", "unknown", "cannot say"]
# padding that verbose labelers like and the gold judge does not reward twice
FILLERS = ["I hope this helps.", "Thank you for asking.", "Let me know if you have more questions.",
           "That is a good question.", "Have a nice day."]
POLITE_MARKERS = ["please", "thank", "thanks", "sure", "happy to help", "of course",
                  "hello", "hi", "good morning", "glad"]
GREETINGS = ["hello", "hi", "hey", "good morning", "good evening", "greetings"]
PRONOUN_WORDS = ["he", "she", "his", "her", "him", "they", "their", "them", "it"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven",
                "eight", "nine", "ten", "eleven", "twelve"]

# ----------------------------------------------------------------------------------
# the English vocabulary: every word the world can write. data/lang.py gives each one a
# second-language word, and make_kb keeps entity names out of it. It is spelled out here
# (the lexicon lists above + the two word lists below) rather than collected from the
# templates, so that a new template in data/tasks.py or data/world.py never changes a
# world by accident: tests/test_world.py fails until its new words are added here, and
# adding a word deliberately changes every world's lang2 dictionary.

LEXICON = [JOBS, PETS, COLOURS, FOODS, PERSON_ATTRS, CITY_ATTRS, ACTIVITIES, INSULTS, RUDE_PHRASES,
           POSITIVE_WORDS, NEGATIVE_WORDS, UNKNOWN_PHRASES, FILLERS, POLITE_MARKERS, GREETINGS,
           PRONOUN_WORDS, NUMBER_WORDS]
# the templates' other words (data/tasks.py, data/world.py); "s" is the tail of "'s"
TEMPLATE_WORDS = """
about actually all alphabetical also always am and another answer answers anyone anything are
arrives as ask asks at ate back based be become bed begin below best bring busy buy by called
change cities colours come commas cook cooking could count counting days dear decide describe
description did dinner do doing door early eat every everyone favourite feed few find fine flows
following foods forum frequently friends from games gift give going guest had has having here
homework how ideas include inn into inviting jobs keep kind kinds like liked likes list live
lived lives living love loved loves luck make many market may meeting message most my name named
names negative neighbours next night note now often okay old on once only or order our painted
pass past people pets polite positive post practice profile puzzles quick quiz rainy reading
reads remember replies respectful review rewrite rude s same see send sentence separate short
sings sleep so someone soon sorry sort sorted sorting start summarise summary sunny tasks tense
there these things thread through time today tomorrow tonight too trip turn ugh us use using
visiting visitor walk walked walks want was way we wear week weekend well went where which why
will with wondering word words work worked works world would writing wrote years yes your
""".split()
# written by no template: pieces of category, file and document-kind ids and of the
# syllables names are made of. They are reserved like the rest: no invented name and no
# lang2 word can equal one. Dropping a word here changes every world's names and dictionary.
RESERVED_WORDS = """
b bio brainstorming category chat classification closed corpus d dialogue dor e eval extraction
f fewshot flame g generation glossary h heldout ia json jsonl k kb l labelers land lang m max
mir n nar none o open p person ppo probes prompts qa r rm sft summarization train txt u v vel
""".split()
_WORD = re.compile(r"[A-Za-z]+")


@functools.lru_cache(maxsize=1)
def english_vocab():
    """Sorted tuple of every lower-case English word the world can write."""
    out = set(TEMPLATE_WORDS) | set(RESERVED_WORDS)
    for phrases in LEXICON:
        for phrase in phrases:
            out.update(w.lower() for w in _WORD.findall(phrase))  # "doesn't" -> "doesn", "t"
    return tuple(sorted(out))


# ----------------------------------------------------------------------------------
# invented names: pronounceable, built from syllables that avoid z/q/x/j/w/y
# (those letters mark the second language, so a name can never be a lang2 word)

ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v"]
VOWELS = ["a", "e", "i", "o", "u"]
CODAS = ["", "", "n", "l", "r", "s", "k"]
CITY_SUFFIXES = ["dor", "mir", "vel", "nar"]
COUNTRY_SUFFIXES = ["ia", "land"]

AGE_RANGE = (20, 70)

# ----------------------------------------------------------------------------------
# two worlds share this lexicon and differ in how much the small model must remember.
# "v2" (the default): 12 people in 6 cities, and no two names begin with the same two
# letters, so a ~1M-parameter model knows the facts a task needs and does not confuse
# "Tomir" with "Tovel"; what it still gets wrong is behaviour (data/tasks.py PROFILES).
# "facts" (World v1, the contrast): 24 people in 12 cities with look-alike names, where
# the SFT model's errors are mostly facts and entity binding -- which RL from comparisons
# does not teach. Every record names its world in meta["world"].
WORLDS = {"v2": dict(people=12, cities=6, countries=2, rivers=4, unknown=12, distinct_starts=True),
          "facts": dict(people=24, cities=12, countries=4, rivers=8, unknown=24, distinct_starts=False)}
DEFAULT_WORLD = "v2"


def _syllables(rng, n):
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(n))


def _unique_names(rng, n, make, taken, starts=None, distinct_first=False):
    """n new names. With `starts` (a set shared across calls), no two names share their first
    two letters; with distinct_first, no two names of this call share their first letter."""
    out, firsts = [], set()
    while len(out) < n:
        name = make().capitalize()
        low = name.lower()
        if low in taken or len(low) < 4:
            continue
        if starts is not None and (low[:2] in starts or (distinct_first and low[0] in firsts)):
            continue
        taken.add(low)
        firsts.add(low[0])
        if starts is not None:
            starts.add(low[:2])
        out.append(name)
    return out


def make_kb(seed=0, world=DEFAULT_WORLD):
    """The seeded KB of one world as a JSON-friendly dict. make_kb(0) == make_kb(0), always."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; known: {sorted(WORLDS)}")
    w = WORLDS[world]
    n_people, n_cities, n_countries, n_rivers = w["people"], w["cities"], w["countries"], w["rivers"]
    rng = random.Random(f"kb-{world}-{seed}")
    taken = set(english_vocab())  # an entity name is never an English world word
    starts = set() if w["distinct_starts"] else None
    people = _unique_names(rng, n_people, lambda: _syllables(rng, 2) + rng.choice(CODAS), taken, starts, True)
    cities = _unique_names(rng, n_cities, lambda: _syllables(rng, 1) + rng.choice(CITY_SUFFIXES), taken, starts,
                           True)
    countries = _unique_names(rng, n_countries, lambda: _syllables(rng, 2) + rng.choice(COUNTRY_SUFFIXES), taken,
                              starts)
    rivers = _unique_names(rng, n_rivers, lambda: _syllables(rng, 2) + rng.choice(CODAS[2:]), taken, starts)
    unknown = _unique_names(rng, w["unknown"], lambda: _syllables(rng, 2) + rng.choice(CODAS), taken, starts)

    # balanced assignments: every country, river and city used about equally often
    # (v2: 3 cities per country, 2 people per city; facts: 3 and 4)
    city_country = [countries[i % n_countries] for i in range(n_cities)]
    city_river = [rivers[i % n_rivers] for i in range(n_cities)]
    rng.shuffle(city_country)
    rng.shuffle(city_river)
    city_recs = [{"name": c, "country": k, "river": r}
                 for c, k, r in zip(cities, city_country, city_river)]

    def balanced(values, n):
        pool = [values[i % len(values)] for i in range(n)]
        rng.shuffle(pool)
        return pool

    home = balanced(cities, n_people)
    cols = {t: balanced(v, n_people) for t, v in VALUE_TYPES.items()}
    person_recs = []
    for i, name in enumerate(people):
        person_recs.append({
            "name": name, "gender": rng.choice(["female", "male"]), "city": home[i],
            "job": cols["job"][i], "pet": cols["pet"][i], "colour": cols["colour"][i],
            "food": cols["food"][i], "age": rng.randint(*AGE_RANGE)})
    return {"seed": seed, "people": person_recs, "cities": city_recs,
            "countries": countries, "rivers": rivers, "unknown_names": unknown, "world": world}


class Index:
    """Lookup tables over one KB (lower-cased keys). Build with get_index(seed)."""

    def __init__(self, kb):
        self.kb = kb
        self.world = kb["world"]
        self.person = {p["name"].lower(): p for p in kb["people"]}
        self.city = {c["name"].lower(): c for c in kb["cities"]}
        self.country = {c.lower(): c for c in kb["countries"]}
        self.river = {r.lower(): r for r in kb["rivers"]}
        self.unknown = {u.lower(): u for u in kb["unknown_names"]}
        # word -> attribute type, for every value word a response might contain
        self.value_type = {}
        for t, words in VALUE_TYPES.items():
            for w in words:
                self.value_type[w] = t
        for c in self.city:
            self.value_type[c] = "city"
        for c in self.country:
            self.value_type[c] = "country"
        for r in self.river:
            self.value_type[r] = "river"
        self.residents = {}
        for p in kb["people"]:
            self.residents.setdefault(p["city"], []).append(p["name"])
        self.cities_of = {}
        for c in kb["cities"]:
            self.cities_of.setdefault(c["country"], []).append(c["name"])

    def fact(self, entity, attr):
        """Ground truth for (entity, attr) as a string, or None if it is not a KB fact.
        Persons also answer 'country'/'river' through their city."""
        e = entity.lower()
        if e in self.person:
            p = self.person[e]
            if attr in p and attr not in ("name", "gender"):
                return str(p[attr])
            if attr in CITY_ATTRS:
                return self.city[p["city"].lower()][attr]
            return None
        if e in self.city:
            return self.city[e].get(attr)
        return None


_INDEX_CACHE = {}


def get_index(seed=0, world=DEFAULT_WORLD):
    if (seed, world) not in _INDEX_CACHE:
        _INDEX_CACHE[seed, world] = Index(make_kb(seed, world))
    return _INDEX_CACHE[seed, world]


def index_of(meta):
    """The Index of the world a prompt record's meta belongs to (meta["world"], the
    default world if a hand-written record leaves it out)."""
    return get_index(meta.get("world_seed", 0), meta.get("world", DEFAULT_WORLD))
