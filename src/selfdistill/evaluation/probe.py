"""ICL-gap probe: before training, does the teacher (demonstration in context) beat the student (without)?

    selfdistill probe --model smollm2-135m-instruct --task bfcl --limit 16 --output probe.json

On N seeded examples with demonstrations, per teacher template: greedy teacher vs student score (one scorer), mean
per-token forward KL(teacher‖student) over the full vocabulary on student samples, masked as SDFT trains, and the
mean per-token log-probability of the demonstration under both prompts. SDFT pulls the student toward the teacher,
so it needs a teacher that is clearly better: a paired gap ≥ ``MIN_GAP`` and ≥ 2 standard errors. Shapes: B rows,
C completion tokens, V vocabulary.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from selfdistill.config import config_dict
from selfdistill.data import DataError, Example, read_examples
from selfdistill.evaluation.config import ProbeConfig
from selfdistill.evaluation.evaluate import generate, subset_indices
from selfdistill.evaluation.tasks import GenerationTask, TaskError, get_task
from selfdistill.evaluation.tasks.scorers import SCORERS, check_answer
from selfdistill.fileio import write_json_atomic
from selfdistill.models import load_model
from selfdistill.stats import mean_stderr
from selfdistill.training import engines
from selfdistill.training.engines import Sampling
from selfdistill.training.losses import forward_kl, masked_mean, token_nll
from selfdistill.training.prompts import student_prompt_ids, teacher_prompt_ids
from selfdistill.training.rollout import completion_logits, eos_ids, pack, sample
from selfdistill.training.setup import resolve_device

log = logging.getLogger(__name__)

MIN_GAP = 0.1
"""Smallest teacher-minus-student score gap that counts as "clearly better" (it must also be ≥ 2 paired SE)."""


# ------------------------------------------------------------------------------------------------ examples, scoring
def token_f1(output: str, reference: str) -> float:
    """SQuAD-style F1 of the lowercase word multisets (punctuation ignored)."""
    out, ref = re.findall(r"\w+", output.casefold()), re.findall(r"\w+", reference.casefold())
    overlap = sum((Counter(out) & Counter(ref)).values())
    return 2 * overlap / (len(out) + len(ref)) if overlap else 0.0


def load_probe_examples(cfg: ProbeConfig) -> tuple[list[Example], Callable[[Example, str], float], str, int]:
    """Examples with demonstrations, a ``(example, output) -> score`` function, its name, the answer length."""
    if cfg.task is not None:
        task = get_task(cfg.task, cfg.data_dir)
        examples = task.train_examples() if isinstance(task, GenerationTask) else []
        if not examples:
            raise TaskError(f"task {cfg.task!r} has no training split with demonstrations to probe")
        metric = task.primary_metric
        return examples, lambda ex, out: task.score(ex, out)[metric], metric, task.max_new_tokens
    examples = [ex for ex in read_examples(cfg.data, require_completion=False) if ex.completion]
    if not examples:
        raise DataError(f"{cfg.data}: no rows with a demonstration (completion, demonstration or response)")
    if all(ex.answer is not None for ex in examples):
        for ex in examples:
            if problem := check_answer(cfg.scorer, ex.answer):
                raise DataError(f"{ex.source}: {problem}")
        fn = SCORERS[cfg.scorer]
        return examples, lambda ex, out: fn(out, ex.answer), cfg.scorer, 128
    # Without a reference answer the demonstration is the reference: overlap with it stands in for accuracy.
    return examples, lambda ex, out: token_f1(out, ex.completion), "token_f1", 128


# ------------------------------------------------------------------------------------------------- measurements
def _row_means(values_BC: torch.Tensor, mask_BC: torch.Tensor) -> list[float]:
    """Per-sequence token means (training's ``masked_mean`` of one row); rows with no masked-in token left out."""
    return [masked_mean(v_C, m_C).item() for v_C, m_C in zip(values_BC, mask_BC, strict=True) if m_C.any()]


def _chunks(n: int, size: int, desc: str, progress: bool) -> Iterable[range]:
    ranges = [range(i, min(i + size, n)) for i in range(0, n, size)]
    return tqdm(ranges, desc=desc, disable=not progress)


@torch.no_grad()
def demo_logprobs(model, pad_id: int, prompts, demos, cfg: ProbeConfig, desc: str) -> list[float]:
    """Mean per-token log-probability of each demonstration (plus EOS) after its prompt."""
    device = next(model.parameters()).device
    out: list[float] = []
    for rows in _chunks(len(prompts), cfg.batch_size, desc, cfg.progress):
        batch = pack([prompts[i] for i in rows], [demos[i] for i in rows], pad_id).to(device)
        logp_BC = -token_nll(completion_logits(model, batch), batch.completion_ids_BC)
        out += _row_means(logp_BC, batch.completion_mask_BC)
    return out


@torch.no_grad()
def sample_kl(model, tok, student_prompts, teacher_prompts: dict, cfg: ProbeConfig, engine=None) -> dict[str, list]:
    """Per-sample mean token KL(teacher‖student) on student samples, for each template's teacher prompts."""
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    kl: dict[str, list[float]] = {name: [] for name in teacher_prompts}
    for rows in _chunks(len(student_prompts), cfg.batch_size, "KL on student samples", cfg.progress):
        batch_prompts = [student_prompts[i] for i in rows]
        if engine is None:
            ro = sample(
                model,
                tok,
                batch_prompts,
                temperature=cfg.temperature,
                max_new_tokens=cfg.sample_tokens,
                num_generations=cfg.num_samples,
                logprobs=False,
            )
        else:
            spec = Sampling(
                max_new_tokens=cfg.sample_tokens,
                temperature=cfg.temperature,
                num_generations=cfg.num_samples,
                logprobs=False,
            )
            ro = engine.generate(batch_prompts, spec)
        owners = [rows[j] for j in ro.prompt_index]
        student = pack([student_prompts[i] for i in owners], ro.completions, tok.pad_token_id).to(device)
        student_logits_BCV = completion_logits(model, student)
        mask_BC = student.completion_mask_BC.clone()
        mask_BC[:, : cfg.skip_first_tokens] = 0
        for name, prompts in teacher_prompts.items():
            teacher = pack([prompts[i] for i in owners], ro.completions, tok.pad_token_id).to(device)
            kl_BC = forward_kl(student_logits_BCV, completion_logits(model, teacher))
            kl[name] += _row_means(kl_BC, mask_BC)
    return kl


def greedy(model, tok, examples, prompts, score: Callable, max_new: int, cfg: ProbeConfig, desc: str, engine=None):
    """Greedy answers to ``prompts`` (HF generate, or ``engine``) and their scores."""
    outs = generate(
        model, tok, prompts, max_new, batch_size=cfg.batch_size, progress=cfg.progress, desc=desc, engine=engine
    )
    return outs, [float(score(ex, out)) for ex, out in zip(examples, outs, strict=True)]


def template_row(scores, student_scores, kl, demo_lp, student_lp, truncated: int) -> dict:
    """Means and standard errors; the gap's SE is paired (per-example differences): both saw the same items."""
    (t, t_se), (k, k_se) = mean_stderr(scores), mean_stderr(kl)
    gap, gap_se = mean_stderr([a - b for a, b in zip(scores, student_scores, strict=True)])
    row = {"teacher": t, "teacher_stderr": t_se, "gap": gap, "gap_stderr": gap_se, "kl": k, "kl_stderr": k_se}
    row |= {"demo_logp_student": mean_stderr(student_lp)[0], "demo_logp_teacher": mean_stderr(demo_lp)[0]}
    return row | {"truncated_demonstrations": truncated}


# ------------------------------------------------------------------------------------------------- report
def verdict(metric: str, student: dict, templates: dict[str, dict]) -> dict:
    """The best template (largest gap; ties: the teacher that finds the demonstration likeliest) and whether its
    teacher is clearly better: gap ≥ MIN_GAP and ≥ 2 paired standard errors (no spread counts as SE 0)."""
    best = max(templates, key=lambda t: (templates[t]["gap"], templates[t]["demo_logp_teacher"]))
    row, gap, se = templates[best], templates[best]["gap"], templates[best]["gap_stderr"]
    clearly = gap >= MIN_GAP and se is not None and gap >= 2 * se
    shown = f"{metric} {row['teacher']:.2f} vs {student['score']:.2f}, gap {gap:+.2f} ± {se or 0:.2f}"
    judged = "clearly better than student" if clearly else "NOT clearly better than student"
    needs = "" if clearly else f" (that needs gap >= {MIN_GAP} and >= 2 SE)"
    hint = "SDFT has a signal here" if clearly else "expect little for SDFT to learn"
    text = f"best template '{best}' ({shown}): teacher {judged}{needs} -> {hint}"
    return {"template": best, "clearly_better": clearly, "text": text}


def _pm(mean: float, se: float | None, sign: str = "") -> str:
    return f"{mean:{sign}.2f} ± {se or 0:.2f}"


def format_table(report: dict) -> str:
    """The table, one row per template (the student's columns repeat: it has no template), and the verdict."""
    s, widths = report["student"], (13, 13, 13, 13, 7, 17, 17)

    def line(*cells: str) -> str:
        return "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [
        f"{report['source']}: acc = {report['metric']}, n = {report['n']}, KL on {s['kl_samples']} samples",
        line("template", "teacher acc", "student acc", "gap", "KL", "demo logp student", "demo logp teacher"),
    ]
    for name, r in report["templates"].items():
        teacher, gap = _pm(r["teacher"], r["teacher_stderr"]), _pm(r["gap"], r["gap_stderr"], "+")
        kl = "n/a" if r["kl"] is None else f"{r['kl']:.3f}"  # every sample ended within skip_first_tokens
        numbers = kl, f"{s['demo_logp']:.3f}", f"{r['demo_logp_teacher']:.3f}"
        lines.append(line(name[:13], teacher, _pm(s["score"], s["stderr"]), gap, *numbers))
    return "\n".join([*lines, f"verdict: {report['verdict']['text']}"])


