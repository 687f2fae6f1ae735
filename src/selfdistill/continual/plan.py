"""Continual-learning plans: a YAML file → a validated ``Plan`` (methods × ordered stages × evaluation suite).

    plan = load_plan(Path("examples/tiny.yaml"))        # raises PlanError("tiny.yaml: stages[1].steps: must be > 0")

A plan names the model, the methods to compare (each a set of ``TrainConfig`` overrides), the stages trained in
order (a registered task, or a data file plus the task that tests it), and what is evaluated after every stage::

    model: smollm2-135m-instruct
    output: runs/demo                  # relative to the working directory
    seeds: [0, 1, 2]                   # every setting runs once per seed (or `seed: 0` for one run)
    train: {batch_size: 8}             # TrainConfig overrides for every method and stage
    report_to: [tensorboard]           # one tracker run per run: each stage's evaluation, the matrix, the plots
    methods:
      sft: {lr: 2.0e-5}                # the method (sdft | sft | seqkd) is the key, or `method:`
      sdft: {teacher_template: chat-turn, sweep: {lr: [1.0e-5, 3.0e-5]}}   # settings sdft[lr=1e-5], sdft[lr=3e-5]
    stages:
      - {task: record_json, steps: 20}
      - {data: my_demos.jsonl, test: my_test.jsonl:exact, name: mine, epochs: 1, train: {lr: 1.0e-5}}
    eval:
      limit: 50                        # items per task (a seeded subset), unless the task sets its own
      seed: 0                          # picks the subsets: the same items for every seed, so runs are paired
      split: test                      # or validation: stage tasks scored on their validation split (tuning)
      near: [near_record_json]         # near-prior tasks: the base model's skills on the stage tasks' surface
      prior: [prior_probe, {task: arc_easy, limit: 100}, {task: ifeval, limit: 16, max_new_tokens: 192}]

A *setting* is a method label with its overrides; a ``sweep`` (any TrainConfig field → list of values; several
fields make their product) turns one method entry into one setting per value, labelled ``sdft[lr=3e-5]``. A *run*
is one setting trained with one seed, labelled ``sdft[lr=3e-5]@seed1`` when the plan lists ``seeds`` (plain
``sdft`` with ``seed``). Data paths (``data``, ``test``) are relative to the plan file. Every error is one line
naming the field path.
"""

from __future__ import annotations

import re
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from selfdistill.config import DEFAULT_MODEL, TRAIN_OPTIONS, Method, TrainConfig
from selfdistill.config_mapping import coerce, flat_items, float_or_text, unknown_key
from selfdistill.errors import UserError
from selfdistill.evaluation.tasks import SUITES, TASKS

METHODS = typing.get_args(Method)
MANAGED = (
    "data",
    "model",
    "output",
    "resume",
    "overwrite",
    "data_dir",
    "max_steps",
    "epochs",
    "seed",
    "device",
    "progress",
    "merge",
    "guard_base",
    "guard_stages",
)
"""TrainConfig fields the runner sets itself (from the plan's model, stages, seeds and output, and the command line)."""
RESERVED = (".", "..", "base", "plan.json", "results.json", "tensorboard", "wandb")
"""Names a run's directory may not have (the run directory's own entries, the trackers' files, and path tricks)."""


def _managed_why(name: str) -> str:
    if name == "seed":
        return "set by the plan's 'seeds' (or 'seed'), one run per seed"
    if name in ("guard_base", "guard_stages"):
        return "set by the plan: each stage's guards are referenced to the start model and earlier stages' ends"
    return "set by the plan (model, stages' steps/epochs, output, data_dir) or the command line (device, progress)"


class PlanError(UserError):
    """A plan file that cannot be run; the message is one line: ``file: field.path: what is wrong``."""


@dataclass(frozen=True)
class EvalTask:
    spec: str
    """A registered task name or ``PATH.jsonl[:scorer]``."""
    limit: int | None
    max_new_tokens: int | None = None
    """This task's generation budget in this plan (None: the task's own, capped by ``eval.max_new_tokens``)."""

    @property
    def name(self) -> str:
        """The column name in results: the task name, or a file task's stem."""
        return self.spec if self.spec in TASKS else Path(self.spec.rpartition(".jsonl")[0]).name


