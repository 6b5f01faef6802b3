"""Abstention calibration: score answerable and off-topic questions and pick the cut-off that separates them."""
from __future__ import annotations

import json
from pathlib import Path

from qa.api import Retriever
from qa.config import Settings


def pick_cutoff(answerable: list[float], off_topic: list[float]) -> tuple[float, int, int]:
    """The cut-off with the fewest errors (answerable refused + off-topic answered), at the middle of the widest
    gap between neighbouring scores among equally good ones. Returns (cut-off, refused, answered)."""
    values = sorted(set(answerable) | set(off_topic))
    gaps = [(values[0] - 0.05, values[0])] + list(zip(values, values[1:])) + [(values[-1], values[-1] + 0.05)]

    def errors(cut: float) -> tuple[int, int]:
        return sum(v < cut for v in answerable), sum(v >= cut for v in off_topic)

    low, high = min(gaps, key=lambda g: (sum(errors((g[0] + g[1]) / 2)), -(g[1] - g[0])))
    cutoff = (low + high) / 2
    return cutoff, *errors(cutoff)


def beir_questions(folder: Path, split: str) -> list[str]:
    """The queries of a BEIR split: questions that an unrelated corpus cannot answer."""
    from qa.evaluation import load_beir

    data = load_beir(folder, split, max_docs=0)
    return list(data.queries.values())


def calibrate(questions_file: Path, settings: Settings, default_index: bool,
              unrelated: list[str] | None = None) -> dict[str, object]:
    data = json.loads(questions_file.read_text(encoding="utf-8"))
    probe = settings.with_(min_confidence=-1.0)  # never abstain while measuring
    retriever = Retriever(settings=probe, build_if_missing=default_index and not settings.store)
    groups = {"answerable": [q["question"] for q in data["answerable"]], "off_topic": data["off_topic"],
              "unrelated": unrelated or []}
    scores = {name: [retriever.ask(q).confidence for q in qs] for name, qs in groups.items()}
    off = scores["off_topic"] + scores["unrelated"]
    cutoff, refused, answered = pick_cutoff(scores["answerable"], off)
    current = settings.min_confidence
    lines = []
    for name, values in scores.items():
        if values:
            ordered = sorted(values)
            wrong = (sum(v < current for v in values) if name == "answerable" else sum(v >= current for v in values))
            verb = "refused" if name == "answerable" else "answered"
            lines.append(f"{name} ({len(values)}): min {ordered[0]:.3f}, median {ordered[len(values) // 2]:.3f}, "
                         f"max {ordered[-1]:.3f}; at the current cut-off {current:.3f}: {wrong} wrongly {verb}")
    lines.append(f"suggested cut-off {cutoff:.3f}: {refused} answerable refused, {answered} off-topic answered")
    return {"scores": scores, "cutoff": cutoff, "refused": refused, "answered": answered, "current": current,
            "text": "\n".join(lines)}
