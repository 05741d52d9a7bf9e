"""Records of the shipping stages: the export report and the bench record.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, field_serializer

from distill.errors import DistillError
from distill.records.base import Accuracy, Record, RelativeRecord, _Closed, _Open
from distill.records.names import BENCH_RECORDS, EXPORT_REPORT
from distill.records.run import RunSummary
from distill.utils.io import append_line, json_error


# ------------------------------------------------------------------ export report
class ExportedModel(_Open):
    """One file of an export: where it is, how it was checked, how accurate it is.

    Precision-specific details (``drops_pts``, the int8 fallback, notes) stay as extra keys.
    """

    file: str
    bytes: int
    sha256: str
    precision: str
    runtime: str
    parity: dict[str, Any] | None = None
    accuracy: Accuracy | None = None
    mean_accuracy: float | None = None

    @property
    def int8_flavour(self) -> str | None:
        """An int8 file's flavour (ort-cpu | tensorrt; export.json keeps it as the extra key ``flavour``); None for
        a float file."""
        flavour = (self.model_extra or {}).get("flavour") if self.precision == "int8" else None
        return str(flavour) if flavour else None


class ShipRecommendation(_Open):
    """What ``distill export`` recommends shipping, from what it measured (:mod:`distill.export.recommend`)."""

    precision: Literal["int8", "fp16", "fp32"]
    flavour: str | None = None  # the int8 flavour shipped (ort-cpu | tensorrt); None when no int8 ships
    reason: str
    # What int8 was measured at, whatever ships (an older export.json filled them for an int8 recommendation only): of
    # ``measured_flavour``, the shipped int8's, else the int8 timed on its target runtime (else the first exported)
    speedup_measured: bool  # True only when int8's latency vs fp32 was timed on its target runtime (faster or not)
    latency_ratio: float | None = None  # int8 / fp32 p50 on this CPU, when that is the target
    float_op_types: dict[str, int] = Field(default_factory=dict)  # op types the int8 model still runs in float
    measured_flavour: str | None = None  # the int8 flavour the three fields above are of; None: no int8 (or older)
    faster_families: list[str] = Field(default_factory=list)  # students measured to gain from int8 (RESULTS.md)

    def line(self) -> str:
        what = f"int8 ({self.flavour})" if self.precision == "int8" and self.flavour else self.precision
        return f"recommendation: ship {what} — {self.reason}"


class ExportReport(RelativeRecord):
    """``export.json``: the files an export wrote, their parity/accuracy, and provenance.

    A failed export writes what it had (``status="failed"``), so most blocks are optional.
    """

    FILE: ClassVar[str] = EXPORT_REPORT
    format: str
    created: str
    status: Literal["running", "ok", "failed"]
    checkpoint: str
    student: str
    class_names: list[str]
    input: dict[str, Any]
    preprocess: dict[str, Any]
    provenance: dict[str, Any] = Field(default_factory=dict)
    run_summary: RunSummary | None = None

    @field_serializer("run_summary", mode="wrap")
    def _summary_as_the_release_before_reads_it(self, value: RunSummary | None,
                                                 handler: SerializerFunctionWrapHandler) -> Any:
        """The run's summary without ``finished_at``: the release before reads run_summary as its RunSummary, which
        forbids unknown keys (a Jetson with a pinned wheel); the finish time orders runs, not exports."""
        out = handler(value)
        if isinstance(out, dict):
            out.pop("finished_at", None)
        return out

    config: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str | None] = Field(default_factory=dict)
    models: list[ExportedModel] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    data: dict[str, Any] | None = None
    exporter: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    tensorrt: dict[str, Any] | None = None
    recommendation: ShipRecommendation | None = None  # absent in exports before it existed
    files: list[str] = Field(default_factory=list)
    elapsed_s: float | None = None
    # ``checkpoint`` and ``provenance.run`` relative to the export folder, so that a tree of results copied or moved
    # whole still finds them (distill/report/locate.py): written in ``provenance["relative"]`` (an open dict, so
    # that an older distill reads the file); the top-level ``relative`` (RelativeRecord) in exports of the release before

    @property
    def int8_flavours(self) -> list[str]:
        """The flavours of the int8 files this export lists, in its order (``--int8-flavour both``: two)."""
        return list(dict.fromkeys(f for m in self.models if (f := m.int8_flavour)))

    @property
    def relative_paths(self) -> dict[str, str]:
        """``checkpoint`` and ``run`` relative to the export folder, from either layout; {} in older exports."""
        inside = self.provenance.get("relative")
        return self.relative or (dict(inside) if isinstance(inside, dict) else {})


# ------------------------------------------------------------------ bench record
def threads_label(threads: int | None, threads_used: int | None) -> str:
    """A threads cell of the report, of a bench record or an export's latency check: ``4`` (``--threads 4``),
    ``2 (default)`` (the runtime's default, as many as the run used), ``default`` (not known: written before
    ``threads_used``, or a count not read)."""
    if threads is not None:
        return str(threads)
    return f"{threads_used} (default)" if threads_used is not None else "default"


class LatencyStats(_Closed):
    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float


class EngineSource(_Open):
    """The ONNX file a TensorRT engine was built from, as the edge runner found it beside the engine (its export
    folder's export.json lists the engine): what ``distill report`` joins an engine's record to its export by."""

    onnx: str
    sha256: str


class BenchRecord(Record):
    """One line of ``bench.jsonl``: one model x runtime x batch measured on one device.

    Written by :mod:`distill.bench.edge_runner` (standalone: it cannot import distill, so it
    writes plain JSON that this record validates) and by the torch runner.
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True, protected_namespaces=())
    FILE: ClassVar[str] = BENCH_RECORDS
    schema_: str = Field(alias="schema")
    model: str  # the timed file: absolute (older records: as typed, relative to the folder bench ran in)
    model_name: str
    model_sha256: str | None = None
    model_meta: dict[str, Any] = Field(default_factory=dict)
    runtime: str
    batch: int
    input_shape: list[int]
    threads: int | None = None  # as asked (--threads); None: the runtime's default
    # the intra-op threads the run used, where known, and how that is known (edge_runner.ort_threads, the torch
    # runner); None in records written before them, and where the count could not be read (then the basis says so)
    threads_used: int | None = None
    threads_basis: str | None = None
    warmup: int
    iters: int
    latency_ms: LatencyStats
    throughput_ips: float
    memory: dict[str, Any] = Field(default_factory=dict)
    device: dict[str, Any] = Field(default_factory=dict)
    timestamp: str
    # ``model`` relative to the folder of the .jsonl it was written to (distill/report/locate.py); None in records
    # written before it, or printed rather than written
    model_relative: str | None = None
    # a TensorRT engine of an export: the ONNX file it was built from (edge_runner.engine_source); None otherwise, and
    # in records written before it
    engine_source: EngineSource | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def threads_label(self) -> str:
        """The report's threads cell: ``4`` (``--threads 4``), ``2 (default)`` (the runtime's default, as many as the
        run used), ``default`` (not known: a record written before ``threads_used``, or a count not read, which
        :attr:`threads_basis` then names)."""
        return threads_label(self.threads, self.threads_used)

    @classmethod
    def read_lines(cls, path: str | Path, skipped: list[tuple[int, str]] | None = None) -> Iterator[BenchRecord]:
        """Every record of a ``bench.jsonl`` (blank lines skipped); errors name file and line. With ``skipped``, a
        line that is not a record (half-written by an interrupted bench, edited, not UTF-8 text) is left out and its
        line number and error go there instead."""
        path = Path(path)
        for n, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:  # a binary file (any .jsonl is read), a corrupt line
                    raise DistillError(f"{path}:{n}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r})"
                                       ) from None
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DistillError(f"{path}:{n}: invalid JSON {json_error(e, lines=False)}") from None
                record = cls.from_dict(data, f"{path}:{n}")
            except DistillError as e:
                if skipped is None:
                    raise
                skipped.append((n, str(e)))
                continue
            yield record

    def append_to(self, path: str | Path) -> None:
        """Append this record as a line of the ``bench.jsonl`` at ``path``; after a cut-off last line, on a new line
        (:func:`~distill.utils.io.append_line`, the edge runner's rule: a warning only for a last line that is not JSON)."""
        append_line(path, json.dumps(self.to_dict()))