@dataclass(frozen=True)
class Stage:
    name: str
    """The column of the accuracy matrix, and part of the stage's directory name."""
    data: str
    """What TrainConfig trains on: a task name or a data file path."""
    test: EvalTask
    steps: int | None
    epochs: float | None
    train: dict[str, Any]
    """Overrides for this stage, every method."""


@dataclass(frozen=True)
class Run:
    label: str
    """The key in results.json and the run's directory name: ``sdft[lr=3e-5]@seed1``, or the setting alone."""
    setting: str
    """The method label with its sweep values (a key of ``Plan.methods``)."""
    seed: int


@dataclass(frozen=True)
class Plan:
    model: str
    output: Path
    data_dir: Path | None
    seeds: tuple[int, ...]
    """Training seeds: every setting runs once per seed."""
    seeded_labels: bool
    """Whether run labels carry the seed (the plan listed ``seeds``)."""
    eval_seed: int
    """Picks the evaluation subsets; the same for every run, so runs are paired item by item."""
    methods: dict[str, dict[str, Any]]
    """Setting label → TrainConfig overrides (plan-wide ``train`` merged in, ``method`` always set)."""
    stages: tuple[Stage, ...]
    prior: tuple[EvalTask, ...]
    near: tuple[EvalTask, ...]
    """Near-prior tasks: what the base model already does on the stage tasks' surface (reported apart from prior)."""
    eval_split: Literal["test", "validation"]
    """Which split of the stage tasks is scored (validation: for choosing settings before the test runs)."""
    eval_batch_size: int
    eval_max_new_tokens: int | None
    """Cap on every generation task's completion length during evaluation (None: each task's own)."""
    report_to: tuple[str, ...] = ()
    """Trackers for the plan's runs as a whole (each stage's evaluation, the matrix, the plots); not part of the
    fingerprint, so tracking can be switched on when a partly done or finished run is rerun."""

    @property
    def runs(self) -> list[Run]:
        """Every (setting, seed) pair, seed by seed, so a partial run holds whole seeds of every setting."""
        return [
            Run(f"{setting}@seed{seed}" if self.seeded_labels else setting, setting, seed)
            for seed in self.seeds
            for setting in self.methods
        ]

    def train_overrides(self, setting: str, stage: Stage) -> dict[str, Any]:
        return {**self.methods[setting], **stage.train}

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption (everything but where it is written and watched)."""
        return _plain({k: v for k, v in asdict(self).items() if k not in ("output", "report_to")})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


# ---------------------------------------------------------------- checking values


class _Fields:
    """Reads a mapping at ``path``, keeps track of which keys were used, and rejects the rest."""

    def __init__(self, where: str, path: str, value: Any, required: tuple[str, ...] = ()):
        self.where, self.path = where, path
        if not isinstance(value, dict):
            self.fail(path, f"expected a mapping, got {_kind(value)}")
        self.value = value
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"keys must be strings, got {key!r}")
        for key in required:
            if key not in value:
                self.fail(self.sub(key), "missing (required)")

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, path: str, why: str) -> typing.NoReturn:
        raise PlanError(f"{self.where}: {path or '(top level)'}: {why}")

    def reject_unknown(self, known: typing.Iterable[str]) -> None:
        known = tuple(known)
        for key in self.value:
            if key not in known:
                self.fail(self.sub(key), f"unknown key; expected one of {', '.join(known)}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, check=None, why: str = "") -> Any:
        if key not in self.value or self.value[key] is None:
            return default
        value = self.value[key]
        if kind is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            value = float_or_text(value)
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            self.fail(self.sub(key), f"expected {_name(kind)}, got {value!r}")
        if not isinstance(value, kind if kind is not float else (int, float)):
            self.fail(self.sub(key), f"expected {_name(kind)}, got {_kind(self.value[key])} {self.value[key]!r}")
        if check is not None and not check(value):
            self.fail(self.sub(key), why)
        return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(
        {
            str: "a string",
            int: "an integer",
            float: "a number",
            dict: "a mapping",
            list: "a list",
            bool: "true/false",
        }.get(k, k.__name__)
        for k in kinds
    )


_TRAIN_HINTS = TRAIN_OPTIONS
TRAIN_FIELDS = tuple(TRAIN_OPTIONS)


def _option_names(value: Any) -> set[str]:
    """The TrainConfig fields a mapping sets (flat or in groups; unknown keys left out)."""
    if not isinstance(value, dict):
        return set()
    return {name for _, name, _ in flat_items(TrainConfig, value) if name is not None}


PATH_OPTIONS = ("anchor", "selection", "keep")
"""TrainConfig options that may name a file: relative to the plan file, like a stage's ``data`` and ``test``."""


