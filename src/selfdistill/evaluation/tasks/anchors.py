"""Anchor pools: prompts without demonstrations for the replay anchor (``--anchor general_chat``).

    prompts = ANCHOR_POOLS["general_chat"]()      # 600 Examples, prompts only, same order on every platform

An anchor prompt asks for the model's ordinary behaviour (explain, list, advise, compare, write a little), so that
the anchor term holds the model's answers where the task's format must not spread. ``general_chat`` is written by
this project from templates and topics of its own: it shares no source with any evaluated item (the prior suite,
prior_probe, IFEval, the skills and their near-prior tasks; ``tests/test_anchor.py`` checks the texts).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from selfdistill.data import Example
from selfdistill.evaluation.tasks.base import user_turn

TEMPLATES = (
    "Explain {topic} in two or three sentences.",
    "What is {topic}? Answer briefly.",
    "Give me three interesting facts about {topic}.",
    "Write a short paragraph about {topic} for a ten-year-old.",
    "What are the main advantages and disadvantages of {topic}?",
    "Describe {topic} to someone who has never heard of it.",
    "Write a haiku about {topic}.",
    "List a few common misconceptions about {topic}.",
    "How would you start learning about {topic}? Give a short plan.",
    "Summarize the history of {topic} in a few sentences.",
    "Why do people care about {topic}?",
    "Write one question a student might ask about {topic}, and answer it.",
    "What is a good everyday example of {topic}?",
    "Tell me something surprising about {topic}.",
    "In plain words, how does {topic} work?",
    "Write a friendly two-sentence note recommending {topic} to a friend.",
    "What would the world be like without {topic}?",
    "Name two words closely related to {topic} and say why.",
    "Give a one-sentence definition of {topic}.",
    "What should a beginner know first about {topic}?",
)
TOPICS = (
    "photosynthesis",
    "the water cycle",
    "volcanoes",
    "honeybees",
    "the moon's phases",
    "rainbows",
    "gravity",
    "bread baking",
    "recycling",
    "electric cars",
    "the printing press",
    "chess",
    "jazz music",
    "origami",
    "public libraries",
    "vaccines",
    "coral reefs",
    "the Roman aqueducts",
    "solar panels",
    "sleep",
    "maps",
    "composting",
    "lighthouses",
    "the violin",
    "tides",
    "bicycles",
    "tea",
    "deserts",
    "penguins",
    "museums",
)


def general_chat() -> list[Example]:
    """Every template × topic as a one-turn prompt, shuffled with a fixed seed."""
    texts = [t.format(topic=topic) for t in TEMPLATES for topic in TOPICS]
    random.Random("general_chat").shuffle(texts)
    return [Example(user_turn(text), source=f"general_chat[{i}]") for i, text in enumerate(texts)]


ANCHOR_POOLS: dict[str, Callable[[], list[Example]]] = {"general_chat": general_chat}
