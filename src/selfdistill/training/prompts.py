"""Chat rendering, teacher templates and token budgets.

    ids = student_prompt_ids(tok, example)
    ids, truncated = teacher_prompt_ids(tok, example, "paper", max_tokens=2048)

A teacher template is data: a sequence of ``(role, format string)`` turns with fields ``{prompt}``,
``{demonstration}`` and ``{context}``. A plain user string (one user turn) is accepted as a custom template.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from selfdistill.data import Example
from selfdistill.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PAPER = (
    "{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
    "Now answer with a response of your own, including the thinking process:"
)
TEACHER_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    # The SDFT paper's template: question and demonstration in one user turn.
    "paper": (("user", PAPER),),
    # The demonstration as an earlier assistant answer to the same question: small models imitate it far better.
    "chat-turn": (("user", "{prompt}"), ("assistant", "{demonstration}"), ("user", "{prompt}")),
}
CONTEXT_PREFIX = "Use this information:\n{context}\n\n"


class PromptBudgetError(UserError):
    """A teacher prompt that cannot fit its token budget."""


def resolve_template(name_or_format: str) -> tuple[tuple[str, str], ...]:
    """A registered template by name, or a custom format string used as one user turn."""
    if name_or_format in TEACHER_TEMPLATES:
        return TEACHER_TEMPLATES[name_or_format]
    if "{demonstration}" not in name_or_format:
        raise ValueError(
            f"teacher_template: {name_or_format!r} is neither a template name "
            f"({', '.join(TEACHER_TEMPLATES)}) nor a format string containing '{{demonstration}}'"
        )
    return (("user", name_or_format),)


def chat_ids(tok: PreTrainedTokenizerBase, messages: Sequence[dict[str, str]]) -> list[int]:
    """Token ids of ``messages`` rendered with the chat template, ending with the assistant generation prompt."""
    if tok.chat_template is None:  # a base model: plain concatenation of the turns
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return tok(text, add_special_tokens=True)["input_ids"]
    out = tok.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, return_dict=True)
    return list(out["input_ids"])


def student_prompt_ids(tok: PreTrainedTokenizerBase, example: Example) -> list[int]:
    return chat_ids(tok, example.messages)


def teacher_messages(example: Example, template: Sequence[tuple[str, str]], demonstration: str) -> list[dict[str, str]]:
    """The prompt with its last user turn replaced by the template's turns (earlier turns kept as they are)."""
    last_user = max(i for i, m in enumerate(example.messages) if m["role"] == "user")
    fields = {"prompt": example.question, "demonstration": demonstration, "context": example.context or ""}
    turns = [{"role": role, "content": fmt.format(**fields)} for role, fmt in template]
    if example.context and not any("{context}" in fmt for _, fmt in template):
        turns[0]["content"] = CONTEXT_PREFIX.format(context=example.context) + turns[0]["content"]
    return list(example.messages[:last_user]) + turns + list(example.messages[last_user + 1 :])


def teacher_prompt_ids(
    tok: PreTrainedTokenizerBase,
    example: Example,
    template: str | Sequence[tuple[str, str]] = "paper",
    *,
    max_tokens: int | None = None,
    truncate_demonstration: bool = True,
) -> tuple[list[int], bool]:
    """Teacher prompt ids and whether the demonstration was cut to fit ``max_tokens``.

    The question and context are never cut: only the demonstration's tail is, keeping its start.
    """
    turns = resolve_template(template) if isinstance(template, str) else template
    demo = example.completion or ""
    ids = chat_ids(tok, teacher_messages(example, turns, demo))
    if max_tokens is None or len(ids) <= max_tokens:
        return ids, False
    where = example.source or "example"
    if not truncate_demonstration:
        raise PromptBudgetError(
            f"{where}: teacher prompt is {len(ids)} tokens, over max_teacher_prompt_tokens={max_tokens} "
            "(allow truncating the demonstration, or raise the budget)"
        )
    overhead = len(chat_ids(tok, teacher_messages(example, turns, "")))
    if overhead > max_tokens:
        raise PromptBudgetError(
            f"{where}: the question alone makes a {overhead}-token teacher prompt, over "
            f"max_teacher_prompt_tokens={max_tokens}; the question is never truncated, raise the budget"
        )
    demo_ids = tok(demo, add_special_tokens=False)["input_ids"]
    keep = len(demo_ids) - (len(ids) - max_tokens)
    # Re-tokenizing a cut string can merge differently; shrink until the rendered prompt fits.
    while keep > 0:
        ids = chat_ids(tok, teacher_messages(example, turns, tok.decode(demo_ids[:keep])))
        if len(ids) <= max_tokens:
            return ids, True
        keep -= max(1, len(ids) - max_tokens)
    return chat_ids(tok, teacher_messages(example, turns, "")), True
