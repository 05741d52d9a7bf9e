"""Training through the memory-mapped cache reader: byte-identical to reading every row into memory; compact
rows train the strategies that accept them and refuse the others at start-up."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from distill.cli import main as cli
from distill.data.view_policy import LAM
from distill.teacher.cache import TeacherCache
from tests.train.test_trainer import _config, _weights, _write


def _eager_lookup(self, sample_index, view, outputs=True):
    """The reader before memory maps: every shard loaded into memory, rows sorted by (sample, view) (``outputs``
    False: no teacher outputs, as the mapped reader)."""
    if not hasattr(self, "_eager"):
        parts = [load_file(str(self.path / s.file)) for s in self.manifest.shards]
        rows = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        key = rows["sample_index"] * self.views + rows["view"].long()
        order = torch.argsort(key, stable=True)
        rows = {k: t[order] for k, t in rows.items()}
        row_of = torch.full((int(key.max()) + 1,), -1, dtype=torch.long)
        row_of[key[order]] = torch.arange(len(key))
        self._eager = rows, row_of
    rows, row_of = self._eager
    row = row_of[torch.as_tensor(sample_index).long().cpu() * self.views + torch.as_tensor(view).long().cpu()]
    assert bool((row >= 0).all())
    params, partner = rows["view_params"][row], rows["mix_partner"][row]
    lam = params[:, LAM] if params.shape[1] > LAM else torch.ones(len(row))
    out = {"view_params": params, "label": rows["label"][row].long(), "domain": rows["domain"][row].long(),
           "mix_partner": partner, "mix_view": rows["mix_view"][row].long(),
           "mix_lam": torch.where(partner >= 0, lam, torch.ones_like(lam))}
    if outputs:
        out.update(image_emb=rows["image_emb"][row].float(), logits=rows["logits"][row].float())
    return out


def test_mapped_reader_trains_byte_identical_checkpoints(tiny_root, tiny_cache, tmp_path, monkeypatch):
    runs = []
    for name, eager in (("mapped", False), ("eager", True)):
        if eager:
            monkeypatch.setattr(TeacherCache, "lookup", _eager_lookup)
        over = {"optim__epochs": 1, "strategy__name": "customkd"}  # logits and embeddings both read
        cfg = _config(tiny_root, tiny_cache, tmp_path / name, **over)
        cfg["strategy"].pop("temperature")
        assert cli(["train", "-c", str(_write(tmp_path, cfg, f"{name}.yaml"))]) == 0
        runs.append(_weights(tmp_path / name))
    a, b = runs
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compact_cache_trains_kd_and_refuses_feature_strategies(tiny_root, tmp_path, capsys):
    out = tmp_path / "topk"
    torch.manual_seed(0)
    assert cli(["cache", "build", "--data", str(tiny_root), "--out", str(out), "--arch", "distill-demo-vit",
                "--pretrained", "none", "--views", "2", "--seed", "3", "--shard-size", "16", "--workers", "0",
                "--no-progress", "--logits", "topk", "--topk", "2", "--no-embeddings"]) == 0
    capsys.readouterr()
    cfg = _config(tiny_root, out, tmp_path / "kd", optim__epochs=1)
    assert cli(["train", "-c", str(_write(tmp_path, cfg, "kd.yaml"))]) == 0
    assert _weights(tmp_path / "kd")
    capsys.readouterr()
    cfg = _config(tiny_root, out, tmp_path / "ckd", optim__epochs=1, strategy__name="customkd")
    cfg["strategy"].pop("temperature")
    assert cli(["train", "-c", str(_write(tmp_path, cfg, "ckd.yaml"))]) == 1  # a DistillError
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "customkd" in err and "--no-embeddings" in err and str(out) in err
