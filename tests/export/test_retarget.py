"""`distill export --classes FILE` (distill/export/retarget.py): a text-head student re-targeted with the
teacher's text tower ships an ONNX file equal to the re-targeted PyTorch student, whose logits are the
teacher's zero-shot rule through the student's projector."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from distill.cli import main
from distill.data import DomainFolder
from distill.errors import DistillError
from distill.export import ExportConfig, export_checkpoint
from distill.export.images import load_images, random_images
from distill.export.onnx import read_metadata
from distill.export.retarget import read_class_file
from distill.records import ExportReport
from distill.student.model import Student, default_spec, load_student, save_student
from distill.teacher import Teacher, register_model_configs

TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
TRAINED = ["checker", "hstripes", "square"]  # the student's classes; the data set also has vstripes
NEW = ["vstripes", "checker", "zebra"]  # re-targeted: a withheld class, a seen one, one the data lacks


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory) -> Path:
    """A random distill-demo-vit saved to a file, so that every Teacher built from it is the same."""
    import open_clip

    register_model_configs()
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("teacher") / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("distill-demo-vit").state_dict().items()},
              str(path))
    return path


@pytest.fixture(scope="module")
def text_ckpt(teacher_ckpt, tmp_path_factory) -> Path:
    """A text-head test_resnet student of that teacher (moved BatchNorm statistics), as training saves one."""
    teacher = Teacher("distill-demo-vit", str(teacher_ckpt), TRAINED, TEMPLATES)
    spec = default_spec("test_resnet", TRAINED, 32, embed_dim=teacher.embed_dim, head="text",
                        logit_scale=teacher.logit_scale)
    spec.provenance = {"teacher": teacher.identity(), "teacher_pretrained": str(teacher_ckpt), "templates": TEMPLATES}
    torch.manual_seed(1)
    student = Student(spec, text_embeddings=teacher.text_embeddings)
    with torch.no_grad():
        student.train()(torch.randn(8, 3, 32, 32))
    return save_student(student.eval(), tmp_path_factory.mktemp("student") / "best")


def _class_file(tmp_path: Path, names: list[str], yaml_list: bool = False) -> Path:
    path = tmp_path / ("classes.yaml" if yaml_list else "classes.txt")
    path.write_text("".join(f"- {n}\n" for n in names) if yaml_list else "# new classes\n" + "\n".join(names) + "\n")
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _real_images(tiny_root: Path, spec) -> np.ndarray:
    folder = DomainFolder(tiny_root)
    images = load_images(folder, folder.select(["clean", "noisy"], "test")[:12], spec)
    return images.normalize(images.images)


@pytest.fixture(scope="module")
def retargeted(text_ckpt, tiny_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retarget") / "exp"
    classes = _class_file(out.parent, NEW)
    export_checkpoint(text_ckpt, out, ExportConfig(  # the default (dynamo) exporter, and every precision
        classes=str(classes), data_root=str(tiny_root), eval_count=4, precisions=("fp32", "fp16", "int8"),
        calib_count=16, sensitivity_count=16, latency_iters=2, threads=1), log=_quiet)
    return out


def test_onnx_equals_the_retargeted_pytorch_student(retargeted, tiny_root):
    student = load_student(retargeted / "checkpoint")
    assert student.spec.class_names == NEW
    x_random = random_images(student.spec, 6, seed=3)
    for x in (x_random.normalize(x_random.images), _real_images(tiny_root, student.spec)):
        with torch.no_grad():
            expected = student(torch.from_numpy(x)).numpy()
        got = _ort(retargeted / "model.fp32.onnx", x)
        assert got.shape == (len(x), len(NEW))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_pytorch_logits_are_the_teachers_zero_shot_rule_through_the_projector(retargeted, text_ckpt, teacher_ckpt):
    original = load_student(text_ckpt)
    student = load_student(retargeted / "checkpoint")
    teacher = Teacher("distill-demo-vit", str(teacher_ckpt), NEW, TEMPLATES)  # computed independently
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        emb = F.normalize(original.projector(original.features(x)), dim=-1)  # the student's own weights
        expected = teacher.logit_scale * emb @ teacher.text_embeddings.T
        torch.testing.assert_close(student(x), expected, rtol=1e-4, atol=1e-5)
    assert student.spec.provenance["retargeted"]["from_classes"] == TRAINED


def test_metadata_names_the_classes_of_the_file(retargeted):
    meta = read_metadata(retargeted / "model.fp32.onnx")
    assert meta["class_names"] == NEW
    assert meta["head"] == "text" and meta["templates"] == TEMPLATES
    report = ExportReport.read(retargeted)
    assert report.class_names == NEW
    assert [m.precision for m in report.models] == ["fp32", "fp16", "int8"]
    assert report.exporter["exporter"] == "dynamo" and not report.exporter["fallback_reason"]
    for model in report.models:
        assert read_metadata(retargeted / model.file)["class_names"] == NEW


def test_accuracy_only_on_the_data_classes_the_file_names(retargeted):
    report = ExportReport.read(retargeted)
    assert report.data["labeled"] and report.data["eval_classes"] == ["vstripes", "checker"]
    assert report.models[0].accuracy is not None


def test_retargeting_to_the_original_list_reproduces_the_original_onnx(text_ckpt, tiny_root, tmp_path):
    plain = tmp_path / "plain"  # a text head trained on 3 of the data's 4 classes: scored on those 3
    report = export_checkpoint(text_ckpt, plain, ExportConfig(exporter="torchscript", data_root=str(tiny_root),
                                                              eval_count=3), log=_quiet)
    assert report.data["labeled"] and report.data["eval_classes"] == TRAINED
    again = tmp_path / "again"
    export_checkpoint(text_ckpt, again, ExportConfig(classes=str(_class_file(tmp_path, TRAINED, yaml_list=True)),
                                                     exporter="torchscript"), log=_quiet)
    x = _real_images(tiny_root, load_student(text_ckpt).spec)
    np.testing.assert_allclose(_ort(again / "model.fp32.onnx", x), _ort(plain / "model.fp32.onnx", x),
                               rtol=1e-5, atol=1e-5)
    assert read_metadata(plain / "model.fp32.onnx")["class_names"] == TRAINED


def test_a_file_naming_no_data_class_is_checked_label_free(text_ckpt, tiny_root, tmp_path):
    report = export_checkpoint(text_ckpt, tmp_path / "exp", ExportConfig(
        classes=str(_class_file(tmp_path, ["zebra", "giraffe"])), data_root=str(tiny_root), eval_count=2,
        exporter="torchscript"), log=_quiet)
    assert not report.data["labeled"] and report.models[0].accuracy is None
    assert report.models[0].parity["passed"]


def test_a_linear_head_student_is_refused(tmp_path, capsys):
    run_ckpt = save_student(Student(default_spec("test_resnet", TRAINED, 32, embed_dim=32)), tmp_path / "linear")
    with pytest.raises(DistillError, match="linear head"):
        export_checkpoint(run_ckpt, tmp_path / "exp", ExportConfig(classes=str(_class_file(tmp_path, NEW))),
                          log=_quiet)
    assert main(["export", str(run_ckpt), "--out", str(tmp_path / "cli"), "--classes",
                 str(_class_file(tmp_path, NEW))]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "linear head" in err


def test_an_unreachable_teacher_checkpoint_is_one_line(text_ckpt, tmp_path, capsys):
    argv = ["export", str(text_ckpt), "--out", str(tmp_path / "exp"), "--classes", str(_class_file(tmp_path, NEW)),
            "--teacher-pretrained", str(tmp_path / "gone.safetensors"), "--exporter", "torchscript"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress line
    assert err.startswith("error: ") and "gone.safetensors" in err and "--teacher-pretrained" in err


def test_the_cli_retargets(text_ckpt, tmp_path, capsys):
    out = tmp_path / "exp"
    argv = ["export", str(text_ckpt), "--out", str(out), "--classes", str(_class_file(tmp_path, NEW)),
            "--exporter", "torchscript"]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_metadata(out / "model.fp32.onnx")["class_names"] == NEW
    assert load_student(out / "checkpoint").spec.class_names == NEW


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too: a set-aside folder left behind would show) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fp32_export(text_ckpt: Path, out: Path, tiny_root: Path, classes: Path | None) -> None:
    export_checkpoint(text_ckpt, out, ExportConfig(classes=None if classes is None else str(classes),
                                                   data_root=str(tiny_root), eval_count=2, exporter="torchscript",
                                                   build_engines=False), log=_quiet)


@pytest.mark.parametrize("earlier", ["retargeted", "plain"])
@pytest.mark.parametrize("stop", ["bad data", "fp32 fails", "ctrl-c"])
def test_a_failed_retargeting_re_export_leaves_the_earlier_export_whole(text_ckpt, tiny_root, tmp_path, monkeypatch,
                                                                       capsys, earlier, stop):
    """Review 3 (M1): `export --classes` wrote OUT/checkpoint/ before the data check and outside what is set aside,
    so a re-export that failed (bad --data) or stopped (an exporter's error, Ctrl-C) left its re-targeted student
    beside the restored earlier export. The earlier export comes back whole: its own checkpoint/, or none."""
    from distill.export.pipeline import Exporter

    folder = tmp_path / "exp"
    _fp32_export(text_ckpt, folder, tiny_root, _class_file(tmp_path, NEW) if earlier == "retargeted" else None)
    assert (folder / "checkpoint").is_dir() == (earlier == "retargeted")
    before = _tree(folder)
    other = tmp_path / "other"
    other.mkdir()
    argv = ["export", str(text_ckpt), "--out", str(folder), "--classes", str(_class_file(other, TRAINED)),
            "--data", str(tiny_root), "--eval-count", "2", "--exporter", "torchscript", "--no-build-engine"]
    if stop == "bad data":
        argv += ["--eval-domains", "clean,foggy"]
    else:
        def stopped(self):
            assert not (folder / "checkpoint").exists()  # the new one is in the scratch folder while it runs
            raise KeyboardInterrupt if stop == "ctrl-c" else DistillError("fp32 failed")

        monkeypatch.setattr(Exporter, "fp32", stopped)
    assert main(argv) == (130 if stop == "ctrl-c" else 1)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "foggy" in err if stop == "bad data" else err.endswith(("fp32 failed", "from the start")), err
    assert _tree(folder) == before  # byte for byte, checkpoint/ included; nothing of the new one left


@pytest.mark.parametrize("earlier", [None, "plain"])
def test_a_killed_retargeting_export_leaves_nothing_its_retry_refuses(text_ckpt, tiny_root, tmp_path, monkeypatch,
                                                                     earlier):
    """Review 25b M1: a --classes export killed (SIGKILL, OOM) while it ran left its checkpoint/ (and, after an
    earlier export, that export's export.json in .previous-export-*), and the retry refused the folder as the
    user's. The folder as the kill would leave it (copied while the export runs) takes the retry."""
    from distill.export.pipeline import Exporter

    folder = tmp_path / "exp"
    if earlier:
        _fp32_export(text_ckpt, folder, tiny_root, None)
    killed = tmp_path / "killed"

    def kill(self):
        shutil.copytree(folder, killed, ignore=shutil.ignore_patterns(".work-*"))  # scratch: the retry never reads it
        raise KeyboardInterrupt

    monkeypatch.setattr(Exporter, "fp32", kill)
    with pytest.raises(KeyboardInterrupt):
        _fp32_export(text_ckpt, folder, tiny_root, _class_file(tmp_path, NEW))
    monkeypatch.undo()
    _fp32_export(text_ckpt, killed, tiny_root, _class_file(tmp_path, NEW))
    assert load_student(killed / "checkpoint").spec.class_names == NEW


@pytest.mark.parametrize("earlier", [None, "retargeted"])
def test_a_retargeting_export_killed_after_moving_its_checkpoint_in_is_taken_up_by_its_retry(
        text_ckpt, tiny_root, tmp_path, monkeypatch, earlier):
    """Moving checkpoint/ into place and writing export.json are two steps: an export killed between them (SIGKILL,
    OOM: no cleanup runs) left a checkpoint/ that no export.json lists, and the retry refused it as the user's. The
    folder as the kill leaves it (copied when export.json was to be written) takes the retry, which ends clean."""
    folder = tmp_path / "exp"
    if earlier:
        _fp32_export(text_ckpt, folder, tiny_root, _class_file(tmp_path, NEW))
    killed = tmp_path / "killed"

    def kill(self, out_dir):
        assert self.status == "ok" and (folder / "checkpoint").is_dir()  # the student is in place, export.json next
        shutil.copytree(folder, killed, ignore=shutil.ignore_patterns(".work-*"))  # scratch: the retry never reads it
        raise KeyboardInterrupt

    monkeypatch.setattr(ExportReport, "write", kill)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(KeyboardInterrupt):
        _fp32_export(text_ckpt, folder, tiny_root, _class_file(other, TRAINED))
    monkeypatch.undo()
    assert not (killed / "export.json").exists() and (killed / "checkpoint").is_dir()
    _fp32_export(text_ckpt, killed, tiny_root, _class_file(tmp_path, NEW))  # the retry (another class file is fine)
    assert load_student(killed / "checkpoint").spec.class_names == NEW
    assert sorted(p.name for p in killed.iterdir()) == sorted([*ExportReport.read(killed).files, "checkpoint"])
    assert sorted(p.name for p in (killed / "checkpoint").iterdir()) == ["model.safetensors", "student.json"]


MARKER = Path("checkpoint") / ".distill-export.json"


def _stopped_after_export_json(text_ckpt: Path, tiny_root: Path, tmp_path: Path, monkeypatch, earlier: str | None
                               ) -> tuple[Path, Path]:
    """A --classes export (TRAINED) into ``exp`` (after an earlier one of NEW, or none) stopped by Ctrl-C right
    after export.json's write; ``killed``: a copy of ``exp`` at that moment, as a SIGKILL (no cleanup) leaves it."""
    folder, killed = tmp_path / "exp", tmp_path / "killed"
    if earlier:
        _fp32_export(text_ckpt, folder, tiny_root, _class_file(tmp_path, NEW))
    real_write = ExportReport.write

    def stop_after_write(self, out_dir):
        path = real_write(self, out_dir)
        if self.status == "ok":
            shutil.copytree(folder, killed, ignore=shutil.ignore_patterns(".work-*"))
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(ExportReport, "write", stop_after_write)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(KeyboardInterrupt):
        _fp32_export(text_ckpt, folder, tiny_root, _class_file(other, TRAINED))
    monkeypatch.undo()
    return folder, killed


@pytest.mark.parametrize("earlier", [None, "retargeted"])
def test_a_retargeting_export_stopped_after_writing_export_json_is_kept_without_its_marker(
        text_ckpt, tiny_root, tmp_path, monkeypatch, earlier):
    """Writing export.json and removing checkpoint/'s marker are two steps. Ctrl-C between them put the earlier
    export back, or (a first export) took checkpoint/ away from the export.json that listed it. The export is
    complete once export.json is written: it stays, its checkpoint/ unmarked, nothing set aside left."""
    folder, _ = _stopped_after_export_json(text_ckpt, tiny_root, tmp_path, monkeypatch, earlier)
    assert load_student(folder / "checkpoint").spec.class_names == TRAINED
    assert sorted(p.name for p in folder.iterdir()) == sorted([*ExportReport.read(folder).files, "checkpoint"])
    assert not (folder / MARKER).exists()


@pytest.mark.parametrize("earlier", [None, "retargeted"])
def test_a_marker_a_kill_left_in_a_listed_checkpoint_goes_with_the_next_export_even_a_failed_one(
        text_ckpt, tiny_root, tmp_path, monkeypatch, earlier):
    """A kill (SIGKILL: no cleanup runs) between export.json's write and the marker's removal leaves the marker in
    the listed checkpoint/ (nothing heeds it there); a later export that failed put it back with the folder."""
    from distill.export.pipeline import Exporter

    _, killed = _stopped_after_export_json(text_ckpt, tiny_root, tmp_path, monkeypatch, earlier)
    assert (killed / MARKER).is_file() and ExportReport.read(killed).config["classes"]

    def failed(self):
        raise DistillError("fp32 failed")

    monkeypatch.setattr(Exporter, "fp32", failed)
    with pytest.raises(DistillError, match="fp32 failed"):
        _fp32_export(text_ckpt, killed, tiny_root, _class_file(tmp_path, NEW))
    monkeypatch.undo()
    assert load_student(killed / "checkpoint").spec.class_names == TRAINED  # put back whole: the completed export's
    assert sorted(p.name for p in (killed / "checkpoint").iterdir()) == ["model.safetensors", "student.json"]


def test_a_re_export_replaces_the_earlier_exports_checkpoint(text_ckpt, tiny_root, tmp_path):
    """On success the folder holds the new export: its own re-targeted checkpoint/, or none when it re-targets
    nothing (the earlier export's student is not this export's)."""
    folder = tmp_path / "exp"
    _fp32_export(text_ckpt, folder, tiny_root, _class_file(tmp_path, NEW))
    other = tmp_path / "other"
    other.mkdir()
    _fp32_export(text_ckpt, folder, tiny_root, _class_file(other, TRAINED))
    assert load_student(folder / "checkpoint").spec.class_names == TRAINED
    _fp32_export(text_ckpt, folder, tiny_root, None)
    assert not (folder / "checkpoint").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(ExportReport.read(folder).files)


def test_a_retargeting_export_into_a_folder_holding_the_users_checkpoint_is_refused(text_ckpt, tiny_root, tmp_path,
                                                                                    capsys):
    """Review 25 L2: `export --classes` set a checkpoint/ folder aside that no export had written, and deleted it
    once the export succeeded. The folder is the user's: refused in one line, before anything is written."""
    folder = tmp_path / "exp"
    _fp32_export(text_ckpt, folder, tiny_root, None)  # an earlier export that re-targeted nothing
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "notes.txt").write_text("mine")
    before = _tree(folder)
    argv = ["export", str(text_ckpt), "--out", str(folder), "--classes", str(_class_file(tmp_path, NEW)),
            "--data", str(tiny_root), "--eval-count", "2", "--exporter", "torchscript", "--no-build-engine"]
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {folder / 'checkpoint'}: --classes writes the re-targeted student into this folder, and no "
        "export.json here says an earlier export wrote it: move it away, or choose another --out")
    assert _tree(folder) == before


def test_class_files(tmp_path):
    assert read_class_file(_class_file(tmp_path, ["a cat", "dog"])) == ["a cat", "dog"]
    assert read_class_file(_class_file(tmp_path, ["a cat", "dog"], yaml_list=True)) == ["a cat", "dog"]
    (tmp_path / "dup.txt").write_text("cat\ncat\n")
    with pytest.raises(DistillError, match="more than once"):
        read_class_file(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(DistillError, match="no class names"):
        read_class_file(tmp_path / "empty.txt")
    with pytest.raises(DistillError, match="not found"):
        read_class_file(tmp_path / "missing.txt")


def test_a_teacher_without_recorded_weights_is_refused(text_ckpt):
    from distill.export.retarget import teacher_source

    student = load_student(text_ckpt)
    student.spec.provenance = {"teacher": {"arch": "distill-demo-vit", "pretrained": None}, "templates": TEMPLATES}
    with pytest.raises(DistillError, match="--teacher-pretrained"):
        teacher_source(student)
    assert teacher_source(student, pretrained="w.safetensors").templates == tuple(TEMPLATES)
