"""Data by the names people use: a column mapping for data whose fields are named otherwise (JSONL and a saved
Hugging Face dataset), and hub dataset names that fail in one request when the hub says no or cannot be reached."""

from __future__ import annotations

import importlib.util
import json

import pytest

from selfdistill.cli import main
from selfdistill.data import DataError, is_hub_name, parse_columns, read_examples

ROWS = [
    {"question": "What is 2+3?", "answer": "5", "id": 1},
    {"question": "Capital of Peru?", "answer": "Lima", "id": 2},
]


def test_columns_map_our_fields_onto_theirs_in_jsonl(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    examples = read_examples(path, columns=parse_columns("prompt=question,completion=answer"))
    assert [(e.question, e.completion, e.answer) for e in examples] == [
        ("What is 2+3?", "5", "5"),
        ("Capital of Peru?", "Lima", "Lima"),
    ]


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="datasets not installed")
def test_columns_on_a_saved_dataset_and_training_from_it(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS * 2).save_to_disk(str(tmp_path / "qa"))
    examples = read_examples(tmp_path / "qa", columns={"prompt": "question", "completion": "answer"})
    assert len(examples) == 4 and examples[1].completion == "Lima"
    code = main(
        [
            "train",
            "--model",
            "tiny-random",
            "--data",
            str(tmp_path / "qa"),
            "--columns",
            "prompt=question,completion=answer",
            "--method",
            "sft",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--no-progress",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0 and (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("prompt", "is not FIELD=COLUMN"),
        ("query=question", "'query' is not one of"),
        ("prompt=a,prompt=b", "mapped twice"),
    ],
)
def test_bad_column_specs_are_one_line_and_exit_2(tmp_path, capsys, spec, message):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    code = main(["train", "--data", str(path), "--columns", spec, "--output", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and message in err[0] and not (tmp_path / "out").exists()


def test_a_column_the_data_lacks_names_file_line_and_columns(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(
        DataError, match=r"qa.jsonl:1: no column 'query' \(mapped to 'prompt'\); columns: question, answer, id"
    ):
        read_examples(path, columns={"prompt": "query", "completion": "answer"})


def test_hub_names_are_told_apart_from_mistyped_paths():
    assert is_hub_name("openai/gsm8k") and is_hub_name("openai/gsm8k:main:test") and is_hub_name("org/name:train")
    assert not is_hub_name("data/train.jsonl") and not is_hub_name("/abs/path") and not is_hub_name("bfcl")


@pytest.mark.skipif(importlib.util.find_spec("datasets") is None, reason="datasets not installed")
def test_an_unknown_or_unreachable_hub_dataset_fails_without_retries(no_hub_retries):
    with pytest.raises(DataError, match="someorg/no-such-dataset-xyz:train: no such file, and") as err:
        read_examples("someorg/no-such-dataset-xyz:train")
    assert "cannot be reached" in str(err.value) or "404" in str(err.value)
