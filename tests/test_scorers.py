"""Scorers and answer extractors on hand-written outputs: user-task scorers, BFCL AST match, IFEval checkers,
and the GSM8K / PubMedQA / SciKnowEval / fictional-knowledge extractors."""

from __future__ import annotations

import pytest

from selfdistill.data import Example
from selfdistill.evaluation.tasks import ifeval
from selfdistill.evaluation.tasks.bfcl import BFCLTask, check_call, parse_calls, render_call
from selfdistill.evaluation.tasks.ifeval import IFEvalTask, check_instruction, split_sentences
from selfdistill.evaluation.tasks.scorers import SCORERS, check_answer, extract_choice, extract_number
from selfdistill.evaluation.tasks.skills import extract_decision, gsm8k_gold, probe_scores

# ---------------------------------------------------------------------------------------------------------------
# User-task scorers


@pytest.mark.parametrize(
    ("scorer", "output", "answer", "expected"),
    [
        ("exact", "  Paris. ", "paris", 1.0),
        ("exact", "Paris is the capital", "Paris", 0.0),
        ("exact", "Lyon", ["Paris", "Lyon"], 1.0),
        ("contains", "I think it is Paris, France.", "paris", 1.0),
        ("contains", "I think it is Lyon.", "Paris", 0.0),
        ("number", "She pays 5 + 7 = 12 dollars.\n#### 1,250", 1250, 1.0),
        ("number", "The answer is $18.00.", "18", 1.0),
        ("number", "So the result is 17.", 18, 0.0),
        ("number", "no digits here", 3, 0.0),
        ("choice", "The answer is (C).", "C", 1.0),
        ("choice", "B", 1, 1.0),
        ("choice", "A molecule with two rings", "A", 0.0),
        ("choice", "D. 42 g/mol", "b", 0.0),
        ("json", 'Here you go:\n```json\n{"a": 1, "b": [2, 3]}\n```', {"b": [2, 3], "a": 1}, 1.0),
        ("json", 'Result: {"a": 1} done', '{"a": 1}', 1.0),
        ("json", '{"a": 2}', {"a": 1}, 0.0),
        ("json", "not json at all", {"a": 1}, 0.0),
        ("regex", "Order #A-1234 shipped", r"#A-\d{4}", 1.0),
        ("regex", "order shipped", r"(?i)SHIPPED$", 1.0),
        ("regex", "Order #A-12 shipped", r"#A-\d{4}", 0.0),
    ],
)
def test_scorer(scorer, output, answer, expected):
    assert SCORERS[scorer](output, answer) == expected


def test_scorer_names():
    assert set(SCORERS) == {"exact", "contains", "number", "choice", "json", "regex"}


def test_check_answer_rejects_unusable_answers():
    assert check_answer("number", "twelve") is not None
    assert check_answer("choice", "maybe") is not None
    assert check_answer("regex", "([unclosed") is not None
    assert check_answer("exact", {"a": 1}) is not None
    assert check_answer("json", {"a": 1}) is None
    assert check_answer("number", "1,250") is None


# ---------------------------------------------------------------------------------------------------------------
# Extractors used by the skill tasks


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("3 + 4 = 7 so\n#### 7", 7.0),
        ("#### $1,000.", 1000.0),
        ("First 12, then 15.\nThe answer is -3.", -3.0),
        ("She has 4 apples and buys 6 more: 10", 10.0),
        ("#### 0.5 (half)", 0.5),
        ("I don't know", None),
    ],
)
def test_extract_number(output, expected):
    assert extract_number(output) == expected


