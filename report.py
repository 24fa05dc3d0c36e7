"""Report on results folders: evaluations, fine-tuning runs, grid searches; paper-ready tables and figures.

    python report.py results/                                   # every run under results/, printed
    python report.py results/ --markdown report.md --csv report.csv --alphas 0.05 0.1 0.2
    python report.py results/<zero-shot> results/<fine-tuned> --latex paper/ --figures paper/ \\
        --compare results/<zero-shot> results/<fine-tuned> --names zero-shot fine-tuned

It prints how many results folders it found of each kind, then one table per kind: evaluations
(single models and ensembles; PCK "per image (per keypoint)" beside the original project's
published number, copied in semcorr/report/published.py, only when a run ran that number's whole protocol:
--protocol original without overrides, the same backbones with their ensemble weights and image
sizes, weights origin, matcher with its K and T, dataset, split, number of pairs and PCK
threshold), fine-tuning runs (best and last validation PCK, steps, settings) and grid searches
(best K and T per alpha); when the evaluations span several benchmarks, one more table with the benchmarks as
columns, as papers print them (rows: a run of several benchmarks, else the runs' labels without their data;
PCK at --benchmark-alphas, recomputed from each run's per_keypoint.csv). A folder that is incomplete or damaged is skipped with a warning naming
the file. Everything comes from the results folders alone: no backbone, no dataset (except the
images of --figures' keypoint examples), no re-evaluation.

--latex DIR writes, for each dataset, split and PCK threshold among the evaluations
(DIR/<dataset>-<split>-<threshold>/), booktabs LaTeX tables with their CSV and markdown copies:
overall.* (runs x PCK@each alpha), per_category.* (categories x runs), difficulty.* (SPair-71k:
viewpoint, scale, truncation and occlusion levels x runs), and per run (<its name>/)
consistency.*, sensitivity.*, extremes.* (the original project's analysis at --alpha).
--figures DIR writes pck_curves.png of each group. --compare A B compares two evaluations over the
same pairs (overall, per category, per difficulty level, with paired bootstrap intervals): printed,
comparison.* with --latex, keypoint_ids.png and keypoint_examples.png with --figures.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from semcorr.cli.errors import run_main
from semcorr.config.settings import AVERAGINGS, BENCHMARK_THRESHOLDS, DEFAULT_THRESHOLDS
from semcorr.report.labels import run_labels, slug

REPORTED_KINDS = ("evaluation", "finetune", "grid")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("paths", nargs="+", help="results folders, or folders holding them")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_THRESHOLDS), help="PCK thresholds shown")
    p.add_argument("--markdown", help="also write the evaluations' markdown table here")
    p.add_argument("--csv", help="also write the evaluations' full table (numbers, paths) here")
    p.add_argument("--latex", metavar="DIR", help="write LaTeX (+ CSV, markdown) tables of the evaluations here")
    p.add_argument("--figures", metavar="DIR", help="write the figures here")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two evaluation folders over the same pairs")
    p.add_argument(
        "--names",
        nargs="+",
        help="names of the evaluations in tables and figures, one each, in the order of the paths given "
        "(a folder holding several runs: those oldest first)",
    )
    p.add_argument(
        "--benchmark-alphas",
        type=float,
        nargs="+",
        default=list(BENCHMARK_THRESHOLDS),
        help="PCK thresholds of the table of all benchmarks (when the evaluations span several)",
    )
    p.add_argument("--alpha", type=float, default=0.1, help="threshold of the per-category and analysis tables")
    p.add_argument("--averaging", choices=list(AVERAGINGS), default="per_image", help="PCK averaging of the tables")
    p.add_argument("--level", type=float, default=50.0, help="PCK (%%) whose alpha the sensitivity table finds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
        return report(args)


def report(args: argparse.Namespace):
    from semcorr.report import tables
    from semcorr.runs.folders import load_runs
    from semcorr.storage.files import atomic_write, write_csv

    runs = load_runs(args.paths)
    print(f"found {tables.kinds_text(runs)}")
    by_kind = {kind: [r for r in runs if r.kind == kind] for kind in REPORTED_KINDS}
    if not any(by_kind.values()):
        raise FileNotFoundError(f"no evaluation, fine-tuning or grid-search results under {', '.join(args.paths)}")
    evaluations = by_kind["evaluation"]
    table = tables.report_table(evaluations, tuple(args.alphas))
    if evaluations:
        text = tables.report_markdown(table, tuple(args.alphas))
        print(f"\n## evaluations\n\n{text}")
        text += benchmarks(evaluations, [r for r in runs if r.kind == "benchmarks"], args)
        if args.markdown:
            atomic_write(args.markdown, lambda tmp: tmp.write_text(text))
        if args.csv:
            write_csv(args.csv, table)
    if by_kind["finetune"]:
        print("## fine-tuning runs\n\n" + tables.markdown_table(tables.finetune_table(by_kind["finetune"])))
    if by_kind["grid"]:
        print("## grid searches\n\n" + tables.markdown_table(tables.grids_table(by_kind["grid"])))
    names = names_of(evaluations, args.names)
    if evaluations and (args.latex or args.figures):
        write_paper(evaluations, names, args)
    if args.compare:
        compare(args, evaluations, names)
    return table


def benchmarks(evaluations: list, groups: list, args: argparse.Namespace) -> str:
    """The evaluations of more than one benchmark as one table, benchmarks as columns (rows: a run of several
    benchmarks, else the runs' labels without their data), printed and written with --latex; its markdown."""
    from semcorr.report import paper
    from semcorr.report.benchmarks import benchmark_name, benchmark_table

    if len({benchmark_name(run) for run in evaluations}) < 2:
        return ""
    named = {
        (group.path.parent / name).resolve(): group.name
        for group in groups
        for name in group.config["resolved"]["runs"]
    }
    table = benchmark_table(evaluations, args.benchmark_alphas or args.alphas, args.averaging, named)
    text = f"\n## all benchmarks\n\n{paper.to_markdown(table)}"
    print(text)
    if args.latex:
        written = paper.write_table(table, args.latex)
        print(f"benchmarks: {', '.join(str(path) for path in written)}")
    return text


def names_of(runs: list, names: list[str] | None) -> dict[Path, str]:
    """--names, by each evaluation's resolved folder, in the order the runs were found (load_runs); {} without it."""
    if names is None:
        return {}
    if len(names) != len(runs):
        raise ValueError(
            f"--names gives {len(names)} names for {len(runs)} evaluations; give one each, in this order: "
            + ", ".join(str(run.path) for run in runs)
        )
    return dict(zip((run.path.resolve() for run in runs), names, strict=True))


def shown_names(runs: list, names: dict[Path, str]) -> tuple[list[str], str]:
    """The names of runs shown together (--names, else their labels among them) and what they all share."""
    shown = run_labels(runs)
    return [names.get(run.path.resolve(), label) for run, label in zip(runs, shown.names, strict=True)], shown.common


def write_paper(evaluations: list, names: dict[Path, str], args: argparse.Namespace) -> None:
    """Tables (--latex) and figures (--figures) of each group of evaluations (same dataset, split, threshold)."""
    import pck
    from semcorr.report import paper

    groups = paper.group_runs(evaluations)
    if len(groups) > 1:
        print("the evaluations are of different datasets, splits or thresholds; one set of tables each:")
        for key, runs in groups.items():
            print(f"  {paper.group_name(key)}: {', '.join(run.name for run in runs)}")
    for key, runs in groups.items():
        (labels, common), group = shown_names(runs, names), paper.group_name(key)
        if args.latex:
            folder = Path(args.latex) / group
            tables = paper.group_tables(runs, labels, args.alphas, args.alpha, args.averaging, common=common)
            tables = [(t, folder) for t in tables]
            for run, name in zip(runs, labels, strict=True):
                analyses = paper.run_tables(run, name, args.alphas, args.alpha, args.averaging, args.level)
                tables += [(t, folder / slug(name)) for t in analyses]
            written = [path for table, where in tables for path in paper.write_table(table, where, group=group)]
            print(f"{group}: {len(written)} table files under {folder}")
        if args.figures:
            from semcorr.viz import charts, viz2d  # matplotlib loads only for figures

            curves = {
                n: pck.pck_curve(run.keypoints(), paper.CURVE_ALPHAS) for run, n in zip(runs, labels, strict=True)
            }
            figure = charts.pck_curves(curves, paper.dataset_text(runs), common)
            print(f"{group}: wrote {viz2d.save_plot(figure, Path(args.figures) / group / 'pck_curves.png')}")


def compare(args: argparse.Namespace, evaluations: list, names: dict[Path, str]) -> None:
    """Print the comparison of two evaluations (the runs already loaded when they are among them); write its
    table and figures when asked."""
    from semcorr.report import comparison, paper
    from semcorr.runs.folders import check_run, read_run

    loaded = {run.path.resolve(): run for run in evaluations}
    a, b = (
        loaded.get(Path(path).resolve()) or check_run(read_run(path, kinds=("evaluation",))) for path in args.compare
    )
    labels, common = shown_names([a, b], names)
    table = comparison.compare_runs(a, b, tuple(labels), args.alpha, args.averaging, common=common)
    print("\n## comparison\n\n" + paper.to_markdown(table))
    group = paper.group_name(next(iter(paper.group_runs([a]))))
    if args.latex:
        paper.write_table(table, Path(args.latex) / group, group=group)
    if args.figures:
        for path in comparison.write_figures(a, b, tuple(labels), Path(args.figures) / group, args.alpha):
            print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
