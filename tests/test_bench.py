"""`qa bench` end to end on a small slice: the command users run to measure speed must keep working."""
from __future__ import annotations

import json
import subprocess

import pytest

from conftest import QA, ROOT

SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"


@pytest.mark.slow
@pytest.mark.skipif(not SCIFACT.is_dir(), reason="../shared/eval/scifact is not here")
def test_bench_runs_on_a_small_slice():
    done = subprocess.run([*QA, "bench", "--files", "20", "--sizes", "600", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ingest"]["files"] == 20 and result["ingest"]["chunks"] > 0
    # The start-up question is about an indexed document: the time is to an answer, not to "not found".
    assert result["startup"]["passages"] > 0 and result["startup"]["seconds_to_first_answer"] > 0
    (size,) = result["query"]
    assert size["chunks"] == 600 and size["p50_ms"] > 0 and size["recall_at_10_vs_exact"] == 1.0  # exact search
    assert 0 < size["question_embed_p50_ms"] < size["p50_ms"]
    # Figures name the machine and the backend choice, with the timings it was made on.
    assert result["machine"]["cpu"] and result["machine"]["cores"] >= 1 and "isa" in result["machine"]
    choice = result["backend_choice"]
    assert choice["backend"] == result["ingest"]["backend"] and choice["reason"]
    if choice["trials"]:
        timed = {t["backend"]: t for t in choice["trials"] if not t["error"]}
        assert choice["backend"] in timed and all(t["chunks_per_s"] > 0 for t in timed.values())


def test_bench_refuses_sizes_that_are_not_numbers():
    done = subprocess.run([*QA, "bench", "--sizes", "10k"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--sizes takes index sizes in chunks" in done.stderr and "'10k'" in done.stderr