# ------------------------------------------------------------------------------------------------- entry point
def run_probe(cfg: ProbeConfig) -> dict:
    """Measure the ICL gap, print the table and verdict, write the JSON report to ``cfg.output`` if given."""
    start = time.perf_counter()
    examples, score, metric, task_max_new = load_probe_examples(cfg)
    examples = [examples[i] for i in subset_indices(len(examples), cfg.limit, cfg.seed)]
    max_new, budget = cfg.max_new_tokens or task_max_new, cfg.max_teacher_prompt_tokens
    engines.require(cfg.rollout)
    model, tok = load_model(cfg.model, device=resolve_device(cfg.device))
    model.eval()
    engine = engines.make_engine(cfg.rollout, model, tok, seed=cfg.seed) if cfg.rollout != "hf" else None
    end_of_turn = tok.eos_token_id if tok.eos_token_id is not None else eos_ids(tok, model)[0]
    demos = [tok(ex.completion, add_special_tokens=False)["input_ids"] + [end_of_turn] for ex in examples]
    student_prompts = [student_prompt_ids(tok, ex) for ex in examples]
    teacher_prompts, truncated = {}, {}
    for name in cfg.templates:
        built = [teacher_prompt_ids(tok, ex, name, max_tokens=budget) for ex in examples]
        teacher_prompts[name], truncated[name] = [ids for ids, _ in built], sum(cut for _, cut in built)

    # -------- student: greedy score and demonstration likelihood, once
    student_out, student_scores = greedy(model, tok, examples, student_prompts, score, max_new, cfg, "student", engine)
    student_lp = demo_logprobs(model, tok.pad_token_id, student_prompts, demos, cfg, "demo logp student")
    # -------- KL on the student's own samples: every template's teacher scores the same samples
    kl = sample_kl(model, tok, student_prompts, teacher_prompts, cfg, engine)
    # -------- teacher, per template
    rows, teacher_items = {}, {}
    for name, prompts in teacher_prompts.items():
        out, scores = greedy(model, tok, examples, prompts, score, max_new, cfg, f"teacher {name}", engine)
        demo_lp = demo_logprobs(model, tok.pad_token_id, prompts, demos, cfg, f"demo logp {name}")
        rows[name] = template_row(scores, student_scores, kl[name], demo_lp, student_lp, truncated[name])
        teacher_items[name] = (out, scores)

    s, s_se = mean_stderr(student_scores)
    student = {"score": s, "stderr": s_se, "demo_logp": mean_stderr(student_lp)[0], "kl_samples": len(kl[name])}
    source = f"task {cfg.task}" if cfg.task else str(cfg.data)
    report = {"source": source, "model": cfg.model, "metric": metric, "n": len(examples), "student": student}
    report |= {"templates": rows, "verdict": verdict(metric, student, rows)}
    report["items"] = [
        {"source": ex.source, "student": {"output": student_out[i], "score": student_scores[i]}}
        | {name: {"output": out[i], "score": sc[i]} for name, (out, sc) in teacher_items.items()}
        for i, ex in enumerate(examples)
    ]
    report["config"] = config_dict(cfg)
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(format_table(report))
    if cfg.output:
        cfg.output.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cfg.output, report)
        log.info("wrote %s", cfg.output)
    if engine is not None:
        engine.close()
    return report
