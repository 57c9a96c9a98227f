"""Negative phrases for training: append object names that are *absent* from the image to a caption, so the
detector learns "not here" (GLIP / Grounding DINO train with prompts that hold negative category names).

A training caption becomes ``"caption . neg1 . neg2"`` (joined with ``ovd.processor.PHRASE_SEPARATOR``).
The negatives get no boxes and no positive-map entries, so the focal loss already gives every query a
target of 0 on their tokens (``ovd.training.losses.class_targets`` fills only matched rows with the
positive map): no loss change is needed. They come after the caption, so truncation at
``text.max_tokens`` drops them first, and the caption's char spans stay valid.

Determinism: the draw for sample ``index`` in ``epoch`` uses a generator seeded by (seed, epoch, index),
independent of worker count and batch order, so a resumed run sees the same prompts. The epoch travels
with each index: :class:`ovd.data.datamodule.EpochTaggedSampler` yields ``(index, epoch)`` keys, which
:class:`NegativePhraseDataset` accepts (the draw runs in the loader worker; no extra tokenizer pass).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ..processor import PHRASE_SEPARATOR
from .records import GroundingRecord
from .vocabulary import phrase_key, present_keys, split_vocabulary

__all__ = ["NegativePhraseSampler", "NegativePhraseDataset", "mentioned_keys",
           "sampler_for_records", "append_negatives", "as_class_list"]


def mentioned_keys(records: Iterable[GroundingRecord]) -> dict[str, set[str]]:
    """image_id -> keys of every phrase of every caption of the image, with a box or not.

    A superset of :func:`ovd.data.vocabulary.present_keys`: a phrase a caption names without a box
    ("the crowd" as a scene) may still be in the picture, so it is never drawn as a negative either."""
    records = list(records)
    keys: dict[str, set[str]] = defaultdict(set)
    for record in records:
        keys[record.image_id].update(phrase_key(p.text) for p in record.phrases)
    for image_id, present in present_keys(records).items():
        keys[image_id].update(present)
    return dict(keys)


class NegativePhraseSampler:
    """Draws absent object names for a caption.

    Args:
        vocabulary: candidate phrases (display texts, e.g. :func:`split_vocabulary` of the train split).
        excluded: image_id -> phrase keys never drawn for that image (those present or named in it).
        max_phrases: at most this many negatives per caption (>= 1); the count is uniform in [1, max].
        rate: share of captions (in [0, 1]) that get negatives at all.
        seed: with (epoch, index) seeds each draw.
        hard_share: share (in [0, 1]) of each draw taken, while there are any, from *hard* negatives: absent
            names that share a word with a name the image holds ("red square" for an image with a red circle),
            so the loss must tell the other word apart (the tiny presets confuse shapes of the same colour);
            the rest are drawn from the whole vocabulary. 0 = uniform.
    """

    def __init__(self, vocabulary: Sequence[str], excluded: Mapping[str, set[str]], max_phrases: int,
                 rate: float = 1.0, seed: int = 0, hard_share: float = 0.0) -> None:
        if not isinstance(max_phrases, int) or max_phrases < 1:
            raise ValueError(f"max_phrases={max_phrases!r} must be an int >= 1")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate={rate!r} must be in [0, 1]")
        if not 0.0 <= hard_share <= 1.0:
            raise ValueError(f"hard_share={hard_share!r} must be in [0, 1]")
        self.vocabulary = list(vocabulary)
        self.keys = [phrase_key(v) for v in self.vocabulary]
        self.excluded = excluded
        self.max_phrases, self.rate, self.seed = max_phrases, float(rate), int(seed)
        self.hard_share = float(hard_share)
        self._words = [set(k.split()) for k in self.keys]

    def draw(self, image_id: str, index: int, epoch: int = 0, max_phrases: int | None = None,
             stream: int = 0) -> list[str]:
        """Negatives for sample ``index`` of the split in ``epoch``: 0..max_phrases distinct phrases whose
        key is not excluded for ``image_id``. Same arguments, same answer. ``max_phrases`` overrides the
        sampler's and skips the ``rate`` draw (class lists always get negatives); ``stream`` picks an
        independent random stream for the same sample."""
        rng = np.random.default_rng([self.seed, epoch, index, stream])
        if max_phrases is None and (not self.vocabulary or rng.random() >= self.rate):
            return []
        limit = self.max_phrases if max_phrases is None else max_phrases
        if not self.vocabulary or limit < 1:
            return []
        count = int(rng.integers(1, limit + 1))
        excluded = self.excluded.get(image_id, set())
        # A permutation walk: O(vocabulary) per draw, no rejection loop that could spin when most
        # names are present in the image.
        candidates = [i for i in rng.permutation(len(self.vocabulary)) if self.keys[i] not in excluded]
        if self.hard_share and excluded:
            present_words = set().union(*(k.split() for k in excluded))
            hard = [i for i in candidates if self._words[i] & present_words]
            num_hard = min(len(hard), int(rng.binomial(count, self.hard_share)))
            picked = set(hard[:num_hard])
            rest = [i for i in candidates if i not in picked]
            candidates = hard[:num_hard] + rest
        return [self.vocabulary[i] for i in candidates[:count]]


def sampler_for_records(records: Sequence[GroundingRecord], max_phrases: int, rate: float = 1.0,
                        seed: int = 0, hard_share: float = 0.0) -> NegativePhraseSampler:
    """A sampler drawing from the vocabulary of ``records`` (the whole training split, so an image's
    other captions are known even when a ``limit`` keeps only some of them)."""
    return NegativePhraseSampler(split_vocabulary(records), mentioned_keys(records), max_phrases, rate, seed,
                                 hard_share)


def append_negatives(caption: str, negatives: Sequence[str], keep_until: int = 0) -> tuple[str, list[dict]]:
    """``caption`` + ``" . neg1 . neg2"`` and each negative as {"text", "char_start", "char_end"} (end
    exclusive) in the new prompt. A trailing " ." of the caption after char ``keep_until`` (the end of its
    last phrase) is dropped so the prompt does not read "... . . neg1"; every char before stays where it was,
    so the caption's phrase spans stay valid. No negatives: the caption unchanged."""
    if not negatives:
        return caption, []
    prompt, spans = caption[:keep_until] + caption[keep_until:].rstrip(" .\t\n"), []
    for text in negatives:
        prompt += PHRASE_SEPARATOR
        spans.append({"text": text, "char_start": len(prompt), "char_end": len(prompt) + len(text)})
        prompt += text
    return prompt, spans


