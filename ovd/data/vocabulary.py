"""Phrase identity and a split's vocabulary: which object names a split holds and which are present in
an image. Shared by negative-phrase training (:mod:`ovd.data.negatives`) and absent-phrase evaluation.

Key rule (:func:`phrase_key`): lowercase; every run of whitespace becomes one space; a trailing
" ." / "," is dropped; then *leading* articles ("a", "an", "the") and *leading* size words of the
synthetic set ("small", "little", "large", "big", see ``ovd.data.synthetic.SIZE_WORDS``) are
dropped, repeatedly, in any order. So "A small red circle", "the  Red Circle" and "red circle" are one
object name, and the key of every object phrase of the built-in data is its "colour shape" name
(position words such as "on the left" lie outside the phrase markup there, so they never reach a key).
On Flickr30k this also merges "a little girl" with "girl": for negatives that errs on the safe side
(a coarser key excludes more phrases from being called absent). A phrase that is *only* such words
(e.g. "the") keeps its words, so no key is empty.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from .records import GroundingRecord
from .synthetic import SIZE_WORDS

__all__ = ["LEADING_WORDS", "phrase_key", "split_vocabulary", "present_keys"]

#: Words dropped from the front of a phrase for its key: articles and the synthetic size words.
LEADING_WORDS = frozenset({"a", "an", "the"} | {w for words in SIZE_WORDS.values() for w in words if w})

_SPACES = re.compile(r"\s+")


def _strip_words(text: str) -> list[str]:
    """Whitespace-collapsed words of ``text`` with the leading articles / size words dropped, case kept."""
    words = _SPACES.sub(" ", text).strip().rstrip(" .,").split(" ")
    start = 0
    while start < len(words) - 1 and words[start].lower() in LEADING_WORDS:
        start += 1
    return words[start:]


def phrase_key(text: str) -> str:
    """Normalized identity of a phrase (see the module docstring for the rule).

    >>> phrase_key("A small  Red circle")
    'red circle'
    """
    if not isinstance(text, str):
        raise TypeError(f"phrase_key needs a str, got {type(text).__name__}")
    return " ".join(_strip_words(text)).lower()


def _boxed_phrase_texts(record: GroundingRecord) -> Iterable[str]:
    """Texts of the record's phrases whose chain has a box (objects present in the image)."""
    with_boxes = record.chains_with_boxes
    return (p.text for p in record.phrases if p.chain_id in with_boxes)


def split_vocabulary(records: Iterable[GroundingRecord]) -> list[str]:
    """The distinct object names of ``records``: one display text per phrase key, sorted by key.

    Only phrases with a box count (a scene phrase such as "a dark background" or a "notvisual" one is
    not an object name). The display text is the phrase with its leading articles / size words dropped
    and spaces collapsed, case kept; where one key has several such forms, the most frequent one
    (ties: the smallest string). For the built-in data: every "colour shape" name of the split.
    """
    forms: dict[str, Counter] = defaultdict(Counter)
    for record in records:
        for text in _boxed_phrase_texts(record):
            words = _strip_words(text)
            if words and words[0]:
                forms[" ".join(words).lower()][" ".join(words)] += 1
    return [min(c, key=lambda f: (-c[f], f)) for _, c in sorted(forms.items())]


def present_keys(records: Iterable[GroundingRecord]) -> dict[str, set[str]]:
    """image_id -> keys of every phrase with a box, over *every* caption of that image in ``records``
    (an object named by caption 2 is present for caption 1 too)."""
    present: dict[str, set[str]] = defaultdict(set)
    for record in records:
        present[record.image_id].update(phrase_key(t) for t in _boxed_phrase_texts(record))
    return dict(present)
