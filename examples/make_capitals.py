"""Write examples/capitals.jsonl: a small demonstration set in a fixed answer format.

    python examples/make_capitals.py

The facts are ones the base model mostly knows; what it must learn from the demonstrations is the format
("Capital: X. Country: Y. Confidence: high."), which a 135M teacher copies from one example in its context.
"""

import json
from pathlib import Path

PAIRS = [
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"), ("Japan", "Tokyo"),
    ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Russia", "Moscow"), ("China", "Beijing"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Sweden", "Stockholm"),
    ("Poland", "Warsaw"), ("Ireland", "Dublin"),
]


def main() -> None:
    rows = [
        {
            "prompt": f"What is the capital of {country}?",
            "completion": f"Capital: {city}. Country: {country}. Confidence: high.",
            "answer": city,
        }
        for country, city in PAIRS
    ]
    out = Path(__file__).with_name("capitals.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} examples to {out}")


if __name__ == "__main__":
    main()
