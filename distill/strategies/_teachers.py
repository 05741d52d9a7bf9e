"""Several cached teachers as one soft target: the ``teachers`` option of ``kd`` and ``fm``.

A run may list several teacher caches (``cache: [a, b]``); each batch then carries one ``[B, C]``
logits tensor per cache (``batch.teacher_logits_all``), on the same view of the same image
(build.py refuses caches whose views differ, and checks each cache's class list against the data's,
so the columns line up). ``kd`` and ``fm`` read the first cache alone unless ``teachers.combine``
says otherwise:

- ``first`` (default): the first cache's logits, exactly as before the option existed;
- ``mean_probs``: the (weighted) mean of the teachers' softmax at the strategy's temperature,
  ``p = Σ_k w_k softmax(t_k / T)`` with ``w`` = ``teachers.weights`` normalized to sum 1 (equal
  when unset), computed in fp32 (as :mod:`distill.strategies.losses` computes every loss).

Why the arithmetic mean of probabilities and not the log-space (geometric) mean: Hinton, Vinyals
& Dean (2015, "Distilling the Knowledge in a Neural Network", section 2) allow either for an
ensemble teacher; multi-teacher KD (You et al., KDD 2017, "Learning from Multiple Teacher
Networks") averages the softened outputs. The arithmetic mean has a property the geometric one
lacks: KL's teacher-dependent part, −Σ_c p_c log q_c, is linear in p, so KL(Σ_k w_k p_k || q) has
the same gradient in the student as Σ_k w_k KL(p_k || q) -- the student learns from each teacher
in proportion to its weight. A geometric mean (a product of experts) puts mass only where every
teacher does: one teacher that is confidently wrong on a class vetoes it, and zero-shot VLM
teachers are wrong systematically, on whole regions where their prompts fit poorly (see
``sfda``), so the pool that keeps each teacher's mass is the safer default.

Each teacher's logits include its own CLIP logit scale, so each keeps its own sharpness under the
shared temperature. ``fm``'s feature term (``feature_weight``) still matches the first cache's
image embedding: teachers' embedding spaces are not comparable.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Sequence

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from distill.errors import DistillError
from distill.strategies.base import Batch, batch_field, strategy_config
from distill.strategies.losses import kl_div_to_probs_with_temperature, kl_div_with_temperature

KEY = "strategy.teachers"


@strategy_config
class TeacherEnsemble:
    # first: the first cache alone; mean_probs: the weighted mean of every cache's softmax at the temperature
    combine: Literal["first", "mean_probs"] = "first"
    # one weight per cache, in the order 'cache' lists them (normalized to sum 1); None: equal; mean_probs only
    weights: tuple[Annotated[float, Field(ge=0)], ...] | None = None

    def check(self, num_teachers: int, strategy: str) -> None:
        """Refuse, at start-up and in one line naming the key, a combination the run's caches cannot serve."""
        if self.combine == "first":
            if self.weights is not None:
                raise DistillError(f"{KEY}.weights: weights combine several teachers, but {KEY}.combine is "
                                   "'first' (the first cache alone): set it to mean_probs, or drop the weights")
            return
        if num_teachers < 2:
            raise DistillError(f"{KEY}.combine: {self.combine} combines several teachers, but strategy '{strategy}' "
                               f"has {num_teachers} teacher cache(s): list two or more under 'cache', or set "
                               f"{KEY}.combine=first")
        if self.weights is not None:
            if len(self.weights) != num_teachers:
                raise DistillError(f"{KEY}.weights: {len(self.weights)} weight(s) for {num_teachers} caches: give "
                                   "one per cache, in the order 'cache' lists them")
            if sum(self.weights) <= 0:
                raise DistillError(f"{KEY}.weights: all zero ({list(self.weights)}): give at least one teacher a "
                                   "weight > 0")

    def normalized_weights(self, num_teachers: int) -> list[float]:
        """The weights the mean uses, summing to 1 (``first``: the first cache's 1, the others' 0)."""
        if self.combine == "first":
            return [1.0] + [0.0] * (num_teachers - 1)
        if self.weights is None:
            return [1.0 / num_teachers] * num_teachers
        total = sum(self.weights)
        return [w / total for w in self.weights]

    def target(self, batch: Batch, temperature: float) -> Tensor:
        """The ensemble's soft target at ``temperature``: ``[B, C]`` fp32 probabilities (``mean_probs``).

        A teacher of weight 0 is skipped, so weights ``[1, 0]`` give the first teacher's softmax bit for bit.
        """
        logits = batch.teacher_logits_all or []
        weights = self.normalized_weights(len(logits))
        out: Tensor | None = None
        for w, t in zip(weights, logits):
            if w == 0:
                continue
            p = F.softmax(t.float() / temperature, dim=-1) * w
            out = p if out is None else out + p
        if out is None:  # check() refuses this at start-up; a hand-made batch without teachers lands here
            raise DistillError(f"{KEY}.combine: {self.combine} needs batch.teacher_logits_all (one per cache), got "
                               f"{len(logits)}")
        return out


    def kl(self, student_logits: Tensor, batch: Batch, temperature: float,
           teacher_temperature: float | None = None) -> Tensor:
        """T² · KL(teacher target || softmax(student / T)), batch mean: ``first`` is
        :func:`~distill.strategies.losses.kl_div_with_temperature` on the first cache's logits (unchanged bits),
        ``mean_probs`` the same term toward :meth:`target`. ``teacher_temperature``: the target's own temperature
        (None: ``temperature``, both sides alike); below ``temperature`` the target is sharper than the student's
        softmax it is matched with. ``student_logits`` [B, C] -> scalar."""
        if teacher_temperature is None or teacher_temperature == temperature:
            if self.combine == "first":
                return kl_div_with_temperature(student_logits, batch_field(batch.teacher_logits, "teacher_logits", KEY),
                                               temperature)
            return kl_div_to_probs_with_temperature(student_logits, self.target(batch, temperature), temperature)
        if self.combine == "first":
            target = F.softmax(batch_field(batch.teacher_logits, "teacher_logits", KEY).float() / teacher_temperature,
                               dim=-1)
        else:
            target = self.target(batch, teacher_temperature)
        return kl_div_to_probs_with_temperature(student_logits, target, temperature)


def teacher_combination(strategy: Any, caches: Sequence[Any]) -> dict[str, Any] | None:
    """What ``summary.json``'s ``teachers`` records for a run whose strategy combined several caches (its
    ``teachers`` option set to more than ``first``): the combination and, per cache, its path, teacher
    identity and normalized weight. None when the strategy has no such option or reads the first cache alone.
    """
    ensemble = getattr(strategy.config, "teachers", None)
    if not isinstance(ensemble, TeacherEnsemble) or ensemble.combine == "first":
        return None
    weights = ensemble.normalized_weights(len(caches))
    return {"combine": ensemble.combine,
            "caches": [{"cache": str(c.path), "teacher": c.manifest.teacher.model_dump(mode="json", exclude_unset=True),
                        "weight": w} for c, w in zip(caches, weights)]}
