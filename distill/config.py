"""Typed, validated configs. Loaded and checked once at the CLI; below it, only objects flow.

``load_train_config(path, overrides)`` reads YAML, applies ``--set a.b=value`` overrides
(values parsed as YAML: ``--set optim.lr=3e-4``, ``--set data.target=[mnist_m]``), and
validates with pydantic. Any unknown key, wrong type or bad value is one line naming it.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.data.split import SplitKeys, SplitRule, check_split_rule
from distill.errors import DistillError
from distill.validation import Checked, first_error, format_validation_error


class _Strict(Checked):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _listify(v: Any) -> Any:
    """A lone string where a list is meant is the one-element list (``--set data.source=clean``)."""
    return [v] if isinstance(v, str) else v


def _split_domains(v: Any) -> Any:
    """Domain names as ``distill adapt --target`` and the export's domain keys take them: ``"a,b"``, ``["a", "b"]``
    and ``["a,b"]`` all give ``["a", "b"]`` (``--set data.source=clean,inv`` is two domains, not one)."""
    items = _listify(v)
    if not isinstance(items, list):
        return items  # None, or a wrong type the field's check names
    return [p.strip() for item in items for p in (item.split(",") if isinstance(item, str) else [item])
            if not isinstance(p, str) or p.strip()]


class DataConfig(SplitKeys, _Strict):
    """``data:``. Its split-rule keys (``class_map``, ``test_fraction``, ``split_seed``, ``val_fraction``,
    ``pretrain_fraction``: :class:`~distill.data.split.SplitKeys`) may be left unset: a run then takes
    them from its (first) cache, else the defaults (:class:`~distill.data.split.SplitRule`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: Path  # ROOT/DOMAIN/CLASS/image
    source: list[str] = Field(min_length=1)  # domains trained on
    target: list[str] | None = None  # evaluated as unseen domains; default: all others
    skip_bad: bool = False  # skip undecodable images (listed once) instead of stopping
    # domains under root whose TRAIN split is an unlabeled pool, or folders of images anywhere (an entry with a
    # '/' or starting with '.' or '~'; cached with `cache build --unlabeled DIR`): their cached teacher outputs
    # feed the distillation terms; cross-entropy never sees them (never their val/test split; never a source domain)
    unlabeled: list[str] = Field(default_factory=list)
    unlabeled_ratio: float = Field(1.0, gt=0.0)  # pool images per labelled image in a step

    # class names no student label ever names: the student's classes are the others; their images still
    # feed the distillation losses (label -1), and `distill export --classes` can re-target a text head to them
    withhold_classes: list[str] = []

    _domains = field_validator("source", "target", mode="before")(_split_domains)
    _one_domain = field_validator("unlabeled", mode="before")(_listify)  # its folders' paths may hold a comma
    _one_class = field_validator("withhold_classes", mode="before")(_listify)

    @model_validator(mode="after")
    def _pool_is_not_source(self) -> DataConfig:
        both = [d for d in self.unlabeled if d in self.source]
        if both:
            raise ValueError(f"data.unlabeled: {both} are also in data.source (a pool domain has no labels)")
        return self

    def check_new_run(self) -> None:
        """A new run's domains: a target's accuracy is the unseen-domain number (a source domain averaged into it
        would inflate it), and each domain is listed once. Not a validator: a run configured before this check
        must still load for resume, export and report."""
        for key, names in (("data.source", self.source), ("data.target", self.target or [])):
            twice = sorted({d for d in names if names.count(d) > 1})
            if twice:
                raise DistillError(f"{key}: {', '.join(map(repr, twice))} listed twice; list each domain once")
        both = [d for d in self.target or [] if d in self.source]
        if both:
            raise DistillError(f"data.target: {', '.join(map(repr, both))} also in data.source; a target domain "
                               "must be one the student does not train on: remove it from one of them")

    @model_validator(mode="after")
    def _leaves_a_train_split(self) -> DataConfig:
        """Fractions that leave no train split are refused here, at the boundary (the rule's one home
        is :func:`distill.data.split.check_split_rule`); unset keys count at their defaults."""
        rule = {**SplitRule().model_dump(), **self.split_keys()}
        try:
            check_split_rule(rule["test_fraction"], rule["val_fraction"], rule["pretrain_fraction"])
        except DistillError as e:
            raise ValueError(str(e)) from None
        return self


class TeacherConfig(_Strict):
    arch: str  # open_clip model name or hf-hub:/local-dir: id
    pretrained: str | None = None  # tag or checkpoint path
    templates: list[str] | None = None  # default: the cache's (or distill's default set)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # the teacher's inference dtype (part of its identity)

    _one_template = field_validator("templates", mode="before")(_listify)


class StudentConfig(_Strict):
    arch: str = "resnet18"  # any timm model name
    input_size: int = Field(224, gt=0)
    pretrained: bool = False  # timm pretrained weights (needs them in the HF cache)
    zero_shot_init: bool = False  # head <- teacher text embeddings through the projector
    # linear: a trained classifier; text: open vocabulary, the teacher's text embeddings as a fixed
    # classifier over the projected feature (needs a teacher cache; re-targetable at export)
    head: Literal["linear", "text"] = "linear"


class StrategyConfig(Checked):
    """``name`` plus that strategy's own options (validated by the strategy's Config); ``StrategyConfig(name=3)`` is
    one line, as the other sections."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)  # global batch (split across DDP ranks)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only (Nesterov when > 0)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr: float = 1e-6
    grad_clip: float | None = Field(1.0, gt=0)  # max grad norm; null disables
    # forward passes under autocast: bf16, or fp16 with a grad scaler (CUDA only); losses compute in fp32
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # steps with non-finite gradients are skipped (CPU bf16: first retried in fp32; distill/train/guard.py); a run
    # that skips more than this fraction of its steps stops
    max_skipped_steps: float = Field(0.05, ge=0, le=1)
    # EMA of the student's weights (timm's ModelEmaV3), e.g. 0.999: evaluated, selected on and saved as the best
    # checkpoint instead of the raw weights; null (default): off
    ema_decay: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _bf16_alias(cls, data: Any) -> Any:
        """``bf16: true`` (the old key) means ``precision: bf16``."""
        if isinstance(data, dict) and "bf16" in data:
            data = dict(data)
            old = data.pop("bf16")
            if not isinstance(old, bool):
                raise ValueError(f"bf16 must be true or false (or use precision: fp32|bf16|fp16), got {old!r}")
            if old:
                if data.get("precision", "bf16") != "bf16":
                    raise ValueError(f"bf16: true contradicts precision: {data['precision']} (drop bf16, an old alias)")
                data["precision"] = "bf16"
        return data


class RunConfig(_Strict):
    out: Path  # run directory
    seed: int = 0
    workers: int = Field(2, ge=0)  # DataLoader worker processes
    views: int = Field(1, ge=1)  # views per image when no cache dictates them
    save_every: int = Field(0, ge=0)  # also checkpoint every N steps (0: each epoch only)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = True  # deterministic kernels (CPU runs are exact; CUDA: see README "Resume on a GPU")
    log_every: int = Field(50, ge=1)  # loss/accuracy logging and the NaN check every N steps (no per-step host sync)
    # test-split evaluation every N epochs, at the last one and whenever source validation improves (so the
    # selected epoch always has its test numbers); validation runs every epoch. N > 1: patient schedules
    # spend their time training, not evaluating
    eval_every: int = Field(1, ge=1)
    progress: bool = True  # tqdm bars on stderr (--no-progress; the Python API's progress=False); changes no result
    # what the best epoch (checkpoints/best) is selected on: source_val (the source domains' validation accuracy,
    # the default) or teacher_agreement (top-1 agreement of the student with the cached teacher on the run's
    # unlabeled pool, data.unlabeled: no label read; distill/train/selection.py). README "Selection"
    select_on: Literal["source_val", "teacher_agreement"] = "source_val"


def parse_eps(text: str | float | int) -> float:
    """``"2/255"``, ``"0.01"`` or a number -> float in pixel units ([0, 1] images): the one epsilon parser
    (``distill eval``, ``distill cache build --adv-eps`` and the ``robust`` config section).

    Raises:
        DistillError: not a number or fraction, or outside [0, 1] (the message names the value).
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        try:
            value = float(Fraction(s)) if "/" in s else float(s)
        except (ValueError, ZeroDivisionError):
            raise DistillError(f"epsilon '{text}': expected a number or a fraction such as 2/255") from None
    if not 0 <= value <= 1:
        raise DistillError(f"epsilon {text}: must be in [0, 1] (pixel units; 8/255 = {8 / 255:.4f})")
    return value


def format_eps(eps: float) -> str:
    """0.00784 -> ``"2/255"`` when eps is a whole number of 8-bit levels, else ``"0.0100"``."""
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-4 else f"{eps:.4g}"


def _pixel_eps(value: Any) -> float:
    """One epsilon through the one parser (:func:`parse_eps`), as a pydantic error."""
    try:
        return parse_eps(value)
    except DistillError as e:
        raise ValueError(str(e)) from None


class RobustSettings(_Strict):
    """What a robust evaluation measures (:mod:`distill.robust`): the train config's ``robust`` section
    (evaluates the best checkpoint after training; off when absent) and ``distill eval``'s flags."""

    pgd_eps: tuple[float, ...] = (2 / 255,)  # L-inf radii in pixel units; "2/255" strings are accepted; [] = no attack
    pgd_steps: int = Field(10, ge=0)
    pgd_step_size: float | None = None  # pixel units; None: 2.5 * eps / steps
    random_start: bool = True  # PGD starts at a uniform point of the ball (Madry et al.)
    # names from distill.robust.corruptions, or [all] (the default); [] = none
    corruptions: tuple[str, ...] = Field(("all",), validate_default=True)
    severity: int = Field(3, ge=1, le=5)
    max_images: int | None = Field(None, ge=1)  # per domain (first N of the split in dataset order); None = all
    seed: int = 0  # seeds PGD's random starts and the corruption noise

    @field_validator("pgd_eps", mode="before")
    @classmethod
    def _eps_list(cls, v: Any) -> Any:
        return [_pixel_eps(x) for x in v] if isinstance(v, (list, tuple)) else [_pixel_eps(v)]

    @field_validator("pgd_step_size", mode="before")
    @classmethod
    def _step(cls, v: Any) -> Any:
        return None if v is None else _pixel_eps(v)

    @field_validator("corruptions", mode="before")
    @classmethod
    def _known(cls, v: Any) -> Any:
        # lazy: torch; config.py stays torch-free so a config mistake is reported before torch loads
        from distill.robust.corruptions import check_corruptions

        try:
            return check_corruptions(_listify(v))
        except DistillError as e:
            raise ValueError(str(e)) from None

    def to_dict(self) -> dict[str, Any]:
        """The settings as recorded next to the results (epsilons as ``2/255``, the step rule spelled out)."""
        return {"pgd_eps": [format_eps(e) for e in self.pgd_eps], "pgd_steps": self.pgd_steps,
                "pgd_step_size": None if self.pgd_step_size is None else float(self.pgd_step_size),
                "pgd_step_rule": "2.5*eps/steps" if self.pgd_step_size is None else "fixed",
                "random_start": self.random_start, "attack": "untargeted CE on the label (L-inf, pixel space)",
                "corruptions": list(self.corruptions), "severity": self.severity, "max_images": self.max_images,
                "seed": self.seed}


class TrainConfig(_Strict):
    data: DataConfig
    student: StudentConfig = StudentConfig()
    strategy: StrategyConfig
    cache: Path | list[Path] | None = None  # teacher cache dir(s) (distill cache build)
    teacher: TeacherConfig | None = None  # needed only by online-teacher strategies
    source_checkpoint: Path | None = None  # student checkpoint to start from (SFDA)
    optim: OptimConfig = OptimConfig()
    run: RunConfig
    robust: RobustSettings | None = None  # robustness evaluation after training (PGD, corruptions); off by default

    def caches(self) -> list[Path]:
        if self.cache is None:
            return []
        return list(self.cache) if isinstance(self.cache, list) else [self.cache]


def _set_path(d: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        if k not in cur or cur[k] is None:
            cur[k] = {}
        if not isinstance(cur[k], dict):
            raise DistillError(f"{source}: cannot set '{dotted}': '{k}' is not a section")
        cur = cur[k]
    cur[keys[-1]] = value


def _override_of(loc: list[str], overrides: list[str] | None) -> str | None:
    """The ``--set`` item that set the key at ``loc`` (or a section above it), if one did."""
    for item in reversed(overrides or []):
        key = item.split("=", 1)[0].strip().split(".")
        if loc[:len(key)] == key or key[:len(loc)] == loc:
            return item
    return None


def set_flag(item: str) -> str:
    """How an error names an override item on the command line: the flag that gave it (``--set KEY=VALUE``). The
    Python API passes its own namer (:func:`distill.recipes.override_namer`): the key and value as given there."""
    return f"--set {item}"


def parse_overrides(overrides: list[str] | None, named: Callable[[str], str] = set_flag) -> list[tuple[str, Any]]:
    out = []
    for item in overrides or []:
        if "=" not in item:
            raise DistillError(f"{named(repr(item))}: expected key=value (e.g. optim.lr=3e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            if _unbalanced(raw):
                raise _malformed(key, raw, named(item)) from None
            value = raw  # plain text YAML cannot read (a template with ': ' in it) is kept as text
        if isinstance(value, str) and raw.strip()[:1] not in "'\"" and _unbalanced(raw):
            raise _malformed(key, raw, named(item))  # `mnist_m]` reads as text, but is a typo as surely as `[mnist_m`
        out.append((key, value))
    return out


def _unbalanced(raw: str) -> bool:
    """Whether ``raw`` opens a YAML list, mapping or quoted string it does not close (or closes one never opened)."""
    text = raw.strip()
    if text[:1] in "'\"" and (len(text) < 2 or text[-1] != text[0]):
        return True
    return text.count("[") != text.count("]") or text.count("{") != text.count("}")


def _malformed(key: str, raw: str, given: str) -> DistillError:
    # one line naming the key: `--set data.target=[mnist_m` must not train on a domain named '[mnist_m'
    return DistillError(f"{given}: the value of '{key}' is malformed (unbalanced brackets or quotes); "
                        "a list is written [a, b], text with spaces 'a b'")


def validate(model: type[BaseModel], raw: dict, source: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise DistillError(format_validation_error(e, source, model)) from None


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: --resume A_FILE looks for A_FILE/config.yaml
        raise DistillError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise DistillError(f"{path}: invalid YAML: {' '.join(str(e).split())[:200]}") from None
    if not isinstance(raw, dict):
        raise DistillError(f"{path}: top level must be a mapping")
    return raw


def load_train_config(path: str | Path | None, overrides: list[str] | None = None,
                      base: dict | None = None, named: Callable[[str], str] = set_flag) -> TrainConfig:
    """YAML file (+ ``--set`` overrides) -> validated :class:`TrainConfig`. ``named``: how an error names the
    override item it blames (:func:`set_flag`: as the command line gave it)."""
    raw = load_yaml(path) if path else dict(base or {})
    source = str(path) if path else "config"
    for key, value in parse_overrides(overrides, named):
        _set_path(raw, key, value, source)
    try:
        cfg = TrainConfig.model_validate(raw)
    except ValidationError as e:  # a mistake in a --set override is blamed on it, not on the file
        item = _override_of([str(p) for p in first_error(e)["loc"]], overrides)
        raise DistillError(format_validation_error(e, named(item) if item else source, TrainConfig)) from None
    # lazy: torch; config.py stays torch-free so a config mistake is reported before torch loads
    from distill.strategies import build_config, get_strategy

    try:  # an unknown strategy, or an unknown key or bad value among its options: named like any other key
        build_config(get_strategy(cfg.strategy.name).Config, cfg.strategy.options(), where="strategy")
    except DistillError as e:
        item = _override_of(["strategy", getattr(e, "key", "name")], overrides)
        raise DistillError(f"{named(item) if item else source}: {e}") from None
    return cfg


def dump_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
