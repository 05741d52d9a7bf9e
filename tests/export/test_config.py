"""distill.export.config: ExportConfig parses what the CLI passes and refuses a bad value in one line naming it."""
from __future__ import annotations

import pytest

from distill.cli import build_parser
from distill.cli.export import FLAGS, config_options
from distill.errors import DistillError
from distill.export import ExportConfig


def _cli_config(*flags: str) -> ExportConfig:
    args = build_parser().parse_args(["export", "ckpt", "--out", "out", *flags])
    return ExportConfig.from_options(config_options(args), names=FLAGS)


def test_cli_defaults_are_the_config_defaults() -> None:
    assert _cli_config() == ExportConfig()


def test_lists_and_profiles_are_parsed() -> None:
    cfg = _cli_config("--precision", "FP32, int8,fp32", "--eval-domains", "a", "b,c", "--trt-batches", "2,4,8",
                      "--eval-count", "0", "--no-build-engine", "--embedding")
    assert cfg.precisions == ("fp32", "int8") and cfg.eval_domains == ("a", "b", "c")
    assert cfg.trt_batches == (2, 4, 8) and cfg.eval_count is None  # 0 = every test image
    assert cfg.build_engines is False and cfg.with_embedding is True
    assert cfg.target_domains is None  # unset: the run's unlabeled pool domains (training_run.with_run_defaults)


def test_target_domains_flag_alone_means_none() -> None:
    """``--target-domains`` with no value is an explicit "no target domains", which the run's default must not fill."""
    assert _cli_config("--target-domains").target_domains == ()
    assert _cli_config("--target-domains", "a", "b,c").target_domains == ("a", "b", "c")


@pytest.mark.parametrize("flags,named", [
    (["--precision", "fp32,int4"], "--precision: unknown precision(s) int4; choose from fp32, fp16, int8 "
                                   "(got 'fp32,int4')"),
    (["--calib-method", "kl"], "--calib-method: must be one of minmax, entropy, percentile (got 'kl')"),
    (["--int8-flavour", "arm"], "--int8-flavour: must be one of ort-cpu, tensorrt, both (got 'arm')"),
    (["--trt-batches", "1,x,3"], "--trt-batches: must be MIN,OPT,MAX integers (got '1,x,3')"),
    (["--trt-batches", "32,8,1"], "--trt-batches: TensorRT batches must be min <= opt <= max (>= 1) (got '32,8,1')"),
    (["--calib-count", "0"], "--calib-count: Input should be greater than or equal to 1 (got 0)"),
    (["--test-fraction", "1.5"], "--test-fraction: Input should be less than 1 (got 1.5)"),
    (["--opset", "16"], "--opset: Input should be greater than or equal to 17 (got 16)"),
])
def test_a_bad_flag_is_one_line_naming_flag_and_value(flags: list[str], named: str) -> None:
    with pytest.raises(DistillError) as e:
        _cli_config(*flags)
    assert str(e.value) == named


def test_python_callers_see_the_key() -> None:
    with pytest.raises(DistillError, match=r"^calib_method: must be one of .* \(got 'kl'\)$"):
        ExportConfig.from_options({"calib_method": "kl"})
    with pytest.raises(DistillError, match="unknown key 'calib_methd'"):
        ExportConfig.from_options({"calib_methd": "kl"})


def test_every_flag_sets_a_key() -> None:
    assert set(FLAGS) <= set(ExportConfig.model_fields)
    parser_dests = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["export"]._actions}
    assert {flag[2:].replace("-", "_") for flag in FLAGS.values()} <= parser_dests


def test_paths_are_kept_as_strings(tmp_path) -> None:
    cfg = ExportConfig(data_root=tmp_path, class_map=tmp_path / "c.yaml", caches=tmp_path / "cache")
    assert (cfg.data_root, cfg.class_map, cfg.caches) == (str(tmp_path), str(tmp_path / "c.yaml"),
                                                          (str(tmp_path / "cache"),))
    assert ExportConfig(caches=[tmp_path, "b"]).caches == (str(tmp_path), "b")


def test_updates_are_validated() -> None:
    cfg = ExportConfig()
    assert cfg.with_updates(test_fraction=0.2).test_fraction == 0.2 and cfg.test_fraction is None
    with pytest.raises(DistillError, match="test_fraction"):
        cfg.with_updates(test_fraction=2.0)


def test_int8_needs_data() -> None:
    with pytest.raises(DistillError, match="needs calibration images"):
        ExportConfig(precisions=("int8",)).check_data()
    ExportConfig(precisions=("int8",), data_root="data").check_data()
