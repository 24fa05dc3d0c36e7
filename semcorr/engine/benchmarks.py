"""Several benchmarks in one run (--dataset spair pf-pascal pf-willow ap10k ...): every dataset found first, the
backbones built once, each dataset then evaluated as its own run (its threshold, split and results folder; each
image through the backbone once, through the feature cache), and one folder of kind "benchmarks" with the table
of them all (semcorr/report/benchmarks.py), printed with the benchmarks as columns.
"""

from __future__ import annotations

from pathlib import Path

from semcorr.config.settings import Benchmarks
from semcorr.data.datasets import load_pairs
from semcorr.engine.evaluation import evaluate, load_backbones
from semcorr.report import labels, summary
from semcorr.report.benchmarks import benchmark_name, benchmark_table
from semcorr.runs import folders
from semcorr.runs.record import run_record, start_run


def run_benchmarks(benchmarks: Benchmarks) -> Path:
    """Evaluate every benchmark of the run; returns the benchmarks folder."""
    first = benchmarks.runs[0]
    context = start_run(first.output)
    pairsets = [load_pairs(settings.data) for settings in benchmarks.runs]  # a missing dataset stops it here
    backbones = load_backbones(first)
    runs = []
    for settings, pairset in zip(benchmarks.runs, pairsets, strict=True):
        print(f"\n== {pairset.dataset} {pairset.split} ({len(pairset.pairs):,} pairs)")
        runs.append(folders.read_run(evaluate(settings, pairset, backbones, start_run(settings.output))))
    alphas = sorted({alpha for settings in benchmarks.runs for alpha in settings.data.thresholds})
    table = benchmark_table(runs, alphas, groups={run.path.resolve(): "this run" for run in runs})
    resolved = {"runs": [run.name for run in runs], "benchmarks": [benchmark_name(run) for run in runs]}
    config = run_record("benchmarks", benchmarks, resolved=resolved, context=context, device=backbones[0].device)
    parts = ["benchmarks", *labels.folder_parts(runs[0].config)[:3]]  # weights, model, size

    def write(folder: Path) -> None:
        folders.write_run(folder, "benchmarks", config, benchmarks=table.frame.reset_index())

    folder = folders.write_new_run(first.output.output_dir, parts, context.started, write)
    print("\n" + summary.benchmarks_summary(table))
    print(f"results: {folder}")
    return folder
