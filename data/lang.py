"""The second "language": a deterministic word-level translation of the world's English.

Every English word of the world (`data.kb.english_vocab()`: the lexicon and every word
of the templates, listed by hand) gets an invented word built from hashed syllables.
Names and numbers are left unchanged; capitalisation of the first letter is carried
over. The dictionary does not depend on the world seed, so `to_lang2` / `to_english`
are pure functions:

    to_lang2("Belan has a pet cat.")            -> "Belan zuvo qe yoqa xilo." (say)
    to_english(to_lang2("Belan has a pet cat.")) == "Belan has a pet cat."

Every lang2 word contains one of the letters z q x j w y, which no invented name
contains, so names and lang2 words never collide; no lang2 word is an English
world word either. Words outside the dictionary pass through both ways unchanged.
"""
import functools
import hashlib
import re

from data.kb import english_vocab

LANG2_NAME = "Zemic"  # what the English side calls the language (a proper noun)
_MARK = "zqxjwy"
_L2_ONSETS = ["z", "v", "q", "x", "k", "r", "n", "j", "w", "s", "t", "y", "zh", "dr"]
_L2_VOWELS = ["a", "e", "i", "o", "u", "y"]
_WORD = re.compile(r"[A-Za-z]+")


def _candidate(word, attempt):
    h = hashlib.sha256(f"{word}#{attempt}".encode()).digest()
    nsyl = (1 if len(word) <= 3 else (2 if len(word) <= 6 else 3)) + attempt // 16
    s = "".join(_L2_ONSETS[h[2 * i] % len(_L2_ONSETS)] + _L2_VOWELS[h[2 * i + 1] % len(_L2_VOWELS)]
                for i in range(nsyl))
    if h[10] % 3 == 0:
        s += "n"
    return s


@functools.lru_cache(maxsize=1)
def dictionary():
    """English word -> lang2 word (a bijection on the world's vocabulary)."""
    vocab = english_vocab()
    english = set(vocab)
    used, table = set(), {}
    for w in vocab:
        attempt = 0
        while True:
            cand = _candidate(w, attempt)
            if cand not in used and cand not in english and any(c in cand for c in _MARK):
                break
            attempt += 1
        used.add(cand)
        table[w] = cand
    return table


@functools.lru_cache(maxsize=1)
def _inverse():
    return {v: k for k, v in dictionary().items()}


def _recase(src, out):
    if len(src) > 1 and src.isupper():
        return out.upper()
    if src[0].isupper():
        return out[0].upper() + out[1:]
    return out


def _translate(text, table):
    def sub(m):
        w = m.group(0)
        t = table.get(w.lower())
        return w if t is None else _recase(w, t)
    return _WORD.sub(sub, text)


def to_lang2(text):
    return _translate(text, dictionary())


def to_english(text):
    return _translate(text, _inverse())


def is_lang2_word(word):
    return word.lower() in _inverse()
