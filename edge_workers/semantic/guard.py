"""The lexical guard: what must agree between two messages before one's answer serves the other.

A similarity threshold alone is unsafe: MiniLM puts "Convert 100 USD to EUR" and "Convert 100
EUR to USD" at 0.98, "Is it safe" and "Is it not safe" at 0.99, "today" and "tomorrow" at 0.95.
So besides the threshold, these must agree (tests/data/semantic_pairs.yaml is the labelled set):

- numbers (digits and number words), as a sequence: "5 from 12" is not "12 from 5";
- negations (not, n't, no, never, without, ...), counted;
- named entities (capitalized or all-caps words, not starting a sentence), as a sequence;
- key terms whose swap changes the answer (today/tomorrow, before/after, best/worst, on/off,
  weekdays, seasons, ...), as a sequence;
- word order: two content words both messages share must not swap places around a third shared
  word ("the cat chases the dog" / "the dog chases the cat"); a swap with nothing shared between
  them is how paraphrases move words ("the tallest mountain" / "which mountain is the tallest").

Features keep only 32-bit hashes of words, never the text: they travel through Redis
(`edge_workers.semantic.stream`) beside the vector.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
NUMBER_WORDS.update(
    {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80"}
)
NUMBER_WORDS.update({"ninety": "90", "hundred": "100", "thousand": "1000", "million": "1e6", "dozen": "12"})
NUMBER_WORDS.update({"billion": "1e9", "half": "0.5", "twice": "x2", "double": "x2", "triple": "x3"})
NEGATIONS = frozenset(
    "not no never without none nothing nobody nowhere neither nor cannot cant dont doesnt didnt isnt "
    "arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt mustnt".split()
)
# Words whose swap for another of their kind changes the answer. Each list is a kind; any
# difference in the sequence of these words refuses the match.
KEY_TERMS = frozenset(
    (
        "today tomorrow yesterday tonight now later soon earlier week weekend month year decade century "
        "morning afternoon evening night next last previous current upcoming past future "
        "monday tuesday wednesday thursday friday saturday sunday "
        "january february march april may june july august september october november december "
        "spring summer autumn fall winter "
        "before after above below over under more less fewer most least higher lower "
        "increase decrease raise reduce up down on off inside outside open close start stop "
        "enable disable add remove insert delete import export upload download push pull "
        "encrypt decrypt encode decode compress decompress buy sell win lose gain loss profit "
        "best worst good bad better worse largest smallest biggest longest shortest highest lowest "
        "maximum minimum max min ascending descending first last left right north south east west "
        "hot cold warm cool men women man woman male female boys girls boy girl older younger "
        "greater smaller larger bigger faster slower cheaper expensive early late "
        "always sometimes rarely often safe unsafe legal illegal true false positive negative"
    ).split()
)
STOPWORDS = frozenset(
    (
        "a an the and or but if of at by for with about as into onto through during than then so "
        "is are was were be been being am do does did doing have has had having i me my mine we us our "
        "you your yours he him his she her it its they them their what which who whom whose this that "
        "these those there here how why where when please tell give show explain describe let "
        "s t d ll re ve m using use could kindly some any just"
    ).split()
)

_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['\u2019][^\W\d_]+)?")
_SENTENCE_END = frozenset(".!?:;\n")


def _hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")


def _stem(word: str) -> str:
    """Enough stemming for the order rule to see "spiders"/"spider" as one word."""
    for suffix in ("ing", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


class Features(msgspec.Struct, array_like=True, frozen=True):
    """What the guard compares, as hashes of normalized words."""

    numbers: list[int]
    negations: int
    entities: list[int]
    terms: list[int]
    content: list[int]  # content words in order (stemmed), for the order rule


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Features).decode


def encode_features(f: Features) -> bytes:
    """As an index entry keeps them: ~100 bytes, decoded only for a candidate above the threshold."""
    return _encode(f)


def decode_features(data: bytes) -> Features:
    """Raises msgspec.DecodeError for bytes that are not features."""
    return _decode(data)


def features(text: str) -> Features:
    numbers: list[int] = []
    entities: list[int] = []
    terms: list[int] = []
    content: list[int] = []
    negations = 0
    sentence_start = True
    for match in _WORD.finditer(text):
        raw = match.group()
        start = match.start()
        before = text[start - 1] if start else "\n"
        word = raw.lower().replace("'", "").replace("\u2019", "")
        first = sentence_start
        sentence_start = False
        following = text[match.end() : match.end() + 2].lstrip(" ")
        if following[:1] in _SENTENCE_END:
            sentence_start = True
        if raw[0].isdigit():
            numbers.append(_hash(raw.replace(",", "")))
            continue
        if word in NUMBER_WORDS:
            numbers.append(_hash(NUMBER_WORDS[word]))
            continue
        if word in NEGATIONS:
            negations += 1
            continue
        if word.endswith("s") and raw.endswith("'s"):
            word = word[:-1]  # France's -> france
        is_entity = (raw.isupper() and len(raw) > 1) or (raw[0].isupper() and not first and before != '"')
        if is_entity and word not in STOPWORDS:
            entities.append(_hash(word))
        if word in KEY_TERMS:
            terms.append(_hash(word))
        elif word not in STOPWORDS:
            content.append(_hash(_stem(word)))
    return Features(numbers, negations, entities, terms, content)


def agree(a: Features, b: Features) -> bool:
    """Whether a message with features `b` may be served the answer cached for `a`."""
    if a.numbers != b.numbers or a.negations != b.negations:
        return False
    if a.entities != b.entities or a.terms != b.terms:
        return False
    return not _swapped(a.content, b.content)


def _swapped(a: list[int], b: list[int]) -> bool:
    """Two shared words in the opposite order with a third shared word between them in both."""
    shared = set(a) & set(b)
    if len(shared) < 3:
        return False
    pos_a = {w: i for i, w in enumerate(a) if w in shared}
    pos_b = {w: i for i, w in enumerate(b) if w in shared}
    words = sorted(shared, key=pos_a.__getitem__)
    for i, x in enumerate(words):
        for y in words[i + 1 :]:
            if pos_b[x] < pos_b[y]:
                continue  # same order in both
            lo_a, hi_a = pos_a[x], pos_a[y]
            lo_b, hi_b = pos_b[y], pos_b[x]
            if any(lo_a < pos_a[z] < hi_a and lo_b < pos_b[z] < hi_b for z in words):
                return True
    return False
