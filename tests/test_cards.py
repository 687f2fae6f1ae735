"""Model cards: every trained model directory (and OUTPUT/merged) gets a README.md in the Hugging Face card format
that names the base model, method, data and, once evaluated, the scores."""

from __future__ import annotations

import hashlib
import json

import torch
import yaml

from selfdistill.cli import main
from selfdistill.config import TrainConfig
from selfdistill.training.loop import train

FAST = {"model": "tiny-random", "batch_size": 2, "max_new_tokens": 8, "progress": False, "max_steps": 2}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_training_writes_a_card_naming_base_model_method_and_data(tmp_path, small_jsonl):
    out = train(
        TrainConfig.from_mapping(
            dict(data=str(small_jsonl), output=tmp_path / "run", method="sft", precision="fp32", **FAST)
        )
    )
    text = (out / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["base_model"] == "tiny-random" and meta["library_name"] == "selfdistill"
    assert "sft" in meta["tags"]
    assert "method **sft**" in text and "| lr | 1e-05 |" in text
    digest = hashlib.sha256(small_jsonl.read_bytes()).hexdigest()
    assert f"`small.jsonl` (file), 4 rows, sha256 `{digest}`" in text
    assert "2 optimizer steps" in text and "None yet" in text
    env = json.loads((out / "environment.json").read_text())
    assert env["precision"] == "fp32" and env["device"] == "cpu" and env["torch"] == torch.__version__
    assert f"## Compute\n\nfp32 on cpu ({env['cpu']}), 1 process; torch {env['torch']}" in text


def test_merged_lora_output_has_its_own_card_and_eval_adds_scores(tmp_path, small_jsonl):
    out = train(
        TrainConfig.from_mapping(dict(data=str(small_jsonl), output=tmp_path / "run", lora=True, merge=True, **FAST))
    )
    merged = _front_matter((out / "merged" / "README.md").read_text())
    assert merged["base_model"] == "tiny-random" and "lora" in merged["tags"]
    assert main(["eval", "--model", str(out), "--tasks", "record_json", "--limit", "3"]) == 0
    text = (out / "README.md").read_text()
    assert "| record_json | acc (subset of 3) |" in text and "| 3 | selfdistill eval |" in text
    assert _front_matter(text)["base_model"] == "tiny-random"  # re-rendered, not appended to


def test_the_embedded_model_is_named_by_its_hub_id(tmp_path):
    from selfdistill.cards import base_model

    assert base_model("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    run = tmp_path / "stage1"
    run.mkdir()
    (run / "train_config.json").write_text('{"model": "smollm2-135m-instruct"}')
    assert base_model(str(run)) == "HuggingFaceTB/SmolLM2-135M-Instruct"  # a later stage names the original base