def _plan_file(section: _Fields, where: str, spec: str, base: Path) -> str:
    """``spec`` with a file part resolved against the plan's directory; a ``.jsonl`` that is not there fails here.
    Names (a task, an anchor pool, a hub dataset) pass unchanged: the runner loads them before any work."""
    if (base / spec).exists():
        return str(base / spec)
    path, _, scorer = spec.partition(":")
    if (base / path).exists():
        return str(base / path) + (f":{scorer}" if scorer else "")
    if path.endswith(".jsonl"):
        section.fail(where, f"{base / path}: no such file")
    return spec


def _resolve_files(section: _Fields, key: str, name: str, value: Any, base: Path) -> Any:
    if name not in PATH_OPTIONS or value is None:
        return value
    if isinstance(value, list):
        return [_plan_file(section, f"{section.sub(key)}[{i}]", v, base) for i, v in enumerate(value)]
    return _plan_file(section, section.sub(key), value, base)


def _train_overrides(f: _Fields, path: str, value: Any, allow_method: bool, base: Path) -> dict[str, Any]:
    """TrainConfig overrides at ``path``, typed and checked alone (so a bad value is blamed on where it was set);
    files it names are resolved against ``base``, the plan's directory."""
    section = _Fields(f.where, path, value)
    out: dict[str, Any] = {}
    for key, name, item in flat_items(TrainConfig, section.value):
        if name is None:
            hint = unknown_key(TrainConfig, key).partition(" (")[2]
            section.fail(section.sub(key), "unknown training option" + (f" ({hint}" if hint else ""))
        if name in MANAGED:
            section.fail(section.sub(key), _managed_why(name))
        if name == "method" and not allow_method:
            section.fail(section.sub(key), "unknown training option here")
        if name in out:
            section.fail(section.sub(key), "set twice (flat and in its group)")
        try:
            out[name] = coerce(item, _TRAIN_HINTS[name])
        except TypeError as err:
            section.fail(section.sub(key), f"expected {err}, got {item!r}")
        out[name] = _resolve_files(section, key, name, out[name], base)
    layered = path != "train"  # a method or stage layer: what it needs may come from the layer below it
    _check_train(f, path, {**LAYER_BELOW, **out} if layered else out)
    return out


LAYER_BELOW = {"eval_every": 1, "forgetting_budget": 0.5}
"""Stand-ins for evaluation options a method or stage layer may take from the layer below (``patience`` here, the
budget in ``train``): a layer checked alone must not fail for them; the merged options are checked as a whole."""


def _check_train(f: _Fields, path: str, overrides: dict[str, Any], blame: str | None = None) -> None:
    """Run TrainConfig's own validation on ``overrides``; its message names the option. With ``blame`` (a field
    name, or "" for none) the error is put on ``path`` itself when it is about that field."""
    try:
        TrainConfig.from_mapping({"data": "-", **overrides})
    except ValueError as err:  # ConfigError, or a template or --columns error: each starts with what it is about
        option, _, why = str(err).partition(": ")
        name = option.lstrip("-").replace("-", "_")
        if blame is not None:
            f.fail(path, (why or str(err)) if name == blame else str(err))
        f.fail(f"{path}.{name}" if name in overrides else path, why or str(err))


# ---------------------------------------------------------------- reading a plan


