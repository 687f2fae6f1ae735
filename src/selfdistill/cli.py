"""Command line: subcommands mapped to config dataclasses and the functions that run them.

selfdistill train --method sdft --data demos.jsonl --max-steps 20 --output runs/x
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import tyro

from selfdistill.config import DEFAULT_MODEL
from selfdistill.errors import UserError


class Command(NamedTuple):
    """A subcommand: where its config class and its runner live ("module:name"), and its one-line help.

    Both import only when the command runs, and a config lives in a module without torch where it can, so
    `--help` and flag errors come back fast."""

    config: str
    runner: str
    help: str


COMMANDS: dict[str, Command] = {
    "train": Command(
        "selfdistill.config:TrainConfig",
        "selfdistill.training.loop:train",
        "train with sdft | sft | seqkd on a data file or task",
    ),
    "generate": Command(
        "selfdistill.cli:GenerateConfig", "selfdistill.cli:generate", "generate an answer to one prompt"
    ),
    "eval": Command(
        "selfdistill.evaluation.config:EvalConfig",
        "selfdistill.evaluation.evaluate:run_eval",
        "evaluate a model on tasks or suites",
    ),
    "probe": Command(
        "selfdistill.evaluation.config:ProbeConfig",
        "selfdistill.evaluation.probe:run_probe",
        "ICL gap: teacher with demo vs student without",
    ),
    "continual": Command(
        "selfdistill.continual.config:ContinualConfig",
        "selfdistill.continual.runner:run_continual",
        "run a plan of stages, report",
    ),
    "demo": Command(
        "selfdistill.continual.config:DemoConfig",
        "selfdistill.continual.runner:run_demo",
        "the offline demo on the embedded model",
    ),
    "report": Command(
        "selfdistill.continual.config:ReportConfig",
        "selfdistill.continual.report:run_report_cli",
        "write report.md and plots for a run dir",
    ),
}


def resolve(target: str) -> Any:
    """The object a "module:name" string names."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


log = logging.getLogger("selfdistill")


@dataclass
class GenerateConfig:
    """Generate a reply to one prompt (greedy unless --temperature > 0)."""

    prompt: str
    """The user message."""
    model: str = DEFAULT_MODEL
    """Model spec: smollm2-135m-instruct, tiny-random, a local directory (incl. training outputs), or a hub id."""
    max_new_tokens: int = 256
    temperature: float = 0.0
    """0 for greedy decoding."""
    system: str | None = None
    """Optional system message."""
    device: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ValueError("prompt: must not be empty")
        if self.max_new_tokens <= 0:
            raise ValueError("max-new-tokens: must be > 0")
        if self.temperature < 0:
            raise ValueError("temperature: must be >= 0")


def generate(cfg: GenerateConfig) -> str:
    from selfdistill.data import Example
    from selfdistill.models import load_model
    from selfdistill.training.prompts import student_prompt_ids
    from selfdistill.training.rollout import sample
    from selfdistill.training.setup import resolve_device

    model, tok = load_model(cfg.model, device=resolve_device(cfg.device), trust_remote_code=cfg.trust_remote_code)
    messages = ([{"role": "system", "content": cfg.system}] if cfg.system else []) + [
        {"role": "user", "content": cfg.prompt}
    ]
    ids = student_prompt_ids(tok, Example(tuple(messages)))
    ro = sample(
        model,
        tok,
        [ids],
        temperature=cfg.temperature or 1.0,
        max_new_tokens=cfg.max_new_tokens,
        do_sample=cfg.temperature > 0,
    )
    text = tok.decode(ro.completions[0], skip_special_tokens=True).strip()
    print(text)
    return text


def _config_default(path: Path, config_cls: type) -> Any:
    """A YAML/JSON config file as the instance tyro starts from (the command line's flags then win). Its keys go
    through the same mapping as a plan's; a required option it lacks stays required on the command line."""
    import yaml

    from selfdistill.config_mapping import ConfigError, build

    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML/JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option names to values")
    try:
        return build(config_cls, values, missing=tyro.MISSING)
    except ConfigError as err:
        raise ValueError(f"{path}: {err}") from None


def _flag(field_name: str) -> str:
    """The command-line flag of a config field, as tyro spells it: ``max_new_tokens`` -> ``--max-new-tokens``."""
    return "--" + field_name.replace("_", "-")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {command.help}" for name, command in COMMANDS.items()]
    return (
        "usage: selfdistill COMMAND [--help] [--config FILE] [options]\n\n"
        "Continual fine-tuning from demonstrations without forgetting (SDFT).\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nRun `selfdistill COMMAND --help` for a command's options."
    )


