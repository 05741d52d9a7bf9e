"""The one resumable, distributed shard writer behind the cache, its adversarial views and its pixel stores.

Every artifact of a cache directory is built the same way, and this module is that way:

1. **Plan first.** Rank 0 compares the folder with the plan (a typed record of everything that
   determines the bytes, :class:`BuildPlan`): a complete artifact with the same plan means
   "done", another plan (complete or not) is refused naming the differing fields, else
   ``build.json`` is written. A ``build.json`` found is read through the plan's own type: one
   that type does not read is refused in one line with the rebuild command.
2. **Shards atomically.** Shard ``k`` goes to ``shard-0000k.safetensors`` through a temp file
   and a rename, so a killed build leaves only whole shards; a rerun skips the shards on disk
   (:meth:`ResumableShards.pending`), and under torchrun rank ``r`` owns ``k % world == r``.
3. **Manifest last.** After a barrier rank 0 lists every shard (rows, size, sha256, skipped
   images from its metadata, so images skipped by an interrupted run are kept) and writes the
   manifest, whose presence marks the artifact complete.

:meth:`ResumableShards.build` is that skeleton; each artifact brings only what differs: its plan,
how it words a refusal, a generator of its pending shards' tensors (the cache: DataLoader +
teacher; the adversarial views: PGD; a pixel store: decode + resize) and its manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, TypeVar

import torch.distributed as dist
from torch import Tensor

from distill.errors import DistillError
from distill.records import CACHE_BUILD_PLAN, CACHE_MANIFEST
from distill.teacher.cache.format import read_shard_skipped, save_shard, shard_name, shard_rows
from distill.teacher.cache.identity import identity_diffs
from distill.teacher.cache.mapped import record_verified
from distill.utils.io import atomic_write_json, check_out_dir, make_out_dir, read_json, sha256_files
from distill.utils.runtime import Dist, barrier

_T = TypeVar("_T")


def _broadcast(obj: _T, world: int) -> _T:
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def prepare_on_rank0(prepare: Callable[[], str], rank: int, world: int) -> str:
    """Run ``prepare()`` (-> a status string) on rank 0 only and give every rank its answer.

    A :class:`DistillError` there is re-raised on every rank, so all ranks stop with the same
    one-line message instead of the others waiting at the next collective.
    """
    status: tuple[str, str] | None = None
    if rank == 0:
        try:
            status = (prepare(), "")
        except DistillError as e:
            status = ("error", str(e))
    status = _broadcast(status, world)
    assert status is not None  # set on rank 0, received by the others
    if status[0] == "error":
        raise DistillError(status[1])
    return status[0]


class BuildPlan(Protocol):
    """A plan record (:class:`~distill.records.CacheBuildPlan`, :class:`~distill.records.AdversarialPlan`,
    :class:`~distill.teacher.cache.pixels.PixelPlan`): written as ``build.json``, read back through its type."""

    @property
    def num_shards(self) -> int: ...

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: Any, source: str | Path | None = None) -> Any:
        """Validate a plan read from ``source``; a mismatch is a one-line DistillError."""
        ...


@dataclass(frozen=True)
class PlanRefusals:
    """How an artifact words a folder that holds another plan (``str.format`` templates).

    Fields: ``{file}`` (the manifest or ``build.json`` found), ``{diffs}`` (``"; "``-joined
    differing fields, found vs this run) and ``{out}`` (the folder).
    """

    complete: str  # a complete artifact with another plan
    unfinished: str  # an unfinished build with another plan
    not_empty: str | None = None  # a non-empty folder that holds neither (None: allowed)


#: One shard a builder made: (k, its tensors, its safetensors metadata or None).
Shard = tuple[int, Mapping[str, Tensor], dict[str, str] | None]


@dataclass(frozen=True)
class ShardFile:
    """One finished shard, as the manifest lists it."""

    file: str
    rows: int
    bytes: int
    sha256: str
    skipped: list[dict]


def _read_plan(kind: type[BuildPlan], path: Path, template: str, out: Path) -> dict[str, Any]:
    """A ``build.json`` read through its plan type (as a dict of the keys it holds); one it does not read
    is refused with ``template`` (the artifact's "another plan is here ...; how to rebuild" line)."""
    try:
        return kind.from_dict(read_json(path), path).to_dict()
    except DistillError as e:
        why = str(e).removeprefix(f"{path}: ")
        raise DistillError(template.format(file=path, diffs=f"not a plan this distill reads: {why}", out=out)) \
            from None


class ResumableShards:
    """The shards of one artifact folder, written by this rank and resumed after a kill.

    Args:
        out: the artifact's folder (``CACHE``, ``CACHE/adversarial``, ``CACHE/pixels-...``).
        rank, world: this process and the number of processes (one process: 0, 1).
    """

    def __init__(self, out: Path, rank: int = 0, world: int = 1):
        self.out, self.rank, self.world = Path(out), rank, world

    def path(self, k: int) -> Path:
        return self.out / shard_name(k)

    def prepare(self, plan: BuildPlan, refusals: PlanRefusals) -> bool:
        """Rank 0 checks the folder against ``plan`` (and writes ``build.json``); True on every rank
        when the artifact is already complete with this plan.

        Raises:
            DistillError: the folder holds another plan, or a ``build.json`` the plan's type does not
                read, or (with ``refusals.not_empty``) is not empty and holds no build; on every rank.
        """
        return prepare_on_rank0(lambda: self._prepare(plan, refusals), self.rank, self.world) == "done"

    def _prepare(self, plan: BuildPlan, refusals: PlanRefusals) -> str:
        out, want = check_out_dir(self.out), plan.to_dict()
        for name, template in ((CACHE_MANIFEST, refusals.complete), (CACHE_BUILD_PLAN, refusals.unfinished)):
            if (out / name).exists():
                diffs = identity_diffs(read_json(out / name) if name == CACHE_MANIFEST
                                       else _read_plan(type(plan), out / name, template, out), want)
                if diffs:
                    raise DistillError(template.format(file=out / name, diffs="; ".join(diffs), out=out))
                if name == CACHE_MANIFEST:
                    return "done"
                break
        else:
            if refusals.not_empty and out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
                raise DistillError(refusals.not_empty.format(out=out))
        make_out_dir(out)
        for tmp in out.glob(".*.tmp"):  # leftovers of a killed atomic write
            tmp.unlink(missing_ok=True)
        atomic_write_json(out / CACHE_BUILD_PLAN, want)
        return "build"

    def build(self, plan: BuildPlan, refusals: PlanRefusals, make: Callable[[list[int]], Iterable[Shard]],
              manifest: Callable[[list[ShardFile]], Mapping], missing: str) -> bool:
        """The skeleton: plan first, this rank's pending shards written as ``make`` yields them, a barrier,
        then on rank 0 the manifest made from every shard (hashed) by ``manifest``.

        Args:
            plan, refusals: as :meth:`prepare`.
            make: this rank's pending shard numbers -> (k, tensors, metadata) per shard, in any order (a
                generator resumes after each shard is on disk).
            manifest: every shard of the artifact (rank 0) -> the manifest to write.
            missing: as :meth:`finished`.

        Returns:
            True when the artifact was already complete with this plan (nothing written).
        """
        if self.prepare(plan, refusals):
            return True
        made = iter(make(self.pending(plan.num_shards)))
        try:
            for k, tensors, metadata in made:
                self.write(k, tensors, metadata)
        finally:  # a generator stopped by an error leaves its context managers (inference mode ...) now, not at GC
            getattr(made, "close", lambda: None)()
        self.barrier()
        if self.rank == 0:
            self.write_manifest(manifest(self.finished(plan.num_shards, missing)))
        return False

    def pending(self, num_shards: int) -> list[int]:
        """This rank's shards (``k % world == rank``) that are not on disk yet, in order."""
        return [k for k in range(num_shards) if k % self.world == self.rank and not self.path(k).exists()]

    def write(self, k: int, tensors: Mapping[str, Tensor], metadata: dict[str, str] | None = None) -> None:
        """Write shard ``k`` atomically."""
        save_shard(self.path(k), tensors, metadata)

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        barrier(Dist(self.rank, self.world))

    def finished(self, num_shards: int, missing: str) -> list[ShardFile]:
        """Every shard of the artifact, after all ranks wrote theirs (rank 0, before the manifest).

        Raises:
            DistillError: a shard is missing; ``missing`` formats ``{path}`` into the message.
        """
        paths = [self.path(k) for k in range(num_shards)]
        for path in paths:
            if not path.exists():
                raise DistillError(missing.format(path=path))
        files = [ShardFile(path.name, shard_rows(path), path.stat().st_size, digest, read_shard_skipped(path))
                 for path, digest in zip(paths, sha256_files(paths))]  # hashed by a thread pool
        record_verified(self.out, [(f.file, f.sha256) for f in files])  # hashed just now: opening reads none again
        return files

    def write_manifest(self, manifest: Mapping) -> None:
        """Write the manifest (the completion mark) atomically."""
        atomic_write_json(self.out / CACHE_MANIFEST, dict(manifest))
