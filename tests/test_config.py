"""TrainConfig in groups: every flag and key of before still works, one mapping path, checks beside their fields."""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

from selfdistill import cli
from selfdistill.cli import _parse, main
from selfdistill.config import GROUP_OF, GROUPS, TRAIN_OPTIONS, ConfigError, RunConfig, TrainConfig, config_dict
from selfdistill.continual.plan import parse_plan

BEFORE = json.loads((Path(__file__).parent / "fixtures" / "train_flags_619af6e.json").read_text())
"""The flags of ``selfdistill train --help`` and what tyro parsed from four argument lists, at 619af6e (flat)."""
ADDED_KEYS = {  # issue 28: evaluation during training, and the loss at the rollout temperature; issue 29: rollouts
    "eval_every": None,
    "forgetting_budget": None,
    "patience": None,
    "keep": [],
    "selection": None,
    "drift": True,
    "eval_limit": 24,
    "guard_base": None,
    "guard_stages": [],
    "loss_temperature": "none",
    "generation_batch_size": None,
}
ADDED_FLAGS = ["--" + k.replace("_", "-") for k in ADDED_KEYS] + ["--no-drift"]


def test_every_flag_of_before_is_listed_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    flags = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", capsys.readouterr().out)))
    assert sorted(set(flags) - set(ADDED_FLAGS)) == BEFORE["flags"]
    assert set(ADDED_FLAGS) <= set(flags)


@pytest.mark.parametrize("case", BEFORE["cases"], ids=lambda c: " ".join(c["args"][2:6]))
def test_every_flag_of_before_parses_to_the_same_value(case):
    cfg = _parse("train", TrainConfig, case["args"])
    parsed = config_dict(cfg)
    assert {k: v for k, v in parsed.items() if k not in ADDED_KEYS} == case["parsed"]
    assert {k: parsed[k] for k in ADDED_KEYS} == ADDED_KEYS  # options added since keep their defaults


def test_field_names_are_unique_across_groups_and_groups_are_not_fields():
    names = [f.name for cls in GROUPS.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(GROUP_OF)
    assert not set(GROUPS) & set(TRAIN_OPTIONS)
    assert set(TRAIN_OPTIONS) == set(GROUP_OF) | {"data", "method", "model"}


def test_output_is_a_path_however_it_is_given():
    assert RunConfig(output="runs/x").output == Path("runs/x")  # the dead line after `return` used to skip this
    assert TrainConfig(data="d", run=RunConfig(output="runs/x")).run.output == Path("runs/x")
    assert TrainConfig.from_mapping({"data": "d", "output": "runs/x"}).run.output == Path("runs/x")
    assert isinstance(TrainConfig.from_mapping({"data": "d", "data_dir": "/d"}).source.data_dir, Path)


def test_flat_nested_and_mixed_keys_make_the_same_config():
    flat = TrainConfig.from_mapping({"data": "d", "lr": "1e-4", "temperature": 0.5, "anchor-weight": 2})
    nested = TrainConfig.from_mapping(
        {"data": "d", "optim": {"lr": 1e-4}, "sampling": {"temperature": 0.5}, "replay": {"anchor_weight": 2.0}}
    )
    mixed = TrainConfig.from_mapping({"data": "d", "lr": 1e-4, "sampling": {"temperature": 0.5}, "anchor_weight": 2})
    assert flat == nested == mixed
    assert flat.optim.lr == 1e-4 and flat.sampling.temperature == 0.5 and flat.replay.anchor_weight == 2.0


def test_config_dict_is_flat_with_the_keys_of_before_and_reads_back():
    cfg = TrainConfig.from_mapping(BEFORE["cases"][0]["parsed"])
    # a config.json written before the groups loads (options added since take their defaults)
    assert config_dict(cfg) == BEFORE["cases"][0]["parsed"] | ADDED_KEYS
    assert list(config_dict(cfg)) == list(TRAIN_OPTIONS)
    assert TrainConfig.from_mapping(json.loads(json.dumps(config_dict(cfg)))) == cfg


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lrr": 1}, "unknown option 'lrr' (did you mean 'lr'?)"),
        ({"sampling": {"temprature": 1}}, "unknown option 'sampling.temprature' (did you mean 'temperature'?)"),
        ({"bogus": 1}, "unknown option 'bogus'"),
        ({"lr": 1e-4, "optim": {"lr": 1e-3}}, "optim.lr: lr is set twice (flat and in its group)"),
        ({"lr": "fast"}, "lr: expected a number, got 'fast'"),
        ({"lora": "yes"}, "lora: expected true/false, got 'yes'"),
        ({"method": "dpo"}, "method: expected one of sdft, sft, seqkd, got 'dpo'"),
    ],
)
def test_a_bad_key_or_type_is_one_line_naming_it(values, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_mapping({"data": "d", **values})
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temperature": 0}, "--temperature: must be > 0"),  # a group's own check
        ({"merge": True}, "--merge: needs --lora"),
        ({"divergence": "jsd", "support": "topk"}, "--divergence: jsd is not supported with --support topk"),
        ({"method": "sft", "teacher_mix": 0.5}, "--teacher-mix: is for --method sdft"),  # across groups
        ({"fsdp": True, "lora": True}, "--fsdp: shards full fine-tuning only"),
    ],
)
def test_checks_name_the_flag_as_users_write_it(values, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_mapping({"data": "d", **values})


def test_config_file_takes_nested_keys_and_flags_win(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: d.jsonl\nsampling: {temperature: 0.5}\nlr: 1.0e-4\nreport_to: [tensorboard]\n")
    cfg = _parse("train", TrainConfig, ["--config", str(path), "--lr", "2e-4"])
    assert (cfg.optim.lr, cfg.sampling.temperature, cfg.run.report_to, cfg.data) == (
        2e-4,
        0.5,
        ["tensorboard"],
        "d.jsonl",
    )


def test_config_file_checks_run_on_the_whole_command_line(tmp_path):
    """A file alone may not be valid (sft with teacher_mix) when the command line makes it so (--method sdft)."""
    path = tmp_path / "c.yaml"
    path.write_text("method: sft\nteacher_mix: 0.5\n")
    cfg = _parse("train", TrainConfig, ["--config", str(path), "--data", "d.jsonl", "--method", "sdft"])
    assert (cfg.method, cfg.teaching.teacher_mix) == ("sdft", 0.5)
    with pytest.raises(ValueError, match="--teacher-mix: is for --method sdft"):
        _parse("train", TrainConfig, ["--config", str(path), "--data", "d.jsonl"])


def test_plans_take_nested_keys_into_the_same_flat_overrides(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "p", "completion": "c"}\n')
    stages = [{"data": "d.jsonl", "test": "d.jsonl:exact", "steps": 1}]
    flat = parse_plan({"methods": {"sdft": {"lr": 1e-4, "temperature": 0.5}}, "stages": stages}, "p.yaml", tmp_path)
    nested = {"sdft": {"optim": {"lr": 1e-4}, "sampling": {"temperature": 0.5}}}
    grouped = parse_plan({"methods": nested, "stages": stages}, "p.yaml", tmp_path)
    assert flat.methods == grouped.methods == {"sdft": {"method": "sdft", "lr": 1e-4, "temperature": 0.5}}
    assert flat.fingerprint() == grouped.fingerprint()  # a partly done run resumes whichever way it is written


def test_cli_uses_no_private_tyro_api():
    assert not re.search(r"tyro\._", inspect.getsource(cli))