def test_gsm8k_gold():
    assert gsm8k_gold("9 * 2 = <<9*2=18>>18\n#### 18") == 18.0
    assert gsm8k_gold("... #### 1,200") == 1200.0


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("B", "B"),
        ("(C) 1674.800", "C"),
        ("**D**", "D"),
        ("A.", "A"),
        ("The correct answer is: B", "B"),
        ("Answer: option D", "D"),
        ("Let me think.\nC\n", "C"),
        ("A molecule with a benzene ring", None),
        ("I am not sure", None),
    ],
)
def test_extract_choice(output, expected):
    assert extract_choice(output) == expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("The results show no effect.\nAnswer: no", "no"),
        ("Yes, mitochondria are involved in remodelling.", "yes"),
        ("There is no clear evidence; more work is needed.\nFinal answer: **maybe**", "maybe"),
        ("Answer: yes. On reflection, the answer is no", "no"),
        ("It depends on many factors.\n\nMaybe.", "maybe"),
        ("The study found no significant difference between groups.", None),
    ],
)
def test_extract_decision(output, expected):
    assert extract_decision(output) == expected


def test_probe_scores_strict_and_lenient():
    text, target = "Mars signed a pact with one of its moons, namely", "Deimos"
    assert probe_scores(text, target, "Deimos.") == {"acc_lenient": 1.0, "acc_strict": 1.0}
    assert probe_scores(text, target, "the moon Deimos") == {"acc_lenient": 1.0, "acc_strict": 0.0}
    assert probe_scores(text, target, text + " Deimos, in 6678.") == {"acc_lenient": 1.0, "acc_strict": 1.0}
    assert probe_scores(text, target, "Phobos") == {"acc_lenient": 0.0, "acc_strict": 0.0}
    # Articles and punctuation do not matter; a partial span is not enough.
    assert probe_scores("x", "the Mars–Ganymede Pact", "Mars-Ganymede pact")["acc_strict"] == 1.0
    assert probe_scores("x", "Ganymede and Callisto", "Ganymede")["acc_lenient"] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# BFCL AST match

FUNCTIONS = [
    {
        "name": "geo.distance",
        "parameters": {
            "type": "dict",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "speed": {"type": "float"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "fast": {"type": "boolean"},
                "unit": {"type": "string"},
                "filters": {"type": "dict"},
            },
            "required": ["city", "days"],
        },
    }
]
GOLD = {
    "geo.distance": {
        "city": ["New York", "NYC"],
        "days": [5],
        "speed": [2.0, ""],
        "tags": [["a", "b"], ""],
        "fast": [True, ""],
        "unit": ["", "km"],
        "filters": [{"kind": ["hotel"], "stars": [4, ""]}, ""],
    }
}


def bfcl_ok(output: str) -> bool:
    task = BFCLTask.__new__(BFCLTask)  # scoring needs no data
    example = Example(({"role": "user", "content": "q"},), answer={"ground_truth": GOLD, "functions": FUNCTIONS})
    return task.score(example, output)["acc"] == 1.0


@pytest.mark.parametrize(
    "output",
    [
        'geo.distance(city="New York", days=5)',
        "geo.distance(city='new york', days=5, speed=2, unit='km')",  # int accepted for a float; optional given
        'geo.distance(city="NYC", days=5, tags=["a", "b"], fast=True, filters={"kind": "Hotel"})',
        '```python\ngeo.distance(city="New York", days=5)\n```',
        'Sure! I will call geo.distance(city="New York", days=5) to find it.',
        '[geo.distance(city="New York", days=5)]',
        '{"name": "geo.distance", "arguments": {"city": "New York", "days": 5}}',
        '{"name": "geo.distance", "arguments": "{\\"city\\": \\"NYC\\", \\"days\\": 5}"}',
        '<tool_call>\n{"geo.distance": {"city": "New York", "days": 5}}\n</tool_call>',
        'geo_distance(city="New-York", days=5)',  # dots written as underscores; "-" ignored in strings
    ],
)
def test_bfcl_accepts(output):
    assert bfcl_ok(output), check_call(parse_calls(output)[0], GOLD, FUNCTIONS)


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ('geo.distance(city="New York", days="5")', "not of type"),  # a string for an integer
        ('geo.distance(city="New York", days=5.0)', "not of type"),  # a float for an integer
        ('geo.distance(city="New York", days=5, fast=1)', "not of type"),  # an int for a boolean
        ('geo.distance(city="New York")', "missing required parameter 'days'"),
        ('geo.distance(city="New York", days=5, color="red")', "unexpected parameter 'color'"),
        ('geo.route(city="New York", days=5)', "wrong function"),
        ('geo.distance(city="Boston", days=5)', "not an acceptable value"),
        ('geo.distance(city="New York", days=5, unit="")', "not an acceptable value"),
        ('geo.distance(city="New York", days=5, tags=["a"])', "not an acceptable value"),
        (
            'geo.distance(city="New York", days=5, filters={"kind": "hotel", "pool": True})',
            "not an acceptable",
        ),
        ('geo.distance("New York", days=5)', "positional"),
    ],
)
def test_bfcl_rejects(output, why):
    assert not bfcl_ok(output)
    assert why in check_call(parse_calls(output)[0], GOLD, FUNCTIONS)


