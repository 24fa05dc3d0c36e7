"""The baseline an evaluation is compared with, and the published number beside a run of the original's protocol.

The baseline is the results folder --baseline names, or else, for a run that is not itself zero-shot, the
newest zero-shot evaluation in the same output folder that differs from it in nothing but its weights
(labels.run_labels: the same model, image size, matcher, protocol, data, threshold) and scored the same pairs.
Its PCK and the difference go into metrics.json ("baseline") and the summary.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from semcorr.config.settings import AVERAGINGS, OutputSettings
from semcorr.report.labels import run_labels
from semcorr.runs.folders import Run, RunFolderError, check_run, find_runs, read_run

WEIGHT_FIELDS = {"weights", "checkpoint run"}  # what a zero-shot baseline of the same setting may differ in


def same_pairs(a: Run, b: Run) -> bool:
    """Both runs scored the same pairs (dataset, split, pair list) with the same threshold."""
    keys = ("dataset", "split", "pck_norm")
    return [a.metrics["protocol"][k] for k in keys] == [b.metrics["protocol"][k] for k in keys] and a.config[
        "resolved"
    ].get("pairs_fingerprint") == b.config["resolved"].get("pairs_fingerprint")


def zero_shot(run: Run) -> bool:
    return all(m["weights_origin"] == "official" for m in run.config["resolved"]["members"])


def zero_shot_baseline(run: Run, output_dir: str | Path) -> Run | None:
    """The newest zero-shot evaluation under `output_dir` of the same setting as `run` but its weights. Runs are
    judged by their config.json and metrics.json, newest first; only the one chosen is read in full."""
    paths = find_runs([output_dir], kinds=("evaluation",)) if Path(output_dir).is_dir() else []
    for path in reversed(paths):
        try:
            candidate = read_run(path, kinds=("evaluation",))
            if zero_shot(candidate) and same_pairs(run, candidate):
                if set(run_labels([run, candidate]).varying) <= WEIGHT_FIELDS:
                    return check_run(candidate)
        except (RunFolderError, KeyError, TypeError):  # fields a damaged config.json or metrics.json lacks
            continue  # a damaged folder is no baseline (report.py says why)
    return None


def baseline_record(config: dict, metrics: dict, output: OutputSettings) -> dict | None:
    """metrics.json's "baseline": the run compared with, how it was chosen, its PCK and this run's difference at
    each alpha and averaging; None when there is none (a --baseline over other pairs is said, and skipped)."""
    run = Run(Path(""), "evaluation", config, {"metrics": metrics})
    if output.baseline:
        baseline, chosen = check_run(read_run(output.baseline, kinds=("evaluation",))), "--baseline"
        if not same_pairs(run, baseline):
            warnings.warn(
                f"--baseline {output.baseline} scored other pairs or another threshold: no difference is given",
                stacklevel=2,
            )
            return None
    elif zero_shot(run):
        return None
    else:
        baseline, chosen = zero_shot_baseline(run, output.output_dir), "the zero-shot run of the same setting"
        if baseline is None:
            return None
    scores = {
        key: {avg: {"baseline": baseline.metrics[key][avg], "difference": value[avg] - baseline.metrics[key][avg]}
              for avg in AVERAGINGS}
        for key, value in metrics.items()
        if key.startswith("pck@") and key in baseline.metrics
    }  # fmt: skip
    return {"run": str(baseline.path), "chosen": chosen, **scores}
