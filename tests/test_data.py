"""Reading and validating JSONL rows."""

from __future__ import annotations

import json

import pytest

from selfdistill.data import DataError, parse_row, read_jsonl


def _write(tmp_path, text: str | bytes, name="d.jsonl"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_fields_and_aliases(tmp_path):
    rows = [
        {"prompt": "a", "completion": "b"},
        {"prompt": "a", "demonstration": "b", "privileged_context": "doc", "answer": 3},
        {"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}], "response": "b"},
    ]
    examples = read_jsonl(_write(tmp_path, "\n".join(map(json.dumps, rows)) + "\n\n"))
    assert [e.completion for e in examples] == ["b", "b", "b"]
    assert examples[1].context == "doc" and examples[1].answer == 3
    assert examples[2].question == "a" and examples[2].messages[0]["role"] == "system"
    assert examples[0].source.endswith("d.jsonl:1")


def test_bom_is_accepted(tmp_path):
    path = _write(tmp_path, b"\xef\xbb\xbf" + json.dumps({"prompt": "a", "completion": "b"}).encode())
    assert read_jsonl(path)[0].question == "a"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"completion": "b"}, "missing field 'prompt'"),
        ({"prompt": "a"}, "missing the demonstration"),
        ({"prompt": "", "completion": "b"}, "empty string"),
        ({"prompt": 5, "completion": "b"}, "must be a string or a non-empty list"),
        ({"prompt": "a", "completion": 7}, "'completion' must be a string"),
        ({"prompt": [{"role": "robot", "content": "x"}], "completion": "b"}, "prompt[0].role"),
        ({"prompt": [{"role": "user"}], "completion": "b"}, "prompt[0].content"),
        ({"prompt": [{"role": "system", "content": "x"}], "completion": "b"}, "no 'user' message"),
        ({"prompt": "a", "completion": "b", "response": "c"}, "aliases"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_rows_name_the_line(tmp_path, row, message):
    good = json.dumps({"prompt": "a", "completion": "b"})
    path = _write(tmp_path, good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path}:2: ")
    assert message in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(DataError, match="no examples"):
        read_jsonl(_write(tmp_path, ""))
    with pytest.raises(DataError, match=r":1: not valid JSON"):
        read_jsonl(_write(tmp_path, "{oops"))
    with pytest.raises(DataError, match=r":1: not valid UTF-8"):
        read_jsonl(_write(tmp_path, b'{"prompt": "\xff"}'))
    with pytest.raises(DataError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_answer_only_rows_for_evaluation():
    ex = parse_row({"prompt": "q", "answer": "42"}, "x:1", require_completion=False)
    assert ex.completion is None and ex.answer == "42"
