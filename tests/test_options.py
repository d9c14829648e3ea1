"""Settings objects own their defaults: the flags of `finetune` and `evaluate` are derived from
FinetuneConfig and EvaluateConfig, and the API checks names and values against them."""

from __future__ import annotations

import dataclasses

import pytest

from mammodissect.cli import build_parser
from mammodissect.errors import MammodissectError
from mammodissect.evaluate import EvaluateConfig, evaluate
from mammodissect.finetune import FinetuneConfig, finetune
from mammodissect.options import build, flag_values

FINETUNE = ["finetune", "--model", "m", "--probe", "p", "--task", "mass", "--out", "o"]


def _config(cls: type, argv: list[str]) -> object:
    return cls(**flag_values(build_parser().parse_args(argv), cls))


@pytest.mark.parametrize(
    ("cls", "argv"), [(FinetuneConfig, FINETUNE), (EvaluateConfig, ["evaluate", "run"])]
)
def test_flags_without_values_give_the_dataclass_defaults(cls: type, argv: list[str]) -> None:
    assert _config(cls, argv) == cls()
    parser_dests = vars(build_parser().parse_args(argv))
    flagged = [f.name for f in dataclasses.fields(cls) if "help" in f.metadata]
    assert set(flagged) <= set(parser_dests)  # every documented setting has its flag


def test_finetune_flags_turn_settings_over() -> None:
    config = _config(FinetuneConfig, [
        *FINETUNE, "--epochs", "3", "--lr", "0.001", "--no-augment", "--no-image-cache",
        "--quiet", "--overwrite", "--split", "column", "--image-size", "64x48",
    ])  # fmt: skip
    assert config == FinetuneConfig(
        epochs=3, lr=0.001, augment=False, cache_images=False, progress=False,
        overwrite=True, split="column", image_size="64x48",
    )  # fmt: skip


def test_evaluate_flags_parse_lists() -> None:
    config = _config(EvaluateConfig, [
        "evaluate", "run", "--noise", "0.05", "--head-classes", "A, B,C", "--null-seeds", "2",
        "--max-samples", "100", "--quiet",
    ])  # fmt: skip
    assert config.noise == (0.05,) and config.head_classes == ("A", "B", "C")
    assert (config.null_seeds, config.max_samples, config.quiet) == (2, 100, True)
    assert _config(EvaluateConfig, ["evaluate", "run", "--noise", "none"]).noise == ()
    assert config.write  # the API-only switch gets no flag and keeps its default


def test_a_bad_list_names_its_flag() -> None:
    with pytest.raises(MammodissectError, match=r"--noise must be comma-separated numbers"):
        build_parser().parse_args(["evaluate", "run", "--noise", "0.1,loud"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: finetune("m", "p", "mass", "o", epoch=2),
         r"unknown setting 'epoch' in finetune\(\); did you mean 'epochs'\?"),
        (lambda: evaluate("run", null_seed=2),
         r"unknown setting 'null_seed' in evaluate\(\); did you mean 'null_seeds'\?"),
        (lambda: finetune("m", "p", "mass", "o", lr=0), r"finetune lr must be a number > 0, got 0"),
        (lambda: finetune("m", "p", "mass", "o", split="patients"), r"split 'patients' is unknown"),
        (lambda: finetune("m", "p", "mass", "o", epochs=True), r"epochs must be a whole number"),
        (lambda: evaluate("run", quantile=1.5), r"quantile must be a number in \(0, 1\), got 1.5"),
        (lambda: evaluate("run", noise=[0.01, -1]), r"noise levels must be numbers > 0"),
        (lambda: evaluate("run", EvaluateConfig(), bootstrap=-1), r"bootstrap must be a whole"),
        (lambda: evaluate("run", FinetuneConfig()), r"type EvaluateConfig, got FinetuneConfig"),
    ],
)  # fmt: skip
def test_settings_are_checked_before_any_work(call, message: str) -> None:
    with pytest.raises(MammodissectError, match=message):
        call()


def test_options_replace_a_given_config_and_leave_it_alone() -> None:
    base = EvaluateConfig(bootstrap=10, seed=3)
    assert build(EvaluateConfig, base, {"seed": 4}, "x") == EvaluateConfig(bootstrap=10, seed=4)
    assert base.seed == 3
    assert build(EvaluateConfig, None, {}, "x") == EvaluateConfig()


def test_dissect_documents_every_run_setting() -> None:
    from mammodissect import RunConfig, dissect

    positional = {"target", "dissector", "probe", "concepts", "layers", "out"}
    missing = [
        name for name in RunConfig.field_names()
        if name not in positional and f"``{name}``" not in (dissect.__doc__ or "")
    ]  # fmt: skip
    assert missing == []
