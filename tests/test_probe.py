"""The ICL-gap probe: reports on tiny-random (a JSONL with and without answers, a registered task, the CLI), the
KL and demonstration log-probability against naive references, the verdict rule, and config validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from selfdistill.cli import main
from selfdistill.data import Example
from selfdistill.evaluation.evaluate import subset_indices
from selfdistill.evaluation.probe import (
    ProbeConfig,
    demo_logprobs,
    run_probe,
    sample_kl,
    token_f1,
    verdict,
)
from selfdistill.evaluation.tasks.base import default_data_dir
from selfdistill.stats import mean_stderr
from selfdistill.training.prompts import TEACHER_TEMPLATES, student_prompt_ids

DATA = default_data_dir()  # $SELFDISTILL_DATA, else ../shared/data beside the checkout

FAST = {"model": "tiny-random", "max_new_tokens": 4, "sample_tokens": 6, "num_samples": 1, "progress": False}
ROWS = [
    {"prompt": "What is 2+3?", "completion": "2+3 = 5. The answer is 5.", "answer": "5"},
    {"prompt": "Name a primary color.", "completion": "Red is a primary color.", "answer": ["red", "blue"]},
    {
        "prompt": "Capital of Italy?",
        "completion": "Rome.",
        "context": "Rome is the capital.",
        "answer": "Rome",
    },
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _check_report(report: dict, templates: list[str], n: int) -> None:
    assert report["n"] == n and list(report["templates"]) == templates
    s = report["student"]
    assert 0 <= s["score"] <= 1 and s["demo_logp"] <= 0 and s["kl_samples"] >= 1
    for r in report["templates"].values():
        values = [r["teacher"], r["gap"], r["kl"], r["demo_logp_student"], r["demo_logp_teacher"]]
        assert all(math.isfinite(v) for v in values), r
        assert 0 <= r["teacher"] <= 1 and -1 <= r["gap"] <= 1
        assert r["gap"] == pytest.approx(r["teacher"] - s["score"])
        assert r["kl"] >= 0 and r["demo_logp_teacher"] <= 0 and r["demo_logp_student"] == s["demo_logp"]
    assert report["verdict"]["template"] in templates and isinstance(report["verdict"]["clearly_better"], bool)
    assert len(report["items"]) == n and all(set(templates) < set(item) for item in report["items"])


# ------------------------------------------------------------------------------------------------- end to end
def test_probe_jsonl_with_answers_writes_json_and_prints_table(tmp_path, capsys):
    data = _jsonl(tmp_path / "qa.jsonl", ROWS)
    out = tmp_path / "sub" / "probe.json"
    report = run_probe(ProbeConfig(data=data, output=out, **FAST))
    _check_report(report, list(TEACHER_TEMPLATES), n=3)
    assert report["metric"] == "contains"  # the default scorer for rows with `answer`
    assert json.loads(out.read_text())["templates"] == report["templates"]
    printed = capsys.readouterr().out
    assert "template" in printed and "demo logp teacher" in printed and "verdict: best template" in printed
    assert all(name in printed for name in TEACHER_TEMPLATES)


@pytest.mark.skipif(not (DATA / "gsm8k").is_dir(), reason=f"no gsm8k data under {DATA}")
def test_probe_registered_task(tmp_path):
    report = run_probe(ProbeConfig(task="gsm8k", data_dir=DATA, limit=2, output=tmp_path / "p.json", **FAST))
    _check_report(report, list(TEACHER_TEMPLATES), n=2)
    assert report["metric"] == "acc" and report["source"] == "task gsm8k"
    assert all(i["source"].startswith("gsm8k/train") for i in report["items"])


def test_cli_probe_without_answers_scores_token_f1_on_a_seeded_subset(tmp_path, capsys):
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in ROWS]
    rows.append({"prompt": "No demonstration here."})  # left out: nothing to probe
    data, out = _jsonl(tmp_path / "demos.jsonl", rows), tmp_path / "probe.json"
    flags = ["--model", "tiny-random", "--max-new-tokens", "3", "--sample-tokens", "5", "--no-progress"]
    args = ["probe", "--data", str(data), "--limit", "2", "--templates", "chat-turn", "--output", str(out)]
    assert main(args + flags) == 0
    report = json.loads(out.read_text())
    _check_report(report, ["chat-turn"], n=2)
    assert report["metric"] == "token_f1"
    assert [i["source"] for i in report["items"]] == [f"{data}:{k + 1}" for k in subset_indices(3, 2, seed=0)]
    try:
        code = main(["probe", "--data", str(data), "--task", "gsm8k", *flags])
    except SystemExit as exc:  # tyro reports a __post_init__ error itself
        code = exc.code
    assert code == 2 and "data: give exactly one of" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- measurements
def _prompts(tok) -> list[list[int]]:
    return [student_prompt_ids(tok, Example(({"role": "user", "content": r["prompt"]},))) for r in ROWS]


def test_kl_is_zero_when_teacher_prompt_is_the_student_prompt(tiny):
    model, tok = tiny
    prompts = _prompts(tok)
    cfg = ProbeConfig(data=Path("x.jsonl"), sample_tokens=6, num_samples=1, batch_size=4, progress=False)
    kl = sample_kl(model, tok, prompts, {"same": prompts, "other": [p[:1] + p for p in prompts]}, cfg)
    assert len(kl["same"]) == len(kl["other"]) >= 1
    assert max(abs(v) for v in kl["same"]) < 1e-5
    assert all(v >= 0 for v in kl["other"]) and max(kl["other"]) > 1e-6


def test_demo_logprobs_match_a_naive_forward(tiny):
    model, tok = tiny
    prompts = _prompts(tok)
    demos = [tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in ROWS]
    cfg = ProbeConfig(data=Path("x.jsonl"), batch_size=2, progress=False)
    got = demo_logprobs(model, tok.pad_token_id, prompts, demos, cfg, "demo")
    for prompt, demo, value in zip(prompts, demos, got, strict=True):
        with torch.no_grad():
            logp = model(torch.tensor([prompt + demo])).logits[0].float().log_softmax(-1)
        want = torch.stack([logp[len(prompt) - 1 + t, tok_id] for t, tok_id in enumerate(demo)]).mean()
        assert value == pytest.approx(want.item(), abs=1e-4)


# ------------------------------------------------------------------------------------------------- pure functions
def test_token_f1_and_mean_stderr():
    assert token_f1("The answer is 5.", "the answer is 5") == 1.0
    assert token_f1("red", "Red is a primary color.") == pytest.approx(2 * 1 / (1 + 5))
    assert token_f1("", "x") == 0.0
    assert mean_stderr([1.0, 0.0, 1.0, 0.0]) == (0.5, pytest.approx(math.sqrt(1 / 3 / 4)))
    assert mean_stderr([0.3]) == (0.3, None) and mean_stderr([]) == (None, None)


def _row(teacher: float, gap: float, gap_se: float | None, logp: float = -1.0) -> dict:
    return {"teacher": teacher, "gap": gap, "gap_stderr": gap_se, "demo_logp_teacher": logp}


def test_verdict_rule():
    student = {"score": 0.1}
    clear = verdict("acc", student, {"paper": _row(0.2, 0.1, 0.2), "chat-turn": _row(0.5, 0.4, 0.1)})
    assert clear["template"] == "chat-turn" and clear["clearly_better"] and "clearly better" in clear["text"]
    noisy = verdict("acc", student, {"paper": _row(0.4, 0.3, 0.2)})  # large but within 2 SE
    assert not noisy["clearly_better"] and "NOT clearly better" in noisy["text"]
    small = verdict("acc", student, {"paper": _row(0.15, 0.05, 0.0)})  # certain but below MIN_GAP
    assert not small["clearly_better"]
    assert verdict("acc", student, {"paper": _row(0.3, 0.2, 0.0)})["clearly_better"]  # every item improved
    tie = verdict("acc", student, {"paper": _row(0.1, 0.0, 0.0, -3.0), "chat-turn": _row(0.1, 0.0, 0.0, -0.5)})
    assert tie["template"] == "chat-turn"  # tie broken by the demonstration's likelihood under the teacher


# ------------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "data"),
        ({"data": Path("a.jsonl"), "task": "gsm8k"}, "data"),
        ({"task": "gsm8k", "limit": 0}, "limit"),
        ({"task": "gsm8k", "templates": []}, "templates"),
        ({"task": "gsm8k", "templates": ["paper", "paper"]}, "templates"),
        ({"task": "gsm8k", "templates": ["no-such-template"]}, "templates"),
        ({"task": "gsm8k", "scorer": "fuzzy"}, "scorer"),
        ({"task": "gsm8k", "num_samples": 0}, "num-samples"),
        ({"task": "gsm8k", "sample_tokens": 3}, "sample-tokens"),
        ({"task": "gsm8k", "temperature": 0.0}, "temperature"),
        ({"task": "gsm8k", "batch_size": 0}, "batch-size"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}: "):
        ProbeConfig(**kwargs)


def test_task_without_demonstrations_is_a_user_error():
    from selfdistill.evaluation.tasks import TaskError

    if not (DATA / "ifeval").is_dir():
        pytest.skip(f"no ifeval data under {DATA}")
    with pytest.raises(TaskError, match="no training split"):
        run_probe(ProbeConfig(task="ifeval", data_dir=DATA, **FAST))
