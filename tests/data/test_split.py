"""The split rule is one object (SplitRule), passed whole; its flags are spelled once for every command."""
from __future__ import annotations

from pathlib import Path

import pytest

from distill.cli import build_parser
from distill.cli._split import split_rule_of
from distill.data.folder import DomainFolder
from distill.data.split import SplitRule
from distill.errors import DistillError
from tests.shapes import make_shapes_root


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_shapes_root(tmp_path_factory.mktemp("split"), ["red", "green"], per_class=6)


def test_a_folder_takes_the_rule_whole(root):
    rule = SplitRule(test_fraction=0.5, split_seed=1, val_fraction=0.2, pretrain_fraction=0.1)
    ds = DomainFolder(root, rule)
    assert ds.split == rule
    assert (ds.test_fraction, ds.split_seed, ds.val_fraction, ds.pretrain_fraction) == (0.5, 1, 0.2, 0.1)
    assert DomainFolder(root, rule, split_seed=2).split == rule.model_copy(update={"split_seed": 2})  # keys over it
    assert [s.split for s in DomainFolder(root, test_fraction=0.5, split_seed=1, val_fraction=0.2,
                                          pretrain_fraction=0.1).samples] == [s.split for s in ds.samples]
    with pytest.raises(DistillError, match="split rule: test_fraction must be in"):
        SplitRule.of(test_fraction=1.0)


@pytest.mark.parametrize("argv", [["cache", "build", "--data", "D", "--out", "O", "--arch", "A", "--pretrained", "P"],
                                  ["data", "summary", "D"], ["eval", "CKPT", "--data", "D"], ["export", "CKPT", "--out", "O"]])
def test_every_command_spells_the_split_flags_alike(argv):
    parser = build_parser()
    flags = ["--class-map", "m.yaml", "--test-fraction", "0.25", "--split-seed", "4", "--val-fraction", "0.2",
             "--pretrain-fraction", "0.15"]
    args = parser.parse_args(argv + flags)
    assert split_rule_of(args) == SplitRule(class_map="m.yaml", test_fraction=0.25, split_seed=4, val_fraction=0.2,
                                            pretrain_fraction=0.15)
    assert split_rule_of(parser.parse_args(argv)) == SplitRule()  # no flag: the defaults (or what the command reads)


def test_teacher_bootstrap_defaults_to_a_pool_it_accepts():
    """It defaulted to --pretrain-fraction 0, which it then refused ("a contrastive bootstrap needs at least 2")."""
    args = build_parser().parse_args(["teacher", "bootstrap", "--data", "D", "--out", "O"])
    assert args.pretrain_fraction > 0
