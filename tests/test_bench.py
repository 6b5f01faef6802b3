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
    (size,) = result["query"]
    assert size["chunks"] == 600 and size["p50_ms"] > 0 and size["recall_at_10_vs_exact"] == 1.0  # exact search