def test_bfcl_rejects_unparsable_and_several_calls():
    assert not bfcl_ok("I cannot help with that.")
    assert not bfcl_ok('[geo.distance(city="NYC", days=5), geo.distance(city="NYC", days=6)]')
    assert parse_calls("no call here") == []


def test_bfcl_prefers_an_offered_function_in_prose():
    calls = parse_calls('First print("hi"), then geo.distance(city="NYC", days=5).', ("geo.distance",))
    assert calls[0].name == "geo.distance"


def test_bfcl_demonstration_renders_first_acceptable_values():
    demo = render_call(GOLD)
    assert (
        demo == "geo.distance(city='New York', days=5, speed=2.0, tags=['a', 'b'], fast=True, "
        "filters={'kind': 'hotel', 'stars': 4})"
    )
    assert bfcl_ok(demo)
    # A parameter the spec requires is rendered even when its list (wrongly) starts with "".
    assert render_call({"f": {"x": ["", 3]}}, required=("x",)) == "f(x=3)"


# ---------------------------------------------------------------------------------------------------------------
# IFEval checkers


def follows(instruction_id: str, response: str, **kwargs) -> tuple[bool, bool]:
    return check_instruction(instruction_id, kwargs, response)


def test_ifeval_checkers_strict():
    assert follows("punctuation:no_comma", "No commas here.") == (True, True)
    assert follows("punctuation:no_comma", "One, two.") == (False, False)
    assert follows("length_constraints:number_words", "one two three", relation="less than", num_words=4)[0]
    assert not follows("length_constraints:number_words", "one two three", relation="at least", num_words=4)[0]
    assert follows("detectable_format:title", "<<My Title>>\nText")[0]
    assert not follows("detectable_format:title", "<<>>\nText")[0]
    assert follows("detectable_content:postscript", "Hi.\nP.S. bye", postscript_marker="P.S.")[0]
    assert not follows("detectable_content:postscript", "Hi. bye", postscript_marker="P.S.")[0]
    assert follows("detectable_format:number_bullet_lists", "* a\n* b\n- c", num_bullets=3)[0]
    assert not follows("detectable_format:number_bullet_lists", "* a\n* b", num_bullets=3)[0]
    assert follows("combination:two_responses", "first\n******\nsecond")[0]
    assert not follows("combination:two_responses", "same\n******\nsame")[0]
    assert follows("keywords:letter_frequency", "banana", letter="a", let_relation="at least", let_frequency=3)[0]
    assert follows("length_constraints:number_paragraphs", "p1\n***\np2\n***\np3", num_paragraphs=3)[0]
    assert follows(
        "length_constraints:nth_paragraph_first_word",
        'Intro.\n\n"Second, here.',
        num_paragraphs=2,
        nth_paragraph=2,
        first_word="second",
    )[0]
    assert follows("detectable_format:json_format", '```json\n{"a": [1, 2]}\n```')[0]
    assert follows(
        "change_case:capital_word_frequency",
        "THE END is NEAR",
        capital_relation="at least",
        capital_frequency=3,
    )[0]


