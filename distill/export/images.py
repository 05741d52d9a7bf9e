"""Real images for parity, per-domain accuracy and int8 calibration, preprocessed like the student.

Images are kept as resized + center-cropped uint8 arrays ([N, H, W, 3], a quarter of the
memory of float32) and normalized batch by batch with exactly the arithmetic of torchvision's
``ToTensor`` + ``Normalize`` in float32, so ORT and PyTorch see the same tensor that
``Student.preprocess()`` would produce. An array over :data:`SPILL_BYTES` (``--eval-count 0`` on a large test
split) lives in an unlinked file on disk, memory-mapped (:func:`disk_backed`): the page cache holds what fits, and
the process's anonymous memory does not grow with the number of images (benchmarks/export_memory.py). The logits a
model gives on an :class:`ImageSet` follow the same rule, in the same folder (``ImageSet.spill_dir``).
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from distill.data.folder import DomainFolder, Sample
from distill.data.images import BadImageError, load_rgb
from distill.errors import DistillError
from distill.student.model import StudentSpec
from distill.student.transforms import crop_transform
from distill.utils.rowfile import reserve as _reserve  # the disk space first: a full disk is an error, not a SIGBUS


@dataclass
class ImageSet:
    """Preprocessed images with labels and domains.

    Attributes:
        images: [N, H, W, 3] uint8, resized and center-cropped.
        labels: [N] int64 class ids (meaningless for unlabeled calibration images).
        domains: [N] domain of each image.
        mean, std: per-channel normalization.
        skipped: paths of images that could not be decoded.
        spill_dir: where arrays over :data:`SPILL_BYTES` made for these images (pixels, logits) are memory-mapped
            from (None: the system's temp folder).
    """

    images: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    skipped: list[str]
    spill_dir: Path | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def domain_names(self) -> list[str]:
        """Domains in order of first appearance."""
        return list(dict.fromkeys(self.domains.tolist()))

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """[n, H, W, 3] uint8 -> [n, 3, H, W] float32, ``(x / 255 - mean) / std``."""
        x = images.astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((x - mean) / std)

    def batches(self, batch_size: int = 64) -> Iterator[np.ndarray]:
        """Normalized float32 batches [b, 3, H, W] in order."""
        for i in range(0, len(self), batch_size):
            yield self.normalize(self.images[i:i + batch_size])

    def subset(self, mask: np.ndarray) -> ImageSet:
        return ImageSet(self.images[mask], self.labels[mask], self.domains[mask], self.mean, self.std, [], self.spill_dir)


def pick(samples: Sequence[Sample], count: int | None, seed: int = 0) -> list[Sample]:
    """A deterministic random subset of at most ``count`` samples (all when None), in index order."""
    if count is None or count >= len(samples):
        return list(samples)
    rng = random.Random(seed)
    return sorted(rng.sample(samples, count), key=lambda s: s.index)


def pick_per_domain(folder: DomainFolder, domains: Iterable[str], split: str, count: int | None,
                    seed: int = 0) -> list[Sample]:
    """Up to ``count`` samples of ``split`` from each domain (all when None)."""
    out: list[Sample] = []
    for d in folder.check_domains(domains):
        out.extend(pick(folder.select([d], split), count, seed))
    return out


SPILL_BYTES = 256 << 20  # a pixel array larger than this is memory-mapped from disk (:func:`pixel_array`)
PROGRESS_EVERY = 5000  # load_images reports progress for this many images or more, about every tenth


def pixel_array(count: int, h: int, w: int, spill_dir: str | Path | None = None) -> np.ndarray:
    """An uninitialized [count, h, w, 3] uint8 array (:func:`disk_backed`)."""
    return disk_backed((count, h, w, 3), np.uint8, spill_dir, f"{count:,} images' pixels")


def disk_backed(shape: tuple[int, ...], dtype: type | np.dtype, spill_dir: str | Path | None, what: str) -> np.ndarray:
    """An uninitialized array: in RAM up to :data:`SPILL_BYTES`, else a memory map of an unlinked, preallocated
    temporary file in ``spill_dir`` (made if missing; default: the system's temp folder, which may be tmpfs, i.e.
    RAM), gone when the array is. ``what`` names the contents in the error when the disk has no room."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= SPILL_BYTES:
        return np.empty(shape, dtype)
    where = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
    try:
        where.mkdir(parents=True, exist_ok=True)  # made only when needed: bad input earlier leaves no folder
        with tempfile.TemporaryFile(dir=where, prefix="distill-spill-") as f:  # mmap keeps its own descriptor
            _reserve(f, nbytes)
            return np.memmap(f, dtype=dtype, mode="r+", shape=shape)
    except OSError as e:
        raise DistillError(f"{where}: cannot hold {what} ({nbytes / 1e9:.1f} GB) there: "
                           f"{e.strerror}; free space there or read fewer images (--eval-count, --calib-count)") from e


def load_images(folder: DomainFolder, samples: list[Sample], spec: StudentSpec,
                spill_dir: str | Path | None = None, log: Callable[[str], None] | None = None) -> ImageSet:
    """Decode and preprocess ``samples`` into one array (:func:`pixel_array`: on disk when large);
    undecodable images are skipped and listed. ``log``: progress lines for :data:`PROGRESS_EVERY` images or more."""
    crop = crop_transform(spec)
    h, w = spec.input_size
    pixels = pixel_array(len(samples), h, w, spill_dir)
    labels: list[int] = []
    domains: list[str] = []
    skipped: list[str] = []
    step = max(1, len(samples) // 10)
    show = log if len(samples) >= PROGRESS_EVERY else None  # progress lines, for many images only
    for i, s in enumerate(samples):
        if show is not None and i and i % step == 0:
            show(f"  read {i:,} of {len(samples):,} images")
        try:
            img = load_rgb(folder.path(s))
        except BadImageError as e:
            skipped.append(e.path)
            continue
        pixels[len(labels)] = np.asarray(crop(img), dtype=np.uint8)
        labels.append(s.label)
        domains.append(s.domain)
    if show is not None:
        show(f"  decoded {len(labels):,} of {len(samples):,} images")
    return ImageSet(pixels[:len(labels)], np.asarray(labels, dtype=np.int64), np.asarray(domains, dtype=object),
                    _rgb(spec.mean), _rgb(spec.std), skipped, None if spill_dir is None else Path(spill_dir))


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    """Per-channel values as a 3-tuple (a spec read from JSON may hold a list)."""
    r, g, b = values
    return (r, g, b)


def random_images(spec: StudentSpec, count: int, seed: int = 0) -> ImageSet:
    """Uniform-noise images, for parity checks when no dataset is given."""
    rng = np.random.default_rng(seed)
    h, w = spec.input_size
    imgs = rng.integers(0, 256, size=(count, h, w, 3), dtype=np.uint8)
    return ImageSet(imgs, np.full(count, -1, np.int64), np.asarray(["random"] * count, dtype=object),
                    _rgb(spec.mean), _rgb(spec.std), [])


class ImageCalibrationReader(CalibrationDataReader):
    """onnxruntime calibration reader: normalized batches of an :class:`ImageSet`."""

    def __init__(self, images: ImageSet, input_name: str, batch_size: int = 16):
        self.images, self.input_name, self.batch_size = images, input_name, batch_size
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = self.images.batches(self.batch_size)

    def __len__(self) -> int:
        return (len(self.images) + self.batch_size - 1) // self.batch_size
