"""The evaluation engine on the tiny random model: log-likelihood and generation against naive one-at-a-time loops,
the seeded ``limit`` subset, aggregation, and the ``run_eval`` entry point."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from selfdistill.data import Example
from selfdistill.evaluation.evaluate import (
    MIN_SHARED_PREFIX,
    EvalConfig,
    aggregate,
    encode_pair,
    evaluate_tasks,
    generate,
    loglikelihood,
    run_eval,
    subset_indices,
)
from selfdistill.evaluation.tasks.base import GenerationTask, LoglikRequest
from selfdistill.evaluation.tasks.choice import CHOICE_TASKS
from selfdistill.training.prompts import chat_ids


def _naive(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    """One request, one unpadded forward pass; the lm-eval split written out independently."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    ctx = tok.encode(context) if context else [tok.bos_token_id]
    whole = (
        ctx + tok.encode(continuation, add_special_tokens=False) if not context else tok.encode(context + continuation)
    )
    cont = whole[len(ctx) :]
    with torch.no_grad():
        logp = model(torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1].float().log_softmax(-1)
    target = torch.tensor(cont)
    return logp.gather(-1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())


def _greedy_text(model, tok, context: str, n: int) -> str:
    """A continuation the model predicts greedily (so ``is_greedy`` is exercised), if it survives re-tokenizing."""
    ids = tok.encode(context)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    text = tok.decode(ids[len(tok.encode(context)) :])
    assert encode_pair(tok, context, text)[1] == ids[len(tok.encode(context)) :], "pick another context"
    return text


@pytest.fixture(scope="module")
def requests(tiny) -> list[LoglikRequest]:
    model, tok = tiny
    q = "Question: Which gas do plants take in from the air?\nAnswer:"
    return [
        LoglikRequest(q, " Carbon dioxide"),
        LoglikRequest(q, " Oxygen, which they also release at night"),
        LoglikRequest(q, " N"),
        LoglikRequest("The cat sat on", " the mat"),
        LoglikRequest("Answer: ", "B"),  # trailing space moves onto the continuation
        LoglikRequest("", "Hello there"),  # empty context conditions on BOS
        LoglikRequest("A much longer context that keeps going. " * 12, " end"),
        LoglikRequest("Sarah was a better surgeon than Maria so Sarah", " always got the harder cases."),
        LoglikRequest("Sarah was a better surgeon than Maria so Maria", " always got the harder cases."),
        LoglikRequest("Once upon a time", _greedy_text(model, tok, "Once upon a time", 3)),
        LoglikRequest(q, " Carbon dioxide"),  # an exact duplicate
    ]


@pytest.fixture(scope="module")
def expected(tiny, requests) -> list[tuple[float, bool]]:
    return [_naive(*tiny, r.context, r.continuation) for r in requests]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_loglikelihood_matches_naive_loop(tiny, requests, expected, batch_size: int) -> None:
    model, tok = tiny
    assert any(greedy for _, greedy in expected) and not all(greedy for _, greedy in expected)
    got = loglikelihood(model, tok, requests, batch_size=batch_size, progress=False)
    assert len(got) == len(requests)
    for res, (logprob, greedy), req in zip(got, expected, requests, strict=True):
        assert res.logprob == pytest.approx(logprob, abs=1e-4), req
        assert res.is_greedy == greedy, req
        assert res.num_tokens == len(encode_pair(tok, req.context, req.continuation)[1])


def test_shared_few_shot_prefix_matches_naive_loop(tiny) -> None:
    model, tok = tiny
    primer = "Q: What is two plus two?\nA: Four.\n\nQ: What colour is the sky?\nA: Blue.\n\n"
    requests = [
        LoglikRequest(primer + f"Q: {q}\nA:", f" {a}")
        for q in ("Where is Paris?", "Who wrote Hamlet, the play?")
        for a in ("France.", "Shakespeare wrote it.", "I have no comment.")
    ]
    requests.append(LoglikRequest(primer.rstrip(), " Q"))  # a context that is almost all prefix
    assert len(os.path.commonprefix([tok.encode(r.context) for r in requests])) >= MIN_SHARED_PREFIX
    expected = [_naive(model, tok, r.context, r.continuation) for r in requests]
    for batch_size in (1, 4):
        got = loglikelihood(model, tok, requests, batch_size=batch_size, progress=False)
        assert [r.logprob for r in got] == pytest.approx([lp for lp, _ in expected], abs=1e-4)
        assert [r.is_greedy for r in got] == [g for _, g in expected]


def test_encode_pair_splits_like_lm_eval(tiny) -> None:
    _, tok = tiny
    assert encode_pair(tok, "Answer: ", "A") == (tok.encode("Answer:"), tok.encode(" A"))
    ctx, cont = encode_pair(tok, "Question: x\nAnswer:", " Paris")
    assert ctx + cont == tok.encode("Question: x\nAnswer: Paris")
    with pytest.raises(ValueError, match="empty continuation"):
        encode_pair(tok, "abc", "")


def test_loglikelihood_restores_training_mode(tiny, requests) -> None:
    model, tok = tiny
    model.train()
    try:
        loglikelihood(model, tok, requests[:2], progress=False)
        assert model.training
    finally:
        model.eval()


def _unbatched_greedy(model, tok, ids: list[int], max_new_tokens: int) -> str:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
        )
    new = out[0, len(ids) :].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return tok.decode(new, skip_special_tokens=True)


