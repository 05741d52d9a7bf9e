"""The build's per-sample structures read the dataset's columns: the same cache as main's, and nothing per image held.

main (f3340c3) held, for a whole build, a list of ``(index, Path)`` pairs, an ``{index: path}`` dict, a list of
positions per batch and, under a mixing policy, a dict entry per sample (~480 bytes an image: 4.8 GB at 10^7, in the
main process and in every spawned worker); this build computes each from the dataset's numpy columns when asked.

The expectations below are what main's code wrote for these builds (sha256, generated with this file's helpers
against a checkout of main). They cover every byte that does not come out of the teacher's float arithmetic: the
rows' columns (sample index, view, view params, mix partner and view, domain, label, split), each shard's skipped
images, the pixel stores' shards, the manifest (less its time, paths, hashes of floats or of the PNG files' sizes,
and the teacher's FLOP count, which torch's op counting gives differently by version; it is checked to be > 0)
and the exact uint8 pixels the teacher was given, batch by batch (what decides its outputs; those outputs' own
bits can differ on another CPU). The manifest hashes were regenerated without the FLOP count (review 2, L2).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import pickle
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from safetensors import safe_open

import distill.teacher.cache.build as build
import distill.teacher.cache.pixels as pixels
from distill.data.folder import DomainFolder
from distill.data.unlabeled import add_folders, scan_folders
from distill.data.view_policy import preset
from distill.errors import DistillError
from distill.records import CACHE_MANIFEST
from distill.teacher.cache import PixelOptions, build_cache, make_plan, shard_name
from distill.teacher.cache.shards import ResumableShards
from tests.teacher.cache.common import SETTINGS, demo_teacher, make_tree

COLUMNS = ("sample_index", "view", "view_params", "mix_partner", "mix_view", "domain", "label", "split")
MIX = dataclasses.replace(SETTINGS, views=3, policy=preset("fm", mixup=1.0, cutmix=1.0))


def _cam(folder: Path, images: int = 5, seed: int = 7) -> Path:
    """Noise PNGs outside the root (an unlabeled folder), flat and nested."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(images):
        path = folder / ("" if i % 2 else "day") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(24, 64, 2))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return folder


