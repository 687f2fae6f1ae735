"""Evaluation during training: score the learned task and the guards every N steps, keep the best step within the
forgetting budget, stop early, and hand the kept weights to the save.

    setup = resolve_evaluation(cfg)          # evaluation/points.py, before any work: a bad --keep fails at once
    selector = Selector.start(setup, cfg, model, tok, ranks, step_log, step, total)   # step 0 (cached), or a resume
    selector(step, state) -> stop;  selector.finish(step)    # a hook after each step; at the end the kept weights

Each point scores the *selection* split of the task being learned and every guard's selection items (greedy, fp32, in
batches of 16, as ``selfdistill eval`` scores the saved model), plus the label-free drift guard. Points are written
once to ``OUTPUT/selection.json`` (atomic; a resumed run reads them back and never recomputes one) and as ``eval``
records to metrics.jsonl and the trackers. With a budget the kept point is ``budget.choose``'s, and its trainable
weights go to ``OUTPUT/selection/kept.safetensors`` each time it changes, so a resume or the end restores them.

``selection.json`` (version 1; readers take only the keys they know)::

    {"version": 1, "eval_every": N, "budget": D|null, "rule": str, "selection": {"name", "n", "resolution", "source"},
     "guards": [{"name", "origin", "n", "resolution"}], "base": {"selection", "guards": {name: score}},
     "points": [{"step", "selection", "guards", "within": bool|null, "loglik"}], "kept": {"step", "selection",
     "guards"}|null, "stopped": {"step", "reason"}|null, "test": {"selection", "guards"}|null, "test_base": ...|null,
     "drift_loglik": {"selection", "test"}|null}

``base`` and ``test_base`` are the references drops are measured from; ``drift_loglik`` the drift guard's reference
log-likelihoods (nats per token). A plan passes references of its own with ``guard_base`` (cumulative budget from the
plan's start model; an earlier stage's skill at its stage-end score): a JSON object ``{"guards": {name: score},
"test": {name: score}, "drift_loglik": {"selection": x, "test": y}}``, every key optional, values replacing the start
model's. The drift guard's score is ``exp(loglik − reference)`` (1.0 = unchanged), so its reference score is 1.0.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from selfdistill.continual.budget import EvalPoint, Patience, assess, baseline, choose
from selfdistill.evaluation.drift import DRIFT_NAME, retained
from selfdistill.evaluation.points import EvalSetup, Scores, fingerprint, score
from selfdistill.fileio import write_json_atomic
from selfdistill.training.sharding import copy_full_, full_parameters

if TYPE_CHECKING:
    from selfdistill.config import TrainConfig
    from selfdistill.training.ranks import Ranks
    from selfdistill.training.runlog import StepLog

log = logging.getLogger(__name__)

SELECTION_FILE, KEPT_FILE, FRONTIER_FILE = "selection.json", "selection/kept.safetensors", "frontier.png"
RULE = (
    "Among the evaluated steps whose mean clipped guard drop is at most the budget and where no guard dropped by more "
    "than max(budget, one item), keep the best selection score (earliest on ties; the start model always qualifies)."
)


# ------------------------------------------------------------------------------------------------------------ the hook
class Selector:
    """The per-step hook: evaluates every ``setup.every`` steps, records, keeps the best step within budget, stops."""

    def __init__(self, setup: EvalSetup, cfg: TrainConfig, model, tok, ranks: Ranks, step_log: StepLog) -> None:
        self.setup, self.model, self.tok, self.ranks, self.step_log = setup, model, tok, ranks, step_log
        self.output, self.total, self.method, self.seed = cfg.run.output, 0, cfg.method, cfg.run.seed
        self.progress = cfg.run.progress and ranks.is_main
        self.doc: dict[str, Any] = {}
        self.patience = Patience(setup.patience, setup.budget) if setup.patience else None

    @classmethod
    def start(
        cls,
        setup: EvalSetup,
        cfg: TrainConfig,
        model,
        tok,
        ranks: Ranks,
        step_log: StepLog,
        step: int,
        total_steps: int,
    ) -> Selector:
        """The hook for a run at ``step``: the recorded points of a resumed run, else the start model scored."""
        self = cls(setup, cfg, model, tok, ranks, step_log)
        self.total = total_steps
        path = self.output / SELECTION_FILE
        if cfg.run.resume and path.is_file():
            self.doc = json.loads(path.read_text())
            log.info("evaluation: %d recorded point(s) read from %s", len(self.doc["points"]), path)
        else:
            self._begin()
        for point in self.points:
            if point.step <= step and self.patience is not None:  # step 0 first: it sets the best
                self.patience.update(point, self.base)
        return self

    def _begin(self) -> None:
        """Score the start model (selection side, and the test side with a budget) and write the first point."""
        setup, refs = self.setup, self.setup.refs
        fp = fingerprint(self.model) if self.ranks.is_main and not self.ranks.fsdp else None
        own = self._on_main(lambda: score(self.model, self.tok, setup, "selection", fp, self.progress))
        test = None
        if setup.budget is not None:
            test = self._on_main(lambda: score(self.model, self.tok, setup, "test", fp, self.progress))
        drift_ref = {"selection": own.loglik, "test": test.loglik if test else None} | refs.get("drift_loglik", {})
        self.doc = {
            "version": 1,
            "eval_every": setup.every,
            "budget": setup.budget,
            "rule": RULE,
            "selection": {
                "name": setup.selection.task.name,
                "n": setup.selection.n,
                "resolution": setup.selection.resolution,
                "source": setup.selection.source,
            },
            "guards": [{"name": g.name, "origin": g.origin, "n": g.n, "resolution": g.resolution} for g in setup.guards]
            + ([{"name": DRIFT_NAME, "origin": "drift", "n": setup.drift.n, "resolution": 0.0}] if setup.drift else []),
            "base": {"selection": own.selection, "guards": self._references(own, refs.get("guards", {}))},
            "points": [],
            "kept": None,
            "stopped": None,
            "test": None,
            "test_base": None,
            "drift_loglik": drift_ref if setup.drift else None,
        }
        if test is not None:
            self.doc["test_base"] = {
                "selection": test.selection,
                "guards": self._references(test, refs.get("test", {})),
            }
        self._record(0, own)

    def _references(self, own: Scores, given: dict[str, float]) -> dict[str, float]:
        drift = {DRIFT_NAME: 1.0} if self.setup.drift is not None else {}
        return {**own.guards, **drift, **{k: float(v) for k, v in given.items() if k in {**own.guards, **drift}}}

    # -------------------------------------------------------------------------------------------- points and budget
    @property
    def points(self) -> list[EvalPoint]:
        return [EvalPoint(p["step"], p["selection"], p["guards"]) for p in self.doc["points"]]

    @property
    def base(self) -> dict:
        resolution = {g["name"]: g["resolution"] for g in self.doc["guards"]}
        return baseline(self.doc["base"]["guards"], resolution)

    def _guard_scores(self, scores: Scores, side: str) -> dict[str, float]:
        out = dict(scores.guards)
        if self.setup.drift is not None:
            out[DRIFT_NAME] = retained(scores.loglik, self.doc["drift_loglik"][side])
        return out

    def _record(self, step: int, scores: Scores) -> EvalPoint:
        """Add the point at ``step``, choose, save the kept weights when the kept point changed; write the file."""
        point = EvalPoint(step, scores.selection, self._guard_scores(scores, "selection"))
        within = None
        if self.setup.budget is not None:
            within = step == 0 or assess(point, self.base, self.setup.budget).within
        self.doc["points"].append(
            {
                "step": step,
                "selection": point.selection,
                "guards": dict(point.guards),
                "within": within,
                "loglik": scores.loglik,
            }
        )
        if self.setup.budget is not None:
            kept = choose(self.points, self.base, self.setup.budget)
            if kept.step == step:
                self._save_kept(step)
            self.doc["kept"] = {"step": kept.step, "selection": kept.selection, "guards": dict(kept.guards)}
        self._log(point, within)
        self._write()
        return point

    def _log(self, point: EvalPoint, within: bool | None) -> None:
        guards = " | ".join(f"{name} {value:.3f}" for name, value in point.guards.items())
        verdict = "" if within is None else (" | within budget" if within else " | over budget")
        log.info(
            "eval step %d | %s %.3f | %s%s", point.step, self.doc["selection"]["name"], point.selection, guards, verdict
        )
        record = {
            "step": point.step,
            "eval": {"selection": point.selection, "guards": dict(point.guards), "within": within},
        }
        self.step_log.metrics_file.write(json.dumps(record) + "\n")
        self.step_log.metrics_file.flush()
        scalars = {"eval/selection": point.selection, **{f"eval/{k}": v for k, v in point.guards.items()}}
        self.step_log.tracked.log(scalars, point.step)

    def _write(self) -> None:
        if self.ranks.is_main:
            write_json_atomic(self.output / SELECTION_FILE, self.doc)

    def _on_main(self, fn):
        """``fn()`` on rank 0 with the full weights at hand (gathered first under --fsdp); every rank gets its
        result, the others waiting in the gather."""
        with self.ranks.gathered([self.model]):
            out = fn() if self.ranks.is_main else None
        return self.ranks.gather(out)[0]

    def __call__(self, step: int, _state: Any = None) -> bool:
        if step % self.setup.every and step != self.total:
            return False
        recorded = {p["step"]: p for p in self.doc["points"]}
        if step in recorded:  # a resumed run replays the steps since its checkpoint: log the point, score nothing
            point = EvalPoint(step, recorded[step]["selection"], recorded[step]["guards"])
            self._log(point, recorded[step]["within"])
        else:
            start = time.perf_counter()
            scores = self._on_main(lambda: score(self.model, self.tok, self.setup, "selection", None, self.progress))
            point = self._record(step, scores)
            log.info("eval step %d took %.1f s", step, time.perf_counter() - start)
        if self.patience is not None and self.patience.update(point, self.base):
            reason = f"patience: {self.patience.k} evaluations in a row over budget or not better than the best"
            self.doc["stopped"] = {"step": step, "reason": reason}
            self._write()
            log.info("stopping at step %d (%s)", step, reason)
            return True
        return False

    # ---------------------------------------------------------------------------------------------- kept weights
    def _save_kept(self, step: int) -> None:
        """The trainable weights of ``step`` to KEPT_FILE, atomically (a collective under --fsdp)."""
        from safetensors.torch import save_file

        weights = full_parameters(self.model, trainable_only=True)
        if self.ranks.is_main:
            path = self.output / KEPT_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            save_file({n: t.detach().cpu().contiguous() for n, t in weights.items()}, tmp, {"step": str(step)})
            os.replace(tmp, path)
        self.ranks.barrier()

    def restore_kept(self, step: int) -> int | None:
        """Load the kept point's trainable weights into the model at ``step`` (every rank calls it); the kept step,
        or None without a budget. Nothing is loaded where the kept step is ``step`` itself."""
        kept = self.doc.get("kept")
        if kept is None:
            return None
        if kept["step"] != step:
            from safetensors import safe_open
            from safetensors.torch import load_file

            self.ranks.barrier()  # rank 0 may have written it last
            path = self.output / KEPT_FILE
            with safe_open(str(path), framework="pt") as f:
                saved = (f.metadata() or {}).get("step")
            if saved != str(kept["step"]):
                raise RuntimeError(f"{path}: holds step {saved}, not the kept step {kept['step']}")
            weights = load_file(path)
            for name, param in self.model.named_parameters():
                if param.requires_grad:
                    copy_full_(param, weights[name].to(param.device))
        return kept["step"]

    def finish(self, step: int) -> None:
        """At the end (``step``): the kept weights back in the model, its test side scored, selection.json
        completed, the frontier drawn. Every rank calls it before the final save."""
        kept_step = self.restore_kept(step)
        if kept_step is None:
            return
        kept = self.doc["kept"]
        guards = ", ".join(f"{k} {v:.3f}" for k, v in kept["guards"].items())
        log.info(
            "kept step %d (selection %.3f, guards %s, budget %g)",
            kept_step,
            kept["selection"],
            guards,
            self.setup.budget,
        )
        # kept step 0 is the start model, whose test side was scored (and cached by its weights) at the start
        fp = fingerprint(self.model) if kept_step == 0 and self.ranks.is_main and not self.ranks.fsdp else None
        test = self._on_main(lambda: score(self.model, self.tok, self.setup, "test", fp, self.progress))
        self.doc["test"] = {"selection": test.selection, "guards": self._guard_scores(test, "test")}
        self._write()
        if self.ranks.is_main:
            self._frontier()

    def _frontier(self) -> None:
        from selfdistill.continual.frontier import FrontierRun, plot_frontier

        run = FrontierRun(self.output.name, self.method, self.seed, tuple(self.points), self.base)
        title = f"{self.output.name}: {self.doc['selection']['name']} within budget {self.setup.budget:g}"
        plot_frontier([run], self.setup.budget, self.output / FRONTIER_FILE, title=title)