def _eval_task(f: _Fields, path: str, value: Any, base: Path, default_limit: int | None) -> EvalTask:
    if isinstance(value, str):
        value = {"task": value}
    entry = _Fields(f.where, path, value, required=("task",))
    entry.reject_unknown(("task", "limit", "max_new_tokens"))
    spec = _task_spec(entry, "task", base)
    limit = entry.get("limit", int, default_limit, lambda n: n > 0, "must be > 0")
    max_new = entry.get("max_new_tokens", int, None, lambda n: n > 0, "must be > 0")
    return EvalTask(spec, limit, max_new)


def _task_spec(f: _Fields, key: str, base: Path) -> str:
    """A registered task name (not a suite: each column is one task) or an existing ``PATH.jsonl[:scorer]``."""
    spec = f.get(key, str, check=lambda s: bool(s.strip()), why="must not be empty")
    if spec in TASKS:
        return spec
    if spec in SUITES:
        f.fail(f.sub(key), f"{spec!r} is a suite; list its tasks one by one: {', '.join(SUITES[spec])}")
    path, _, scorer = spec.partition(":") if not (base / spec).exists() else (spec, "", "")
    if path.endswith(".jsonl"):
        resolved = base / path
        if not resolved.is_file():
            f.fail(f.sub(key), f"{resolved}: no such file")
        return str(resolved) + (f":{scorer}" if scorer else "")
    f.fail(f.sub(key), f"unknown task {spec!r}; known: {', '.join(sorted(TASKS))}; or PATH.jsonl[:scorer]")


def _stage(f: _Fields, k: int, value: Any, base: Path, limit: int | None) -> Stage:
    path = f"stages[{k}]"
    s = _Fields(f.where, path, value)
    s.reject_unknown(("task", "data", "test", "name", "steps", "epochs", "limit", "train"))
    if ("task" in s.value) == ("data" in s.value):
        s.fail(path, "give either 'task' (a registered task) or 'data' (a training file) with 'test'")
    if "task" in s.value:
        if "test" in s.value:
            s.fail(s.sub("test"), "only with 'data' (a task is tested on its own test split)")
        data = _task_spec(s, "task", base)
        if data not in TASKS:
            s.fail(s.sub("task"), "must be a registered task; for a file use 'data' and 'test'")
        test, name = EvalTask(data, None), data
    else:
        data_path = base / s.get("data", str, check=lambda x: bool(x.strip()), why="must not be empty")
        if not data_path.exists():
            s.fail(s.sub("data"), f"{data_path}: no such file or dataset directory")
        if "test" not in s.value:
            s.fail(s.sub("test"), "missing (required with 'data': a task name or PATH.jsonl[:scorer])")
        data, test, name = str(data_path), EvalTask(_task_spec(s, "test", base), None), data_path.stem
    name = s.get("name", str, name, lambda x: x.strip() and "/" not in x, "must be a non-empty name without '/'")
    steps = s.get("steps", int, None, lambda n: n > 0, "must be > 0")
    epochs = s.get("epochs", float, None, lambda x: x > 0, "must be > 0")
    if (steps is None) == (epochs is None):
        s.fail(path, "give exactly one of 'steps' or 'epochs'")
    limit = s.get("limit", int, limit, lambda n: n > 0, "must be > 0")
    train = _train_overrides(s, s.sub("train"), s.value.get("train") or {}, allow_method=False, base=base)
    return Stage(name, data, EvalTask(test.spec, limit), steps, epochs, train)