def digest(out: Path, fed: list[str]) -> dict[str, str]:
    """sha256 of each shard's non-teacher columns and skipped images, of the manifest (less its time, paths, and
    hashes of floats or of file sizes) and of the teacher's uint8 inputs (``fed``, in the order given)."""
    got = {}
    for f in sorted(out.glob("shard-*.safetensors")):
        h = hashlib.sha256()
        with safe_open(str(f), "np") as st:
            for key in COLUMNS:
                t = st.get_tensor(key)
                h.update(f"{key} {t.dtype} {t.shape}\n".encode() + t.tobytes())
            h.update(json.dumps(st.metadata(), sort_keys=True).encode())
        got[f.name] = h.hexdigest()
    for f in sorted(out.glob("pixels-*/shard-*.safetensors")):  # decoded and resized views: no float teacher
        got[f"{f.parent.name}/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    m = json.loads((out / CACHE_MANIFEST).read_text())
    for key in ("created", "text_embeddings_sha256", "distill_version"):
        m.pop(key)
    for key in ("root", "fingerprint", "files_sha256"):  # the last two hash the PNGs' sizes: zlib's, not ours
        m["dataset"].pop(key)
    for folder in m["dataset"].get("unlabeled_folders") or []:
        folder.pop("files_sha256"), folder.pop("path")
    m["teacher"] = {k: v for k, v in m["teacher"].items() if k in ("arch", "pretrained")}
    # torch.utils.flop_counter's count depends on the torch version (distill/utils/flops.py), as torch_version does
    flops = m.pop("teacher_flops_per_image")
    assert isinstance(flops, int) and flops > 0
    for shard in m["shards"]:
        shard.pop("sha256")
    got["manifest"] = hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()
    got["teacher_inputs"] = hashlib.sha256("".join(fed).encode()).hexdigest()
    return got


def scenario(name: str, top: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Build the tiny cache of scenario ``name`` under ``top``; its :func:`digest`."""
    fed: list[str] = []
    feed = build.teacher_input

    def hashed(x, mean, std):  # the uint8 batch the teacher is given
        fed.append(hashlib.sha256(x.contiguous().numpy().tobytes()).hexdigest())
        return feed(x, mean, std)

    monkeypatch.setattr(build, "teacher_input", hashed)
    data = make_tree(top / "data")
    options, workers, skip_bad = SETTINGS, 0, False
    if name in ("mix", "mix_bad"):  # mixup/cutmix, an unlabeled folder (its own partner pool), a decode worker
        options, workers = MIX, 1
    if name == "mix_bad":  # a bad image: skipped, and a view mixed with it left unmixed
        (data / "photo" / "cat" / "4_bad.jpg").write_bytes(b"")
        skip_bad = True
    ds = DomainFolder(data)
    if name in ("mix", "mix_bad"):
        add_folders(ds, scan_folders([str(_cam(top / "cam"))], data, "--unlabeled"))
    teacher = demo_teacher(ds.classes)
    out = top / "cache"
    build_cache(ds, teacher, out, options, num_workers=workers, skip_bad=skip_bad, progress=False,
                pixels=PixelOptions(((16, 16),)) if name != "resumed" else None)  # and its pixel store
    if name == "resumed":  # an interrupted build: the manifest and some shards gone; the rest kept
        (out / CACHE_MANIFEST).unlink()
        for k in (1, 4, 9):
            (out / shard_name(k)).unlink()
        fed.clear()
        build_cache(ds, teacher, out, options, num_workers=1, progress=False)
    return digest(out, fed)


# What main's code (f3340c3) wrote for each scenario: must never change.
MAIN: dict[str, dict[str, str]] = {
    "crops": {
        "shard-00000.safetensors": "32404f7801b3c5b36a0146a210e9af2a36ada8460cdf19039a562704d2ff96b3",
        "shard-00001.safetensors": "4f9b5ebe5079c0c3e86c8ba6b68ee2575ec5b168ec4c8f905a02243b41b4a69c",
        "shard-00002.safetensors": "b53b1c39bbe5bc80e9df9fe07a567ac9cd59bbced92f81ef7b6ff27ccfa5304c",
        "shard-00003.safetensors": "4a32c12d60bbeb37110abf69c984343a7bf2158ce50a584e350246ce362ea5fc",
        "shard-00004.safetensors": "5ad77c1e4ef30f13dcf8ac3c23258787aaa0cf59ec29638733df2a75d444b495",
        "shard-00005.safetensors": "cd4850a9c96c5242a1667ad3c10f2dfa85299a88c18075b6a2c152eec8c04bb6",
        "shard-00006.safetensors": "f8d5af94f5aece2ed055b20199c364088487241b1947c7f1563f070d8e253990",
        "shard-00007.safetensors": "5a83bd057aa2a9efd8d58b8f08e65326891b63fb1b16e151b6cb1c353140bd66",
        "shard-00008.safetensors": "3b6ca452ff00db4ac5a372290ae214b8bf02c1248059461af126c2fbe5b7fe2b",
        "shard-00009.safetensors": "8ab6c78e1876880efc5f8fe04f2b5bf1d27c1bc82c4d305af972d94431404fda",
        "pixels-16x16-bicubic/shard-00000.safetensors":
            "d8df5973efdcf5fe71246281be147db5c6a6869f6fc6447c8017ca7f52c6ff32",
        "pixels-16x16-bicubic/shard-00001.safetensors":
            "c00bb39658c748c901979ee2b2139db5fc5e8af69d29d023e451c7067af29682",
        "pixels-16x16-bicubic/shard-00002.safetensors":
            "3aa74e961e7beef3f561628f36aac8c92186c258c42c6c93ada3c48c6ca22276",
        "pixels-16x16-bicubic/shard-00003.safetensors":
            "a5ea96604eca81b9eee7d7dd50d8530c0319244fff10364b8624a219bb03893b",
        "pixels-16x16-bicubic/shard-00004.safetensors":
            "8e35c52737eb34ea5326152f8f9429d2c2a16550a05f65c62185d29e64014ed5",
        "pixels-16x16-bicubic/shard-00005.safetensors":
            "e38197e0b4dfc6c2477ebcd9a59b298fce3ac6e0adac640e5d66ecdaf690bc54",
        "pixels-16x16-bicubic/shard-00006.safetensors":
            "3295903d3019af345c56776f45dceaba49c77878b9f56e08404f93a7ba0efd10",
        "pixels-16x16-bicubic/shard-00007.safetensors":
            "bb53aa76a485765bedb43fc3168414aecb425b64c282b4cb26991b21a0a76173",
        "pixels-16x16-bicubic/shard-00008.safetensors":
            "b3add503782957f0ac951b374cbb10d307ef57271b694b2b1874be6dd7faf873",
        "pixels-16x16-bicubic/shard-00009.safetensors":
            "e2b20f4bc18e6c6a6317ef6f145d55a6dea89ca36f5bec2c5651021d437a0009",
        "manifest": "f284400cb6af0bff2fb22745af09841c29f801927bd604d19702f4b1bdb80123",
        "teacher_inputs": "6eb295a48ccad9e42fc047aba872d847e7f17fea378586d2b3a3df137b3213d0",
    },
    "mix": {
        "shard-00000.safetensors": "de5e5b1d6c90a6f58eea109f08614681d19a3eaf078e3cf329d7124c5cc224a1",
        "shard-00001.safetensors": "a5efdd61a0bb47cbd131abfd0462e2d6b350b8f524b6e35661a22ca3acfcc59e",
        "shard-00002.safetensors": "2a5d681bd89a0007d249faa68124fff14d21cfba5b303a429a6f16f3882daed2",
        "shard-00003.safetensors": "17ca50a3cc02a4f833a9f39a3273d832bed44a1f22670c6fb949702f0a9ee456",
        "shard-00004.safetensors": "488ceaaded8fddd482c1e94402a5e90997d397a6594f5d5e3b1139efd9f5b865",
        "shard-00005.safetensors": "420d34e098c7586d28337d6205359a133385bb3c43acee8b20f5923ccad7512b",
        "shard-00006.safetensors": "4dcf5155b55bfa0ac059683b0d6c2519681933a6481c3c449b4b0441fc58835f",
        "shard-00007.safetensors": "fe5e66e28adb0a4368ae2fec2d8f3cfed33923ae4953eeda42c0192157fb1f9e",
        "shard-00008.safetensors": "5200dc1f2e9448550d5e21bb4f73ba9af8fe72da3008f51e84e91e0c3aad777c",
        "shard-00009.safetensors": "4e7df9bd1a06134f0af732702e095a40af057116f2657074100128da14f4ccbb",
        "shard-00010.safetensors": "20d277ffb8109d139b75e15bfa198723e3eeec6180a2e11bd89a92b06aa3a17c",
        "shard-00011.safetensors": "01186d3f30a32f89b532ec984a58accff383e886b48bb5903f6a275db30babe5",
        "pixels-16x16-bicubic/shard-00000.safetensors":
            "876c4f6e4dada8171a61f347ad238b9c711afdd353306f24b6ceb4553fe0ed35",
        "pixels-16x16-bicubic/shard-00001.safetensors":
            "5b176b789247df02d696b64d251abaf8a6f42e6ea5b0082abb8f30475caae88d",
        "pixels-16x16-bicubic/shard-00002.safetensors":
            "4cceb72ffb8f1fac54f1a95bb5e12048e3510f9890a9603cb9c9367076851e7f",
        "pixels-16x16-bicubic/shard-00003.safetensors":
            "30e43a834b67e2cddef76180caabf9f9d6ff47939fd1be0a15293bbfea263434",
        "pixels-16x16-bicubic/shard-00004.safetensors":
            "8cab8014493ecf38d7dcf91f9cf5f3b562aeaf351a1915cbd80832b761c92a89",
        "pixels-16x16-bicubic/shard-00005.safetensors":
            "7520f92a0c52737f9f2579d1286dd50b9f307b069807c6c919a8b0b95dfd58cc",
        "pixels-16x16-bicubic/shard-00006.safetensors":
            "bcdf8ba441a87d39cc50946b67314e5f93445320ff75eab3a71b073c1e501be5",
        "pixels-16x16-bicubic/shard-00007.safetensors":
            "c0bf6909628c2c37bd3ce3981ea20efa45a046c223a02b0344bc378d09506d17",
        "pixels-16x16-bicubic/shard-00008.safetensors":
            "4ab9a748d335dcf3c9119adea468c75673125a717611249db228247a7b88e0bf",
        "pixels-16x16-bicubic/shard-00009.safetensors":
            "4b31f9029de3e0ecc53a457c610428597f3bf02f0b8e5f1d1d61f2a1bc3756d9",
        "pixels-16x16-bicubic/shard-00010.safetensors":
            "5128346514513b860848ed0472302b5532e2fedd390600ab93979166b43132ef",
        "pixels-16x16-bicubic/shard-00011.safetensors":
            "c3749096221b6980a4ad70b94aa84942fa3c263727b0b5f0d3b001871d823120",
        "manifest": "d1a133332d8d492690fa0dbd5e7ba732e0f3274601821278974568c821245637",
        "teacher_inputs": "2ce8430af33a54ffa425375eef27e6499df7d27c1c186f2aa66b012507f01b7c",
    },
    "mix_bad": {
        "shard-00000.safetensors": "de5e5b1d6c90a6f58eea109f08614681d19a3eaf078e3cf329d7124c5cc224a1",
        "shard-00001.safetensors": "a5efdd61a0bb47cbd131abfd0462e2d6b350b8f524b6e35661a22ca3acfcc59e",
        "shard-00002.safetensors": "2a5d681bd89a0007d249faa68124fff14d21cfba5b303a429a6f16f3882daed2",
        "shard-00003.safetensors": "0c518df3fe5a8e206e7dca5738042f6acccef4b3c697ab1a64b228eee18e94ca",
        "shard-00004.safetensors": "29960a724a55dc050b51d52a8b1f6a69a6d4117d89c02e8748b5126376ff3dd8",
        "shard-00005.safetensors": "1ae7febf941d4a7a43e40bca8b419e1a16acc8edf3a873d4c33689e78d26ea44",
        "shard-00006.safetensors": "2b790af3bbe54cd93018f7e3018dad921c2c29aebe77e997c3a0dd7c28359fed",
        "shard-00007.safetensors": "13ba3d7f496400c5b3d6448557d8980248a492fd92edc4b1175ad5f71dca56c6",
        "shard-00008.safetensors": "9a8cd0a3904d2f37f01f9a4fed484c2340e2a8000c86417f9a1003b192152a9e",
        "shard-00009.safetensors": "b9cefb47dd00f5bb5fbbfe83e91a11d5c9beb8dd8065db5d7ff4c81765835f6b",
        "shard-00010.safetensors": "55e60618874413ab74fb695a86ed7c0c442cce04f333fc30d7700821d384fa95",
        "shard-00011.safetensors": "8bff30df4a853dca83dd15009c845d939c26032c23345e4349163ad149f047d7",
        "pixels-16x16-bicubic/shard-00000.safetensors":
            "876c4f6e4dada8171a61f347ad238b9c711afdd353306f24b6ceb4553fe0ed35",
        "pixels-16x16-bicubic/shard-00001.safetensors":
            "5b176b789247df02d696b64d251abaf8a6f42e6ea5b0082abb8f30475caae88d",
        "pixels-16x16-bicubic/shard-00002.safetensors":
            "4cceb72ffb8f1fac54f1a95bb5e12048e3510f9890a9603cb9c9367076851e7f",
        "pixels-16x16-bicubic/shard-00003.safetensors":
            "5d661c77b58d78f9348e405a02bc668dcd64c05520ca03fa8e29b4a07070766d",
        "pixels-16x16-bicubic/shard-00004.safetensors":
            "1bc186648bbc659d88ab6e5a89b9a3832ae6e34f43270d32348923a00ff60bfc",
        "pixels-16x16-bicubic/shard-00005.safetensors":
            "dc90146128ab57cbeb0359507460c2a32b778b4f3b3be7997c7767b9b7fc6210",
        "pixels-16x16-bicubic/shard-00006.safetensors":
            "9957f2e92eba4e1bc5b5c32536bed6d8e53985309b0f65d52aea4b962f138667",
        "pixels-16x16-bicubic/shard-00007.safetensors":
            "1c99c73e563ce4bdaac368d97b134ee9a9d7fd8395f69dc13d6517c9b28e4b77",
        "pixels-16x16-bicubic/shard-00008.safetensors":
            "f1863359025a174f6c816a58ec3e6939597733640522d774df19c0fbea102fc3",
        "pixels-16x16-bicubic/shard-00009.safetensors":
            "c4b58f24d51a649910a02e937bbbc67f38515ac49f1ea0df739c259f501b3e3f",
        "pixels-16x16-bicubic/shard-00010.safetensors":
            "76cfa3c61c875eabf6dab978f956436834cf0b8c8d7fae2fe22c1305e8617086",
        "pixels-16x16-bicubic/shard-00011.safetensors":
            "abd9ce28537062e23d7029b19a89ae13b0e0eefa6e8fabd15265a72800a9a36d",
        "manifest": "f899206d797432398b6d966cf8b68a15a8d6c972ad34ac5f96a335ba8a75ed45",
        "teacher_inputs": "f37ad40a0341e46ba86787cb56ae4801efa763b296f4a41f82d6489a140e4f60",
    },
    "resumed": {
        "shard-00000.safetensors": "32404f7801b3c5b36a0146a210e9af2a36ada8460cdf19039a562704d2ff96b3",
        "shard-00001.safetensors": "4f9b5ebe5079c0c3e86c8ba6b68ee2575ec5b168ec4c8f905a02243b41b4a69c",
        "shard-00002.safetensors": "b53b1c39bbe5bc80e9df9fe07a567ac9cd59bbced92f81ef7b6ff27ccfa5304c",
        "shard-00003.safetensors": "4a32c12d60bbeb37110abf69c984343a7bf2158ce50a584e350246ce362ea5fc",
        "shard-00004.safetensors": "5ad77c1e4ef30f13dcf8ac3c23258787aaa0cf59ec29638733df2a75d444b495",
        "shard-00005.safetensors": "cd4850a9c96c5242a1667ad3c10f2dfa85299a88c18075b6a2c152eec8c04bb6",
        "shard-00006.safetensors": "f8d5af94f5aece2ed055b20199c364088487241b1947c7f1563f070d8e253990",
        "shard-00007.safetensors": "5a83bd057aa2a9efd8d58b8f08e65326891b63fb1b16e151b6cb1c353140bd66",
        "shard-00008.safetensors": "3b6ca452ff00db4ac5a372290ae214b8bf02c1248059461af126c2fbe5b7fe2b",
        "shard-00009.safetensors": "8ab6c78e1876880efc5f8fe04f2b5bf1d27c1bc82c4d305af972d94431404fda",
        "manifest": "f284400cb6af0bff2fb22745af09841c29f801927bd604d19702f4b1bdb80123",
        "teacher_inputs": "7674356a6d706d9cb7cbd852a9acbd498941b76907f6d79713d314c10c5946a6",
    },
}


@pytest.mark.parametrize("name", ["crops", "mix", "mix_bad", "resumed"])
def test_the_cache_is_mains_bit_for_bit(name, tmp_path, monkeypatch):
    assert scenario(name, tmp_path, monkeypatch) == MAIN[name]


# ---------------------------------------------------------------------- memory
def _kept(set_up: Callable[[], None], held: list) -> tuple[int, tuple]:
    """(memory blocks allocated by ``set_up()`` that the (dataset, batch sampler) it left in ``held`` keep: freed
    when that pair is dropped, the pair's lengths)."""
    tracemalloc.start()
    try:
        set_up()
        gc.collect()
        with_them = tracemalloc.take_snapshot()
        data, batches = held.pop()
        lengths = (len(data), len(batches), sum(1 for _ in batches))
        del data, batches
        gc.collect()
        without = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.count_diff for stat in with_them.compare_to(without, "filename")), lengths


def _structures(n: int, top: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, tuple]:
    """:func:`_kept` of a build's set-up over ``n`` images (its DataLoader's dataset and batch sampler), under a mixing
    policy; no image decoded, the teacher never run."""
    for i in range(n):
        path = top / f"d{i % 2}" / f"c{i % 3}" / f"img_{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    ds = DomainFolder(top)
    teacher = demo_teacher(ds.classes)
    options = dataclasses.replace(MIX, shard_size=64, batch_size=12)
    plan = make_plan(ds, teacher, options)
    shards = ResumableShards(top / "cache", 0, 1)
    held: list = []

    def loader(data, batch_sampler, **kw):
        held.append((data, batch_sampler))
        return []

    monkeypatch.setattr(build, "WorkerLoader", loader)
    return _kept(lambda: [*build._shards(ds, teacher, shards, plan, list(range(plan.num_shards)), False, 0, False)],
                 held)


def test_the_builds_structures_hold_nothing_per_image(tmp_path, monkeypatch):
    """main's held ~8 Python objects an image (pairs, paths, dict entries, positions); these, a few arrays."""
    (small, _), (large, lengths) = (_structures(n, tmp_path / str(n), monkeypatch) for n in (20, 2000))
    assert large - small < 30, (small, large)  # main's: > 10000 more
    # 2000 images in shards of 64 (the last one 16), batches of 12 // 3 views = 4 images: 31 * 16 + 4
    assert lengths == (2000, 500, 500)


def test_sample_files_are_the_datasets_paths_also_when_pickled(tmp_path):
    """Position -> (index, path) and index -> path, for ROOT's images and an unlabeled folder's, in a selection."""
    data = make_tree(tmp_path / "data")
    ds = DomainFolder(data)
    add_folders(ds, scan_folders([str(_cam(tmp_path / "cam"))], data, "--unlabeled"))
    samples = ds.select(["photo", "cam"])
    for files in (ds.files(samples), pickle.loads(pickle.dumps(ds.files(samples)))):
        assert len(files) == len(samples) == 15
        assert [(files.index(p), files.path(p)) for p in range(len(files))] == [(s.index, ds.path(s)) for s in samples]
        assert [files.path_of_index(s.index) for s in samples] == [ds.path(s) for s in samples]
        with pytest.raises(IndexError):
            files.path(len(samples))
        with pytest.raises(KeyError):
            files.path_of_index(10 ** 6)


class _Stop(Exception):
    pass


def _pixel_structures(n: int, top: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, tuple]:
    """:func:`_kept` of a pixel store's set-up over a cache of ``n`` images (its DataLoader's dataset and batch
    sampler); nothing decoded for the store."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = top / "data" / f"d{i % 2}" / f"c{i % 3}" / f"img_{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    ds = DomainFolder(top / "data")
    options = dataclasses.replace(SETTINGS, views=1, shard_size=64, batch_size=64)
    out = build_cache(ds, demo_teacher(ds.classes), top / "cache", options, num_workers=0, progress=False)
    held: list = []

    def loader(data, batch_sampler, **kw):
        held.append((data, batch_sampler))
        raise _Stop

    monkeypatch.setattr(pixels, "WorkerLoader", loader)
    def set_up() -> None:
        with contextlib.suppress(_Stop):
            pixels.build_pixel_store(ds, out, (8, 8), batch_size=8, num_workers=0, progress=False)

    return _kept(set_up, held)


def test_the_pixel_stores_structures_hold_nothing_per_image(tmp_path, monkeypatch):
    """main's held a job per image (its path, two tensor views of its rows) and a list of positions per batch."""
    (small, _), (large, lengths) = (_pixel_structures(n, tmp_path / str(n), monkeypatch) for n in (20, 500))
    assert large - small < 30, (small, large)  # main's: > 2000 more
    assert lengths == (500, 7 * 8 + 7, 7 * 8 + 7)  # shards of 64 (the last 52) in batches of 8


def test_a_partner_row_the_cache_lacks_is_refused_before_decoding(tmp_path):
    """The pixel store checks every mixed row's partner in its set-up pass (one line naming the sample)."""
    from safetensors.torch import save_file

    ds = DomainFolder(make_tree(tmp_path / "data"))
    out = build_cache(ds, demo_teacher(ds.classes), tmp_path / "cache", MIX, num_workers=0, progress=False)
    path = out / shard_name(4)
    with safe_open(str(path), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    mixed = tensors["mix_partner"] >= 0
    assert mixed.any()
    tensors["mix_partner"][mixed] = 10 ** 6  # a partner no row holds
    save_file(tensors, str(path), metadata=meta)
    first = int(tensors["sample_index"][mixed][0])
    with pytest.raises(DistillError, match=rf"^{out}: sample {first} is mixed with a row the cache does not hold; "
                                           "rebuild the cache$"):
        pixels.build_pixel_store(ds, out, (8, 8), num_workers=0, progress=False)
