"""Dataset normalisation: every source (scikit-learn digits, Fashion-MNIST IDX files, CIFAR-10
pickle batches, an ImageFolder tree, Visual Wake Words from COCO) becomes the same on-disk
layout under ``results/data/{name}/``:

``{split}_x.npy``      uint8 NHWC at ``dataset.resolution`` x ``resolution`` x ``channels``
                       (memory-mappable), split in ``train``/``val``/``test``
``{split}_y.npy``      int64 labels
``manifest.parquet``   split, index (row in the split arrays), label, class_name, source, source_id
``stats.parquet``      channel, mean, std on the [0, 1] scale, computed on the train split
``classes.parquet``    split, label, class_name, images (kept), skipped (unreadable images skipped
                       with ``dataset.skip_corrupt``; a class left without images is an error)

Other stages only use :func:`load_split`, :func:`load_stats` and :func:`to_tensor`; the rule
calls :func:`prepare`. Importing this package is cheap (numpy only): torch, torchvision, PIL,
scikit-learn and pandas are imported inside the functions that need them.
"""

from __future__ import annotations

from typing import Any

from tinyevo.data.errors import DataError
from tinyevo.data.store import SPLITS, load_split, load_stats, normalised_nhwc, output_names, to_tensor

__all__ = ["DataError", "SPLITS", "load_split", "load_stats", "normalised_nhwc", "to_tensor", "output_names",
           "prepare"]


def prepare(cfg_dataset: dict, out_dir, threads: int = 1, log: Any = None) -> dict:
    """Build the normalised dataset described by the ``dataset`` config section in ``out_dir``.

    Returns a summary dict (name, source, resolution, channels, classes, sizes, skipped,
    skipped_per_class, mean, std). Raises :class:`DataError` for bad input; never leaves a
    half-written output.
    """
    from tinyevo.data.pipeline import prepare as _prepare

    return _prepare(cfg_dataset, out_dir, threads=threads, log=log)