def as_class_list(item: dict, negatives: Sequence[str], display: Mapping[str, str], rng) -> dict:
    """A dataset item with its caption replaced by a detection-style class list: the names of its boxed
    objects (one per phrase key, display text from ``display``) and ``negatives``, shuffled by ``rng`` and
    joined with " . ". Every box keeps its targets: its spans point at its name in the new prompt; phrase
    dicts are re-pointed the same way. Returns a new item."""
    from ..processor import join_phrases

    caption = item["caption"]
    box_keys = [phrase_key(caption[spans[0][0]:spans[0][1]]) for spans in item["box_spans"]]
    names = list(dict.fromkeys(display.get(k, k) for k in box_keys))
    entries = names + [n for n in negatives if n not in names]
    order = [entries[i] for i in rng.permutation(len(entries))]
    prompt, spans = join_phrases(order)
    where = dict(zip(order, spans))
    new = dict(item)
    new["caption"] = prompt
    new["box_spans"] = [[where[display.get(k, k)]] for k in box_keys]
    phrases = []
    for p in item["phrases"]:
        name = display.get(phrase_key(p["text"]), phrase_key(p["text"]))
        if name in where:
            s, e = where[name]
            phrases.append(dict(p, text=name, char_start=s, char_end=e, spans=[(s, e)]))
    new["phrases"] = phrases
    new["negatives"] = [{"text": n, "char_start": where[n][0], "char_end": where[n][1]}
                        for n in order if n not in names]
    return new


class NegativePhraseDataset(Dataset):
    """Wraps a :class:`~ovd.data.dataset.GroundingDataset` (the train split): items are the wrapped items
    with negatives appended to ``"caption"`` and a ``"negatives"`` list of {"text", "char_start",
    "char_end"} (chars of the new caption). ``"boxes"``, ``"box_spans"`` and ``"phrases"`` are unchanged.

    Keys: an ``(index, epoch)`` pair from :class:`~ovd.data.datamodule.EpochTaggedSampler`, or a plain index (epoch 0).
    """

    def __init__(self, dataset, sampler: NegativePhraseSampler, class_list_rate: float = 0.0,
                 class_list_negatives: int = 0) -> None:
        if not 0.0 <= class_list_rate <= 1.0:
            raise ValueError(f"class_list_rate={class_list_rate!r} must be in [0, 1]")
        self.dataset, self.sampler = dataset, sampler
        self.class_list_rate, self.class_list_negatives = float(class_list_rate), int(class_list_negatives)
        self.display = dict(zip(sampler.keys, sampler.vocabulary))  # key -> the name the vocabulary prompts use

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item = self.dataset[index]
        if self.class_list_rate:
            rng = np.random.default_rng([self.sampler.seed, epoch, index, 1])
            if rng.random() < self.class_list_rate:
                negatives = self.sampler.draw(item["image_id"], index, epoch, self.class_list_negatives, stream=2)
                return as_class_list(item, negatives, self.display, rng)
        negatives = self.sampler.draw(item["image_id"], index, epoch)
        keep_until = max((end for spans in item["box_spans"] for _, end in spans), default=0)
        item["caption"], item["negatives"] = append_negatives(item["caption"], negatives, keep_until)
        return item

