"""Teacher templates and the token budget: the question is never truncated."""

from __future__ import annotations

import random

import pytest

from selfdistill.data import Example
from selfdistill.training.prompts import (
    PromptBudgetError,
    resolve_template,
    student_prompt_ids,
    teacher_messages,
    teacher_prompt_ids,
)


@pytest.fixture(scope="module")
def tok():
    from selfdistill.models import load_tokenizer

    return load_tokenizer("tiny-random")


def _example(question: str, demo: str, context: str | None = None) -> Example:
    return Example(({"role": "user", "content": question},), demo, context, source="t.jsonl:1")


def test_paper_template_text():
    ex = _example("Q?", "D.")
    (msg,) = teacher_messages(ex, resolve_template("paper"), "D.")
    assert msg == {
        "role": "user",
        "content": "Q?\n\nThis is an example for a response to the question:\nD.\n\n"
        "Now answer with a response of your own, including the thinking process:",
    }


def test_chat_turn_template_and_context():
    ex = _example("Q?", "D.", context="DOC")
    msgs = teacher_messages(ex, resolve_template("chat-turn"), "D.")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0]["content"].startswith("Use this information:\nDOC") and msgs[1]["content"] == "D."


def test_custom_template_and_bad_template():
    ex = _example("Q?", "D.")
    (msg,) = teacher_messages(ex, resolve_template("Example: {demonstration}\nNow: {prompt}"), "D.")
    assert msg["content"] == "Example: D.\nNow: Q?"
    with pytest.raises(ValueError, match="teacher_template"):
        resolve_template("no-such-template")


def test_earlier_turns_are_kept():
    ex = Example(({"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}), "D.", source="x")
    msgs = teacher_messages(ex, resolve_template("paper"), "D.")
    assert msgs[0] == {"role": "system", "content": "S"} and "Q?" in msgs[1]["content"]


def test_question_is_never_truncated(tok):
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]
    for trial in range(60):
        question = f"QSTART {trial} " + " ".join(rng.choices(words, k=rng.randint(1, 60))) + " QEND"
        demo = "DSTART " + " ".join(rng.choices(words, k=rng.randint(1, 300)))
        ex = _example(question, demo)
        budget = rng.randint(20, 400)
        try:
            ids, cut = teacher_prompt_ids(tok, ex, "paper", max_tokens=budget)
        except PromptBudgetError as err:
            overhead, _ = teacher_prompt_ids(tok, _example(question, ""), "paper")
            assert len(overhead) > budget, "only a question that cannot fit may be refused"
            assert "never truncated" in str(err)
            continue
        text = tok.decode(ids)
        assert question in text
        assert len(ids) <= budget
        full, _ = teacher_prompt_ids(tok, ex, "paper")
        assert cut == (len(full) > budget)
        overhead, _ = teacher_prompt_ids(tok, _example(question, ""), "paper")
        if cut and budget - len(overhead) >= 8:
            assert "DSTART" in text  # the demonstration keeps its start, not its end


def test_strict_mode_refuses(tok):
    ex = _example("Q?", "word " * 200)
    with pytest.raises(PromptBudgetError, match="max_teacher_prompt_tokens=50"):
        teacher_prompt_ids(tok, ex, "paper", max_tokens=50, truncate_demonstration=False)


def test_student_prompt_ends_with_generation_prompt(tok):
    ids = student_prompt_ids(tok, _example("Hello?", "Hi."))
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
