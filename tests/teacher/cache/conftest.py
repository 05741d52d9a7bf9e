"""Fixtures of the teacher-cache tests, shared by the package: one tree, one teacher, one reference build."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.data.folder import DomainFolder
from distill.teacher.cache import build_cache
from distill.teacher.clip import Teacher
from tests.teacher.cache.common import SETTINGS, demo_teacher, make_tree


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Package-wide, so the package-scoped builds below also run on one thread (as torchrun ranks do)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="package")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "data")


@pytest.fixture(scope="package")
def dataset(tree) -> DomainFolder:
    return DomainFolder(tree)


@pytest.fixture(scope="package")
def teacher(dataset) -> Teacher:
    return demo_teacher(dataset.classes)


@pytest.fixture(scope="package")
def reference(dataset, teacher, tmp_path_factory) -> Path:
    """The reference build (:data:`SETTINGS`); read-only for every test."""
    return build_cache(dataset, teacher, tmp_path_factory.mktemp("ref") / "cache", SETTINGS, num_workers=0,
                       progress=False)