def format_value(value: Any) -> str:
    """A sweep value as it appears in a setting label: ``1e-4``, ``0.5``, ``64``, ``true``, ``chat-turn``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and not 1e-2 <= abs(value) < 1e4:
            mantissa, _, exponent = f"{value:e}".partition("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def _sweep(f: _Fields, path: str, value: Any, base: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``[(label suffix, overrides)]``, one per point of the product of the sweep's value lists (in their order)."""
    section = _Fields(f.where, path, value)
    if not section.value:
        section.fail(path, "must name at least one training option with a list of values")
    points: list[tuple[str, dict[str, Any]]] = [("", {})]
    for key, name, values in flat_items(TrainConfig, section.value):
        where = section.sub(key)
        if name in MANAGED:
            section.fail(where, _managed_why(name) + "; not sweepable")
        if name is None or name == "method":
            section.fail(where, "unknown training option")
        if not isinstance(values, list) or not values:
            section.fail(where, f"expected a non-empty list of values, got {_kind(values)} {values!r}")
        typed = []
        for i, item in enumerate(values):
            try:
                typed.append(coerce(item, _TRAIN_HINTS[name]))
            except TypeError as err:
                section.fail(f"{where}[{i}]", f"expected {err}, got {item!r}")
            _check_train(f, f"{where}[{i}]", {**base, name: typed[-1]}, blame=name)
            if typed[-1] in typed[:-1]:
                section.fail(f"{where}[{i}]", f"value {format_value(typed[-1])} appears twice")
        points = [
            (f"{label},{name}={format_value(v)}".lstrip(","), {**o, name: v}) for label, o in points for v in typed
        ]
    for label, overrides in points:  # the product must be valid too (options that constrain each other)
        _check_train(f, f"{path} (point {label})", {**base, **overrides}, blame="")
    return points


def _seeds(f: _Fields) -> tuple[tuple[int, ...], bool]:
    if "seeds" in f.value and "seed" in f.value:
        f.fail("seeds", "give 'seeds' (a list) or 'seed' (one), not both")
    if "seeds" not in f.value:
        return (f.get("seed", int, 0),), False
    seeds = f.value["seeds"]
    if not isinstance(seeds, list) or not seeds:
        f.fail("seeds", f"must be a non-empty list of integers, got {_kind(seeds)} {seeds!r}")
    for i, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int):
            f.fail(f"seeds[{i}]", f"expected an integer, got {_kind(seed)} {seed!r}")
        if not 0 <= seed < 2**32:
            f.fail(f"seeds[{i}]", f"must be in [0, 2**32), got {seed}")
        if seed in seeds[:i]:
            f.fail(f"seeds[{i}]", f"seed {seed} appears twice")
    return tuple(seeds), True


def _report_to(f: _Fields) -> tuple[str, ...]:
    """The plan's trackers: a list of names (or one name), each checked against the known trackers."""
    raw = f.value.get("report_to") or []
    try:
        return tuple(coerce([raw] if isinstance(raw, str) else raw, _TRAIN_HINTS["report_to"]))
    except TypeError as err:
        f.fail("report_to", f"expected {err}, got {raw!r}")