def _fail(message: str, code: int = 2) -> int:
    print(f"selfdistill: error: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _checks_deferred(config_cls: type) -> Iterator[None]:
    """Build a config (and its groups) without running their checks: tyro would draw a multi-line box around a
    ValueError raised while it builds one. The caller runs the checks afterwards (``run_checks``), so a bad value
    reaches the user as our one line. Only our own classes are touched, through no tyro internals."""
    from selfdistill.config_mapping import groups

    classes = [config_cls, *groups(config_cls).values()]
    saved = {cls: cls.__dict__["__post_init__"] for cls in classes if "__post_init__" in cls.__dict__}
    for cls in saved:
        cls.__post_init__ = lambda self: None
    try:
        yield
    finally:
        for cls, post_init in saved.items():
            cls.__post_init__ = post_init


@contextlib.contextmanager
def _tyro_box_as_value_error() -> Iterator[None]:
    """tyro reports a parse error (bad choice, missing value, missing required option) in a multi-line box on
    stderr and exits 2; turn the box's message into our one-line ValueError. ``--help`` (exit 0) and a box we
    cannot read pass through unchanged."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except SystemExit as exc:
        message = _box_message(captured.getvalue()) if exc.code == 2 else None
        if message is None:
            sys.stderr.write(captured.getvalue())
            raise
        raise ValueError(message) from None
    else:
        sys.stderr.write(captured.getvalue())


def _box_message(text: str) -> str | None:
    """The text of a tyro error box up to its first separator rule, on one line (None if there is no box)."""
    words: list[str] = []
    for line in text.splitlines()[1:]:
        inner = line.strip().strip("│╭╮╰╯").strip()
        if not inner or set(inner) <= set("─ "):
            break
        words += inner.split()
    text = " ".join(words).rstrip(".").removeprefix("Error parsing ")  # tyro's "Error parsing --lr: ..."
    return text + " (see --help)" if words else None


def _check_flags(args: list[str], config_cls: type) -> None:
    """An unknown ``--flag`` is a ValueError naming it (and the closest real one) in one line, before tyro would
    print its multi-line box. Flags are the config's fields, hyphenated, plus ``--no-`` forms of booleans."""
    from selfdistill.config_mapping import option_types

    known = {"-h", "--help"}
    for name, hint in option_types(config_cls).items():
        known.add(_flag(name))
        if hint is bool:
            known.add(_flag(f"no_{name}"))
    for arg in args:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and not _is_number(flag) and flag not in known:
            # Compared without the dashes every flag shares, which would make any two names look alike.
            names = {k.lstrip("-"): k for k in known}
            close = difflib.get_close_matches(flag.lstrip("-"), sorted(names), n=1, cutoff=0.7)
            hint = f" (did you mean {names[close[0]]}?)" if close else ""
            raise ValueError(f"{flag}: unknown option{hint}; see --help")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse(name: str, config_cls: type, args: list[str]) -> Any:
    """The command's config from ``--config FILE`` (if given) overlaid by the flags, then checked; ValueError
    (one line) on any mistake. Groups of a config take flat flags: ``--temperature``, not ``--sampling.temperature``."""
    from selfdistill.config_mapping import run_checks

    default = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ValueError("--config: expected a file path")
        with _checks_deferred(config_cls):
            default = _config_default(Path(args[i + 1]), config_cls)
        args = args[:i] + args[i + 2 :]
    _check_flags(args, config_cls)
    with _checks_deferred(config_cls), _tyro_box_as_value_error():
        cfg = tyro.cli(
            tyro.conf.OmitArgPrefixes[config_cls],
            args=args,
            default=default,
            prog=f"selfdistill {name}",
            description=config_cls.__doc__,
        )
    return run_checks(cfg)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from selfdistill import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return _fail(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    config_cls: type = resolve(COMMANDS[name].config)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    debug = bool(os.environ.get("SELFDISTILL_DEBUG"))
    try:
        cfg = _parse(name, config_cls, rest)
    except ValueError as err:
        if debug:
            raise
        return _fail(str(err).splitlines()[0])
    runner: Callable[[Any], Any] = resolve(COMMANDS[name].runner)
    _quiet_libraries()
    try:
        result = runner(cfg)
    except (UserError, FileNotFoundError) as err:  # a mistake the user can fix: one line, exit 2
        if debug:
            raise
        return _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except FloatingPointError as err:  # training diverged: not the input's fault, so not exit code 2
        if debug:
            raise
        return _fail(str(err).splitlines()[0], code=3)
    except KeyboardInterrupt as err:  # the shell's convention: 128 + the signal (130 Ctrl-C, 143 SIGTERM)
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"selfdistill: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    del result
    return 0


def _quiet_libraries() -> None:
    """Our own progress bars are enough; silence per-load bars and advisory warnings from transformers and the
    hub client (whose retry notices would otherwise precede an error's one line)."""
    import huggingface_hub
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.logging.set_verbosity_error()


def end_process_group(finished: bool) -> None:
    """Tear down the process group a torchrun launch set up, before the interpreter exits: left to interpreter
    exit, gloo's threads abort the process now and then (SIGABRT) after the run has finished. After a finished
    command every rank waits for the others first; after a failed one it does not (a rank that failed may be
    alone)."""
    torch = sys.modules.get("torch")  # a command that never imported torch never started a process group
    if torch is None or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    if finished:
        torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def run() -> int:
    """The `selfdistill` program (and `python -m selfdistill`): one command, then an orderly end under torchrun.
    Tests call `main` many times in one process; the process group ends only with the program."""
    code = main()
    end_process_group(finished=code == 0)
    return code


if __name__ == "__main__":
    sys.exit(run())
