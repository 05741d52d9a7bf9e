"""The split rule: which images are ``train``, ``val``, ``test`` or the teacher's ``pretrain`` pool, and their class names.

One object, :class:`SplitRule` (class-name map, test / val / pretrain fraction, split seed), is
passed whole from the configs and the CLI to :class:`~distill.data.folder.DomainFolder`, and a
teacher cache records it. :class:`SplitKeys` declares its keys once for the configs that spell them
out (``data.*`` of a recipe, :class:`~distill.export.config.ExportConfig`): a key left unset (None)
is taken from what the stage reads first (a run: its cache; an export: its training run), else the
default here.

The rule itself: an image is in ``test`` when a hash of ``seed:DOMAIN/CLASS/file`` falls below
``test_fraction``; ``val`` is the next ``val_fraction`` of the train share; ``pretrain`` is carved
from the top of the same hash (:func:`split_of`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.errors import DistillError
from distill.records import DATA_CLASS_MAP
from distill.validation import Checked

SPLIT_KEYS = ("class_map", "test_fraction", "split_seed", "val_fraction", "pretrain_fraction")


def check_split_rule(test_fraction: float, val_fraction: float, pretrain_fraction: float) -> None:
    """Refuse fractions that leave no ``train`` split (one line naming the values)."""
    for name, value in (("test_fraction", test_fraction), ("val_fraction", val_fraction),
                        ("pretrain_fraction", pretrain_fraction)):
        if not 0.0 <= value < 1.0:
            raise DistillError(f"{name} must be in [0, 1), got {value}")
    used = test_fraction + val_fraction * (1.0 - test_fraction) + pretrain_fraction
    if pretrain_fraction > 0 and used >= 1.0:
        raise DistillError(f"test_fraction {test_fraction} + val_fraction {val_fraction} of the rest + pretrain_fraction "
                           f"{pretrain_fraction} = {used:g} of each domain leaves no train split; lower one of them")


def split_of(relpath: str, test_fraction: float, seed: int = 0, val_fraction: float = 0.1,
             pretrain_fraction: float = 0.0) -> str:
    """Deterministic split for one image from a hash of its relative path.

    ``u`` uniform in [0, 1) from the hash: ``test`` below ``test_fraction``, ``val`` in the next
    ``val_fraction * (1 - test_fraction)``, ``pretrain`` at or above ``1 - pretrain_fraction``
    (carved from the top, so test and val do not depend on it), else ``train``.
    """
    h = hashlib.sha1(f"{seed}:{relpath}".encode()).digest()
    u = int.from_bytes(h[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction * (1.0 - test_fraction):
        return "val"
    return "pretrain" if pretrain_fraction > 0 and u >= 1.0 - pretrain_fraction else "train"


def _path_str(v: Any) -> Any:
    return str(v) if isinstance(v, Path) else v


class SplitRule(BaseModel):
    """The whole split rule; every key has its value (defaults: 30% test, 10% of the rest val, no pool, seed 0).

    ``class_map``: a ``folder -> class name`` YAML/JSON file (None: ``ROOT/classnames.yaml`` if present,
    else the folder names), or the mapping itself.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    class_map: str | dict[str, str] | None = None
    test_fraction: float = 0.3
    split_seed: int = 0
    val_fraction: float = 0.1  # share of each domain's non-test images held out for model selection
    # share of each domain (same path hash, carved from the top) that only the stand-in teacher pretrains on
    pretrain_fraction: float = 0.0

    _paths = field_validator("class_map", mode="before")(_path_str)

    @model_validator(mode="after")
    def _leaves_a_train_split(self) -> SplitRule:
        try:
            check_split_rule(self.test_fraction, self.val_fraction, self.pretrain_fraction)
        except DistillError as e:
            raise ValueError(str(e)) from None
        return self

    @classmethod
    def of(cls, where: str = "split rule", **values: Any) -> SplitRule:
        """A rule from keyword values; a bad value is one DistillError naming ``where`` and the key."""
        try:
            return cls(**values)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            raise DistillError(f"{where}: {key + ': ' if key else ''}{msg}") from None

    @classmethod
    def from_cache(cls, dataset: Any) -> dict[str, Any]:
        """The keys a teacher cache recorded (its manifest's ``dataset``, a :class:`~distill.records.CacheDataset`).

        A class map is taken only when its file is still there and is not ``ROOT/classnames.yaml`` (which
        the run finds by itself); ``val_fraction`` only when the manifest wrote it (older caches did not).
        """
        keys: dict[str, Any] = {"test_fraction": dataset.test_fraction, "split_seed": dataset.split_seed,
                                "pretrain_fraction": dataset.pretrain_fraction}
        if "val_fraction" in dataset.model_fields_set:
            keys["val_fraction"] = dataset.val_fraction
        class_map = Path(dataset.class_map) if dataset.class_map else None
        found = dataset.root is not None and (Path(dataset.root) / DATA_CLASS_MAP).resolve()
        if class_map is not None and class_map.is_file() and class_map.resolve() != found:
            keys["class_map"] = dataset.class_map
        return keys


class SplitKeys(Checked):
    """The split rule's keys as a config spells them (``data.test_fraction`` ...); None: unset.

    Declared here once; :meth:`split_rule` fills the unset ones from ``base`` (what the stage read
    first), then from :class:`SplitRule`'s defaults.
    """

    model_config = ConfigDict(extra="forbid")  # a user constructs it: SplitKeys(test_fracton=0.2) is refused

    class_map: str | None = None  # folder -> class name map (default ROOT/classnames.yaml)
    test_fraction: float | None = Field(None, ge=0.0, lt=1.0)
    split_seed: int | None = None
    val_fraction: float | None = Field(None, ge=0.0, lt=1.0)  # share of train held out for model selection
    # share of each domain (same path hash, carved from the top) that only the stand-in teacher pretrains on
    pretrain_fraction: float | None = Field(None, ge=0.0, lt=1.0)

    _split_paths = field_validator("class_map", mode="before")(_path_str)

    def split_keys(self) -> dict[str, Any]:
        """The keys this config sets."""
        return {k: getattr(self, k) for k in SPLIT_KEYS if getattr(self, k) is not None}

    def split_rule(self, base: Mapping[str, Any] | None = None, where: str = "data") -> SplitRule:
        """The whole rule: the keys set here, else ``base``'s, else the defaults."""
        return SplitRule.of(where, **{**dict(base or {}), **self.split_keys()})
