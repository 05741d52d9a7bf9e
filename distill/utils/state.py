"""Save nested training state (optimizer, scheduler, RNG, counters) without pickle.

Tensors go to one safetensors file; everything else (the nesting, ints, floats, strings,
tuples) to a JSON skeleton beside it that references tensors by key. This is what lets a
killed run resume exactly while never unpickling a file. A tensor that is a
:class:`~distill.utils.rowfile.RowFile`'s (per-sample arrays that grow with the data set) is not copied
into the safetensors file: the file is linked beside it as ``<name>.rows-<key>.bin`` (raw, its shape and
dtype in the skeleton) and comes back as a tensor over it, memory-mapped copy-on-write.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill.errors import DistillError
from distill.utils.io import atomic_write, atomic_write_json, read_json
from distill.utils.rowfile import RowFile


def _flatten(obj: Any, tensors: dict[str, torch.Tensor], files: dict[str, RowFile]) -> Any:
    rows = RowFile.backing(obj) if isinstance(obj, torch.Tensor) else None
    if rows is not None:
        key = f"r{len(files)}"
        files[key] = rows
        return {"__rows__": key, "shape": list(rows.shape), "dtype": str(rows.dtype)}
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors, files), _flatten(v, tensors, files)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_flatten(v, tensors, files) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors, files) for v in obj]
    if hasattr(obj, "tolist") and type(obj).__module__ == "numpy":  # numpy arrays / scalars
        arr = np.asarray(obj)
        return {"__ndarray__": arr.tolist(), "dtype": str(arr.dtype)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot serialize {type(obj).__name__} in training state")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor], path: Path) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors, path) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__rows__" in obj:
            return RowFile.open(_rows_path(path, obj["__rows__"]), tuple(obj["shape"]), np.dtype(obj["dtype"]))
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors, path) for v in obj["__tuple__"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__dict__" in obj:
            return {_unflatten(k, tensors, path): _unflatten(v, tensors, path) for k, v in obj["__dict__"]}
    return obj


def _rows_path(path: Path, key: str) -> Path:
    return path.with_suffix(f".rows-{key}.bin")


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``path.safetensors`` + ``path.json`` atomically (JSON last: it marks completeness), and link each
    RowFile's tensor beside them (:meth:`RowFile.save_to`: a hard link where the file system allows, else a copy)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    files: dict[str, RowFile] = {}
    skeleton = _flatten(state, tensors, files)
    for key, rows in files.items():
        _rows_path(path, key).unlink(missing_ok=True)
        rows.save_to(_rows_path(path, key))
    atomic_write(path.with_suffix(".safetensors"), lambda p: save_file(tensors, str(p)))
    atomic_write_json(path.with_suffix(".json"), skeleton)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    tensors = load_file(str(path.with_suffix(".safetensors")))
    return _unflatten(read_json(path.with_suffix(".json")), tensors, path)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, then every per-parameter tensor laid out like its parameter.

    Saved tensors are contiguous (safetensors), while a channels_last parameter's moments were made
    with its strides. The fused AdamW kernels need the two to match: on CUDA a resumed run stopped with
    "params, grads, exp_avgs, and exp_avg_sqs must have same dtype, device, and layout" (found on an
    H200), and the fused CPU kernel silently paired each moment with the wrong element.
    A state with another number of parameter groups (a run started before the student trainer split
    its parameters into timm's decay/no-decay groups) is refused in one line.
    """
    saved, now = len(state.get("param_groups", [])), len(optimizer.param_groups)
    if saved != now:
        raise DistillError(f"optimizer state has {saved} parameter group(s), this optimizer {now}: the run was "
                           "started by another distill version (weight-decay groups differ); start a new run")
    optimizer.load_state_dict(state)
    for param, slots in optimizer.state.items():
        for key, value in slots.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                slots[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)  # param's strides


def rng_state() -> dict[str, Any]:
    """All RNG states a CPU/GPU training step touches."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