def test_generate_matches_unbatched_greedy(tiny) -> None:
    model, tok = tiny
    texts = [
        "Hi",
        "What is the capital of France? Answer in one word.",
        "2+2=",
        "Tell me a long story about a cat.",
    ]
    prompts = [chat_ids(tok, [{"role": "user", "content": t}]) for t in texts]
    expected = [_unbatched_greedy(model, tok, p, 8) for p in prompts]
    assert len({len(p) for p in prompts}) == len(prompts)  # mixed lengths: left padding is exercised
    for batch_size in (1, 3, 4):
        assert generate(model, tok, prompts, 8, batch_size=batch_size, progress=False) == expected


def test_generate_stops_at_eos(tiny) -> None:
    model, tok = tiny
    prompt = chat_ids(tok, [{"role": "user", "content": "Count to ten."}])
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, len(prompt) :].tolist()
    stop = new[3]  # pretend the 4th greedy token is an end-of-sequence token
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    try:
        (text,) = generate(model, tok, [prompt], 6, progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    assert text == tok.decode(new[: new.index(stop)], skip_special_tokens=True)


def test_subset_indices_is_seeded_sorted_and_total() -> None:
    a = subset_indices(1000, 50, seed=0)
    assert a == subset_indices(1000, 50, seed=0) and a == sorted(set(a)) and len(a) == 50
    assert a != subset_indices(1000, 50, seed=1)
    assert subset_indices(7, 50, seed=0) == list(range(7)) == subset_indices(7, None)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_limit_subset_is_deterministic_and_batch_independent(tiny, data_dir: Path, tmp_path: Path) -> None:
    model, tok = tiny
    task = CHOICE_TASKS["arc_easy"](data_dir)
    runs = []
    for batch_size in (2, 7):
        path = tmp_path / f"p{batch_size}.jsonl"
        res = evaluate_tasks(model, tok, [task], limit=6, seed=3, batch_size=batch_size, predictions_path=path)
        runs.append((res["arc_easy"], _read_jsonl(path)))
    (res_a, rows_a), (res_b, rows_b) = runs
    assert [r["id"] for r in rows_a] == [r["id"] for r in rows_b]
    assert [r["id"] for r in rows_a] == [task.test_items()[i].id for i in subset_indices(2376, 6, seed=3)]
    assert res_a["n"] == 6 and res_a["primary"] == "acc_norm" and list(res_a["metrics"]) == ["acc_norm", "acc"]
    for m in res_a["metrics"]:
        assert res_a["metrics"][m] == pytest.approx(res_b["metrics"][m])
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert ra["logprobs"] == pytest.approx(rb["logprobs"], abs=1e-4)
        assert set(ra) == {"task", "id", "logprobs", "is_greedy", "gold", "labels", "scores"}


class _EchoTask(GenerationTask):
    """A fixture task: three prompts, scored on whether the output is non-empty and its length."""

    name = "echo"
    primary_metric = "nonempty"
    max_new_tokens = 4

    def test_examples(self) -> list[Example]:
        return [Example(messages=({"role": "user", "content": f"Say {w}."},), answer=w) for w in ("a", "bb", "ccc")]

    def score(self, example: Example, output: str) -> dict[str, float]:
        return {"nonempty": float(bool(output)), "chars": float(len(output))}


def test_evaluate_generation_task_writes_predictions(tiny, tmp_path: Path) -> None:
    model, tok = tiny
    path = tmp_path / "preds.jsonl"
    res = evaluate_tasks(model, tok, [_EchoTask(tmp_path)], limit=2, seed=0, predictions_path=path)["echo"]
    rows = _read_jsonl(path)
    assert res["n"] == 2 and len(rows) == 2 and res["primary"] == "nonempty"
    assert {r["task"] for r in rows} == {"echo"} and all(isinstance(r["prediction"], str) for r in rows)
    assert res["metrics"]["chars"] == pytest.approx(sum(r["scores"]["chars"] for r in rows) / 2)


def test_aggregate_mean_and_stderr() -> None:
    metrics, stderr = aggregate([{"acc": 1.0}, {"acc": 0.0}, {"acc": 1.0}, {"acc": 1.0}])
    assert metrics == {"acc": 0.75}
    assert stderr["acc"] == pytest.approx(math.sqrt(0.25 / 4))  # sample variance 0.25, n 4
    assert aggregate([{"acc": 1.0}])[1] == {"acc": None}


def test_eval_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="^limit"):
        EvalConfig(limit=0)
    with pytest.raises(ValueError, match="^batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(ValueError, match="^tasks"):
        EvalConfig(tasks=[])
    with pytest.raises(ValueError, match="^device"):
        EvalConfig(device="tpu-ish")


def test_run_eval_writes_results_and_predictions(data_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "res.json"
    cfg = EvalConfig(model="tiny-random", tasks=["arc_easy,winogrande"], limit=4, output=out, data_dir=data_dir)
    report = run_eval(cfg)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["config"]["tasks"] == ["arc_easy", "winogrande"]
    for name in ("arc_easy", "winogrande"):
        res = saved["results"][name]
        assert res["n"] == 4 and 0.0 <= res["metrics"][res["primary"]] <= 1.0
    rows = _read_jsonl(tmp_path / "res.predictions.jsonl")
    assert len(rows) == 8
    table = capsys.readouterr().out
    assert "arc_easy" in table and "acc_norm" in table and "±" in table