def run_dir_name(label: str) -> str:
    """A run label as a directory name: anything but letters, digits and ``_.=@,[]+-`` becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=@,\[\]+-]", "_", label)


def _check_run_names(f: _Fields, seeds: tuple[int, ...], seeded: bool, methods: dict[str, Any]) -> None:
    """Every run gets a directory of its own, none of them a reserved name."""
    seen: dict[str, str] = {}
    for setting in methods:
        for seed in seeds:
            label = f"{setting}@seed{seed}" if seeded else setting
            name = run_dir_name(label)
            if name in RESERVED:
                f.fail("methods", f"the run {label!r} would be written to {name!r}, a reserved name; rename it")
            if name in seen:
                f.fail(
                    "methods", f"the runs {seen[name]!r} and {label!r} would share the directory {name!r}; rename one"
                )
            seen[name] = label


def parse_plan(raw: Any, where: str, base: Path, output: Path | None = None) -> Plan:
    """Validate a decoded plan; ``base`` resolves relative data paths; ``output`` overrides the plan's."""
    f = _Fields(where, "", raw, required=("methods", "stages"))
    f.reject_unknown(
        ("model", "output", "data_dir", "seed", "seeds", "report_to", "train", "methods", "stages", "eval")
    )
    model = f.get("model", str, DEFAULT_MODEL)
    out = output or Path(f.get("output", str, "runs/" + Path(where).stem))
    data_dir = f.get("data_dir", str)
    seeds, seeded = _seeds(f)
    common = _train_overrides(f, "train", f.value.get("train") or {}, allow_method=False, base=base)
    report_to = _report_to(f)

    m = _Fields(where, "methods", f.value["methods"])
    if not m.value:
        m.fail("methods", "must name at least one method (e.g. sft: {} and sdft: {})")
    methods = {}
    for label, value in m.value.items():
        if "/" in label or "@" in label or not label.strip():
            m.fail(m.sub(label), "a method label must be a non-empty name without '/' or '@'")
        value = dict(value or {}) if isinstance(value, dict) or value is None else value
        sweep = value.pop("sweep", None) if isinstance(value, dict) else None
        overrides = _train_overrides(f, m.sub(label), value, allow_method=True, base=base)
        overrides.setdefault("method", label if label in METHODS else None)
        if overrides["method"] is None:
            m.fail(m.sub(label), f"set 'method' (one of {', '.join(METHODS)}) or name the method by it")
        setting = {"method": overrides.pop("method"), **common, **overrides}
        _check_train(f, m.sub(label), setting)
        points = [("", {})] if sweep is None else _sweep(f, m.sub(label) + ".sweep", sweep, setting)
        for swept in _option_names(sweep) & set(overrides):
            m.fail(f"{m.sub(label)}.{swept}", "also swept in this method's 'sweep'; set it in one place")
        for suffix, swept in points:
            name = f"{label}[{suffix}]" if suffix else label
            if name in methods:
                m.fail(m.sub(label), f"setting {name!r} appears twice")
            methods[name] = {**setting, **swept}

    e = _Fields(where, "eval", f.value.get("eval") or {})
    e.reject_unknown(("limit", "seed", "split", "batch_size", "max_new_tokens", "near", "prior"))
    limit = e.get("limit", int, None, lambda n: n > 0, "must be > 0")
    eval_seed = e.get("seed", int, seeds[0] if not seeded else 0)
    split = e.get("split", str, "test", lambda x: x in ("test", "validation"), "must be 'test' or 'validation'")
    batch_size = e.get("batch_size", int, 16, lambda n: n > 0, "must be > 0")
    max_new = e.get("max_new_tokens", int, None, lambda n: n > 0, "must be > 0")
    prior_raw = e.get("prior", list, [])
    prior = tuple(_eval_task(e, f"eval.prior[{i}]", v, base, limit) for i, v in enumerate(prior_raw))
    near_raw = e.get("near", list, [])
    near = tuple(_eval_task(e, f"eval.near[{i}]", v, base, limit) for i, v in enumerate(near_raw))

    stages_raw = f.get("stages", list, check=bool, why="must list at least one stage")
    stages = tuple(_stage(f, k, value, base, limit) for k, value in enumerate(stages_raw))
    for setting in methods:  # the merged options must make a valid TrainConfig at every stage
        for k, stage in enumerate(stages):
            _check_train(f, f"stages[{k}].train", {**methods[setting], **stage.train})
    for k, stage in enumerate(stages):  # a stage override would silently flatten a sweep
        for setting, values in m.value.items():
            swept = (values or {}).get("sweep") if isinstance(values, dict) else None
            for name in sorted(_option_names(swept) & set(stage.train)):
                f.fail(f"stages[{k}].train.{name}", f"overrides the sweep of methods.{setting}; set it in one place")
    _check_run_names(f, seeds, seeded, methods)
    evaluating = any(methods[m].get("eval_every") or stage.train.get("eval_every") for m in methods for stage in stages)
    if evaluating and split == "validation":
        f.fail("eval.split", "validation: the stage tasks' validation splits select the kept step (eval_every)")
    names = [s.name for s in stages] + [t.name for t in near] + [t.name for t in prior]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        f.fail("stages", f"task {dup!r} appears twice (stage, near-prior and prior task names must be distinct)")
    return Plan(
        model,
        Path(out),
        Path(data_dir) if data_dir else None,
        seeds,
        seeded,
        eval_seed,
        methods,
        stages,
        prior,
        near,
        split,
        batch_size,
        max_new,
        report_to,
    )


def load_plan(path: Path, output: Path | None = None) -> Plan:
    """Read and validate a YAML plan file (``yaml.safe_load``); every error is a one-line PlanError."""
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"{path}: plan file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PlanError(f"{path}: not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError as err:
        raise PlanError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return parse_plan(raw, str(path), path.parent, output)
