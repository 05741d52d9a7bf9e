"""``distill teacher bootstrap`` as a Python function (:func:`distill.api.bootstrap_teacher`), which the command
calls too (``distill/cli/teacher.py``, its messages naming the flags: :mod:`distill.spelling`): the same options and
defaults, the flags as keywords (``-`` as ``_``), returning the typed ``teacher.json``. Nothing heavy is imported
until it runs (torch, open_clip)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from distill.errors import DistillError
from distill.spelling import option
from distill.teacher.bootstrap.presets import BOOTSTRAP_POOL, DEMO_ARCH
from distill.validation import checked_keywords

if TYPE_CHECKING:
    from distill.records import TeacherManifest


@checked_keywords(paths=("data", "out", "class_map"))
def bootstrap_teacher(data: str | Path, out: str | Path, *, pretrain_fraction: float = BOOTSTRAP_POOL,
                      arch: str = DEMO_ARCH, epochs: int | None = None, batch_size: int | None = None,
                      lr: float | None = None, max_per_domain: int | None = None, quick: bool = False,
                      class_map: str | Path | None = None, seed: int = 0, skip_bad: bool = False,
                      device: str = "cpu", threads: int | None = None, progress: bool = True) -> TeacherManifest:
    """Train the offline stand-in teacher: a small open_clip CLIP on the pretraining pool of ``data``
    (``distill teacher bootstrap --data DATA --out OUT``; its ``--help`` has the presets). A killed run resumes
    from its last saved epoch (each printed one, at least every minute) when called again; a finished one with the
    same parameters returns at once.

    Args:
        data: dataset root laid out as ``DATA/DOMAIN/CLASS/image``.
        out: folder for ``open_clip_model.safetensors`` and ``teacher.json``.
        pretrain_fraction: share of each domain kept as the teacher's pool, never a student's (> 0).
        epochs, batch_size, lr, max_per_domain: the preset's when None (``max_per_domain=0``: all pool images).
        quick: the seconds-long preset for smoke tests (a near-chance teacher).
        class_map, seed, skip_bad, device: as the flags of the same names.
        threads: torch CPU threads while it runs (None: torch's choice); put back after it.
        progress: the progress bars on stderr (``--no-progress``: False).

    Returns:
        The :class:`~distill.records.TeacherManifest` written to ``out/teacher.json``; the checkpoint to give a
        cache build as ``pretrained`` is ``Path(out) / manifest.checkpoint``, its arch ``manifest.arch``.
    """
    from distill.data.folder import DomainFolder  # lazy: torch and open_clip load only when it runs
    from distill.data.split import SplitRule
    from distill.records import TeacherManifest
    from distill.teacher.bootstrap.presets import BootstrapSettings
    from distill.teacher.bootstrap.train import bootstrap_teacher as run_bootstrap  # lazy: open_clip
    from distill.utils.runtime import preserved_global_state, resolve_device, torch_threads  # lazy: torch

    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise DistillError(f"{option('threads')} must be an int >= 1, got {threads!r:.80}")
    ds = DomainFolder(data, SplitRule.of(option("bootstrap_teacher"), class_map=None if class_map is None else str(class_map),
                                       pretrain_fraction=pretrain_fraction),
                      skip_bad=skip_bad)
    settings = BootstrapSettings(arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, max_per_domain=max_per_domain,
                                 seed=seed)
    with torch_threads(threads), preserved_global_state():
        checkpoint = run_bootstrap(ds, out, settings, quick=quick, skip_bad=skip_bad,
                                   device=str(resolve_device(device, what=option("device"))), progress=progress)
    return TeacherManifest.read(checkpoint.parent)
