"""``GroundingDataModule``: readers + dataset + collator behind Lightning's interface."""

from __future__ import annotations

import itertools
from pathlib import Path

import lightning
import torch
from torch.utils.data import DataLoader

from .collate import GroundingCollator
from .dataset import GroundingDataset
from .negatives import NegativePhraseDataset, sampler_for_records
from .readers import FORMATS, load_records


class GroundingDataModule(lightning.LightningDataModule):
    """Train/val/test loaders over one data root (``format``: "flickr30k" or "mdetr").

    Any other split of the root (e.g. "novel") is available through ``dataloader_for``.
    ``limit`` keeps the first ``limit`` records of each split (quick runs). The train
    loader shuffles with a generator seeded by ``seed``, so runs are repeatable.
    ``negative_phrases`` > 0: each train caption gets up to that many absent object names appended
    (a share ``negative_rate`` of them; see :mod:`ovd.data.negatives`), drawn from the vocabulary of
    the whole train split, seeded by (seed, epoch, index); val/test/other splits never get any.
    ``hard_negative_share`` of each draw comes from names sharing a word with an object of the image.
    Batches are described in ``GroundingCollator``.
    """

    def __init__(
        self,
        root: str | Path,
        tokenizer,
        format: str = "flickr30k",
        max_tokens: int = 64,
        image_size: int = 224,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test",
        limit: int | None = None,
        seed: int = 0,
        image_dir: str | Path | None = None,
        negative_phrases: int = 0,
        negative_rate: float = 1.0,
        class_list_rate: float = 0.0,
        class_list_negatives: int = 0,
        hard_negative_share: float = 0.0,
    ) -> None:
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"format={format!r}; choose one of {list(FORMATS)}")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers=True needs num_workers > 0")
        if not isinstance(negative_phrases, int) or negative_phrases < 0:
            raise ValueError(f"negative_phrases={negative_phrases!r} must be an int >= 0 (0 = off)")
        if not 0.0 <= negative_rate <= 1.0:
            raise ValueError(f"negative_rate={negative_rate!r} must be in [0, 1]")
        self.root, self.format, self.image_dir = Path(root), format, image_dir
        self.image_size, self.batch_size = image_size, batch_size
        self.num_workers, self.pin_memory, self.persistent_workers = num_workers, pin_memory, persistent_workers
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.limit, self.seed = limit, seed
        self.negative_phrases, self.negative_rate = negative_phrases, float(negative_rate)
        self.class_list_rate, self.class_list_negatives = float(class_list_rate), int(class_list_negatives)
        self.hard_negative_share = float(hard_negative_share)
        self._negative_samplers: dict = {}
        self.collator = GroundingCollator(tokenizer, max_tokens)
        self.datasets: dict[str, GroundingDataset] = {}

    def dataset(self, split: str) -> GroundingDataset:
        """The dataset of a split by its name in the root (built once, then cached)."""
        if split not in self.datasets:
            records = load_records(self.root, self.format, split, image_dir=self.image_dir)
            if split == self.splits["train"] and (self.negative_phrases or self.class_list_rate):
                # Before ``limit``: an image's captions beyond the limit still mark their objects present.
                self._negative_samplers[split] = sampler_for_records(
                    records, max(self.negative_phrases, 1), self.negative_rate if self.negative_phrases else 0.0,
                    self.seed, self.hard_negative_share)
            if self.limit is not None:
                records = records[: self.limit]
            self.datasets[split] = GroundingDataset(records, image_size=self.image_size, split=split)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, ("train", "val", "test"))
        for role in wanted:
            self.dataset(self.splits[role])

    def dataloader_for(self, split: str, shuffle: bool = False, negatives: bool = False) -> DataLoader:
        """Loader of a split; ``negatives`` appends absent phrases (train split only, when configured)."""
        dataset = self.dataset(split)
        sampler = EpochSeededSampler(len(dataset), self.seed) if shuffle else None
        negative_sampler = self._negative_samplers.get(split) if negatives else None
        if negative_sampler is not None:
            # The epoch rides along with each index (a persistent worker holds its own dataset copy).
            dataset = NegativePhraseDataset(dataset, negative_sampler, self.class_list_rate,
                                            self.class_list_negatives)
            sampler = EpochTaggedSampler(len(dataset), self.seed) if shuffle else None
        # The shuffled (train) loader resumes mid-epoch, and draws its workers' base seed from its own generator:
        # from torch's global RNG, that draw would shift stochastic depth's stream in a resumed run, whose loader
        # starts a pass at a point where the uninterrupted run's did not.
        extra = {"generator": torch.Generator().manual_seed(self.seed)} if shuffle else {}
        return (ResumableDataLoader if shuffle else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=self.collator,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        return self.dataloader_for(self.splits["train"], shuffle=True, negatives=True)

    def val_dataloader(self) -> DataLoader:
        return self.dataloader_for(self.splits["val"])

    def test_dataloader(self) -> DataLoader:
        return self.dataloader_for(self.splits["test"])


class ResumableDataLoader(DataLoader):
    """The train loader, resumable mid-epoch: Lightning stores its ``state_dict()`` (the sampler's epoch and the
    batches handed out in this pass) in every checkpoint and calls ``load_state_dict()`` before iterating on a
    resume. The first pass after that skips those batches by index (nothing is loaded for them), so a run resumed
    from a mid-epoch checkpoint trains on the rest of that epoch's order (seeded by (seed, epoch)), as the
    uninterrupted run did, instead of starting the epoch's order over. The length stays the full epoch's, which
    Lightning's own batch count of the resumed epoch expects."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._served = 0  # batches handed out in the current pass
        self._skip = 0  # batches the next pass leaves out (set by load_state_dict)

    @property
    def _index_sampler(self):
        return _SkipFirstBatches(super()._index_sampler, self)

    def __iter__(self):
        self._served = self._skip  # the pass skips them (its index iterator takes _skip at its first batch)
        return self._count(super().__iter__())

    def _count(self, batches):
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": getattr(self.sampler, "epoch", 0), "batches": self._served}

    def load_state_dict(self, state: dict) -> None:
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        if batches >= len(self):  # saved at the end of an epoch: the next one starts from its beginning
            epoch, batches = epoch + 1, 0
        if hasattr(self.sampler, "set_epoch"):  # before worker processes draw their first indices
            self.sampler.set_epoch(epoch)
        self._skip = batches


class _SkipFirstBatches:
    """A loader's index sampler whose next pass leaves out the loader's pending ``_skip`` batches (once)."""

    def __init__(self, batches, loader: ResumableDataLoader) -> None:
        self.batches, self.loader = batches, loader

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        # A generator: the skip is taken at the first index drawn, not when iter() is called (a worker-process
        # iterator calls it twice as it starts, and a single-process one before Lightning sets the epoch).
        skip, self.loader._skip = self.loader._skip, 0
        yield from itertools.islice(self.batches, skip, None)


class EpochSeededSampler(torch.utils.data.Sampler):
    """Shuffles with a permutation seeded by (seed, epoch). Lightning calls ``set_epoch`` on
    samplers that have it, so a run resumed at an epoch boundary sees exactly the order the
    uninterrupted run would have seen (a once-seeded generator would restart at epoch 0's order)."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())



class EpochTaggedSampler(EpochSeededSampler):
    """The same order as :class:`EpochSeededSampler`, yielding ``(index, epoch)`` pairs, so a dataset in a
    (persistent) worker process knows the epoch without shared state
    (:class:`~ovd.data.negatives.NegativePhraseDataset` seeds its draw with it)."""

    def __iter__(self):
        epoch = self.epoch
        return ((index, epoch) for index in super().__iter__())
