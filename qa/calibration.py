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


def calibrate(questions_file: Path, settings: Settings, default_index: bool) -> dict[str, object]:
    data = json.loads(questions_file.read_text(encoding="utf-8"))
    probe = settings.with_(min_relevance=-1.0)  # never abstain while measuring
    retriever = Retriever(None if default_index else settings.index_dir, settings=probe)
    answerable = [retriever.ask(q["question"]).relevance for q in data["answerable"]]
    off_topic = [retriever.ask(q).relevance for q in data["off_topic"]]
    cutoff, refused, answered = pick_cutoff(answerable, off_topic)
    current = settings.min_relevance
    text = "\n".join([
        f"answerable ({len(answerable)}): min {min(answerable):.3f}, median {sorted(answerable)[len(answerable) // 2]:.3f}",
        f"off-topic ({len(off_topic)}): max {max(off_topic):.3f}, median {sorted(off_topic)[len(off_topic) // 2]:.3f}",
        f"suggested cut-off {cutoff:.3f}: {refused} answerable refused, {answered} off-topic answered",
        f"current cut-off {current:.3f}: {sum(v < current for v in answerable)} answerable refused, "
        f"{sum(v >= current for v in off_topic)} off-topic answered",
    ])
    return {"answerable": answerable, "off_topic": off_topic, "cutoff": cutoff, "refused": refused,
            "answered": answered, "current": current, "text": text}