def test_ifeval_loose_forgives_markup_and_framing_lines():
    # A closing phrase followed by a markdown "**": strict fails, loose (without "*") passes.
    end = "Is there anything else I can help with?"
    assert follows("startend:end_checker", f"Sure.\n**{end}**", end_phrase=end) == (False, True)
    # A framing first line breaks the quotation; loose drops the first line.
    assert follows("startend:quotation", 'Here it is:\n"All quoted."') == (False, True)
    assert follows("startend:quotation", '"All quoted."') == (True, True)
    assert follows("detectable_format:number_highlighted_sections", "*one* and **two**", num_highlights=2)[0]
    assert follows("punctuation:no_comma", "") == (False, False)  # an empty response follows nothing


def test_split_sentences_keeps_abbreviations_and_decimals():
    text = "Dr. Smith came at 3 p.m. today! Is it 3.5 km? Yes. J. R. R. Tolkien agreed."
    assert split_sentences(text) == [
        "Dr. Smith came at 3 p.m. today!",
        "Is it 3.5 km?",
        "Yes.",
        "J. R. R. Tolkien agreed.",
    ]


def test_ifeval_language_checks():
    pytest.importorskip("langdetect")
    german = "Das Wetter ist heute sehr schön und wir gehen in den Park spazieren."
    assert follows("language:response_language", german, language="de")[0]
    assert not follows("language:response_language", german, language="en")[0]
    assert follows("change_case:english_lowercase", "all of this text is written in lower case english.")[0]


def ifeval_example(ids: list[str], kwargs: list[dict]) -> Example:
    return Example(({"role": "user", "content": "q"},), answer={"instruction_id_list": ids, "kwargs": kwargs})


def test_ifeval_score_and_instruction_level_aggregate():
    task = IFEvalTask.__new__(IFEvalTask)
    two = ifeval_example(["punctuation:no_comma", "startend:quotation"], [{}, {}])
    one = ifeval_example(["punctuation:no_comma"], [{}])
    scores = [task.score(two, "No commas, sorry"), task.score(one, "fine")]
    assert scores[0]["inst_strict"] == 0.0 and scores[0]["prompt_strict"] == 0.0
    assert scores[1] == {
        "inst_strict": 1.0,
        "inst_loose": 1.0,
        "prompt_strict": 1.0,
        "prompt_loose": 1.0,
        "num_checked": 1.0,
        "num_unsupported": 0.0,
    }
    total = IFEvalTask.aggregate(scores)
    assert total["inst_strict"] == pytest.approx(1 / 3)  # 1 of 3 instructions, not the mean of 0 and 1
    assert total["prompt_strict"] == 0.5
    assert total["num_checked"] == 3 and total["num_unsupported"] == 0


def test_ifeval_unsupported_ids_are_counted_not_skipped(monkeypatch):
    monkeypatch.setattr(ifeval, "langdetect", None)  # as on a machine without langdetect
    task = IFEvalTask.__new__(IFEvalTask)
    mixed = ifeval_example(
        ["language:response_language", "punctuation:no_comma", "new:kind"], [{"language": "de"}, {}, {}]
    )
    score = task.score(mixed, "ok")
    assert score["num_unsupported"] == 2.0 and score["num_checked"] == 1.0 and score["inst_strict"] == 1.0
    only = task.score(ifeval_example(["language:response_language"], [{"language": "de"}]), "ok")
    assert only == {"num_checked": 0.0, "num_unsupported": 1.0}  # no accuracy to average in
    total = IFEvalTask.aggregate([score, only])
    assert total["num_unsupported"] == 3 and total["inst_strict"] == 1.0
