"""Data layer: readers (Flickr30k Entities layout, MDETR json), a synthetic dataset in the
Flickr layout, the grounding dataset with its skip policy, batching and the data module.

Box formats: readers give pixel xyxy (0-based) in the original image; dataset items and
batches give normalized cxcywh in [0, 1].
"""

from .collate import GroundingCollator
from .dataset import GroundingDataset
from .errors import DataError
from .flickr30k import load_flickr30k, parse_sentence
from .images import load_image
from .mdetr import load_mdetr
from .positive_map import build_positive_map, phrase_token_mask
from .readers import load_records
from .records import BoxAnnotation, GroundingRecord, Phrase
from .synthetic import default_synthetic_root, ensure_synthetic_dataset, write_synthetic_dataset

__all__ = [
    "BoxAnnotation",
    "DataError",
    "GroundingCollator",
    "GroundingDataset",
    "GroundingRecord",
    "Phrase",
    "build_positive_map",
    "default_synthetic_root",
    "ensure_synthetic_dataset",
    "load_flickr30k",
    "load_image",
    "load_mdetr",
    "load_records",
    "parse_sentence",
    "phrase_token_mask",
    "write_synthetic_dataset",
]
