"""The benchmark scripts run: each on its tiniest setting, in-process (they are timed, not checked, elsewhere)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_bench_finetune_times_both_ways_of_training(capsys):
    bench = runpy.run_path(str(BENCHMARKS / "bench_finetune.py"), run_name="bench_finetune")
    argv = ["--image-size", "28", "--batch-size", "1", "--keypoints", "2", "--steps", "1", "--depth", "2"]
    bench["main"]([*argv, "--trainable-blocks", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "dinov2_vitb14 (random weights) at 28x28 on cpu" in out
    assert "last 1 of 2 blocks train" in out
    speeds = [float(s) for s in re.findall(r"([\d.]+) steps/s", out)]
    assert len(speeds) == 2 and all(s > 0 for s in speeds), out
    assert re.search(r"frozen part +[\d.]+% of the step", out) and re.search(r"[\d.]+x faster", out), out
