"""distill.export.fallback: the greedy search keeps only layers that lower the disagreement with fp32."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from distill.data.folder import DomainFolder
from distill.export.evaluate import disagreement_by_domain, predict_onnx
from distill.export.fallback import greedy_fallback, kl_divergence
from distill.export.images import load_images, pick_per_domain
from distill.student.model import load_student


@pytest.fixture(scope="module")
def broken_fp32(export_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fp32 model with its head biased to class 0: a stand-in for a badly quantized variant."""
    model = onnx.load(str(export_dir / "model.fp32.onnx"))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    bias = next(t for t in model.graph.initializer if t.name == gemm.input[2])
    b = numpy_helper.to_array(bias).copy()
    b[0] += 1000.0
    bias.CopyFrom(numpy_helper.from_array(b, bias.name))
    path = tmp_path_factory.mktemp("broken") / "broken.onnx"
    onnx.save(model, str(path))
    return path


def test_greedy_keeps_only_layers_that_help(export_dir: Path, broken_fp32: Path, run_ckpt: Path,
                                            tiny_root: Path) -> None:
    """Layer 'b' fixes the model, 'a' and 'c' do not: only 'b' is kept, and the search stops there.
    The measure is the pipeline's: top-1 disagreement with fp32, which needs no label."""
    folder = DomainFolder(tiny_root)
    imgs = load_images(folder, pick_per_domain(folder, folder.domains, "test", 10), load_student(run_ckpt).spec)
    fp32 = export_dir / "model.fp32.onnx"
    calls: list[list[str]] = []
    fp32_logits = predict_onnx(fp32, imgs)

    def measure(path: Path) -> dict[str, float]:
        return disagreement_by_domain(fp32_logits, predict_onnx(path, imgs), imgs)

    broken = measure(broken_fp32)
    assert max(broken.values()) > 10

    def quantize_excluding(nodes: list[str]) -> Path:
        calls.append(list(nodes))
        return fp32 if "b" in nodes else broken_fp32

    ranked = [{"node": n, "op_type": "Conv"} for n in ("a", "b", "c")]
    res, path = greedy_fallback(quantize_excluding, ranked, measure, broken, max_drop=0.0, max_layers=5)
    assert calls == [["a"], ["b"]] and [s["accepted"] for s in res.steps] == [False, True]
    assert res.satisfied and res.kept_float == ["b"] and path == fp32 and max(res.disagreement_pts.values()) == 0.0
    # nothing helps: nothing is kept, the all-int8 model stays
    res, path = greedy_fallback(lambda nodes: broken_fp32, ranked, measure, broken, 0.0, 5)
    assert path is None and res.kept_float == [] and not res.satisfied and len(res.steps) == 3


def test_kl_divergence() -> None:
    a = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    assert kl_divergence(a, a) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(a, a + 5.0) == pytest.approx(0.0, abs=1e-9)  # shift-invariant, like softmax
    assert kl_divergence(a, a[:, ::-1]) > 0.1
