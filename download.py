"""Fetch model weights and benchmark datasets into the folders the code reads by default.

    python download.py --models dinov2 dinov3 sam --datasets spair pf-pascal pf-willow ap10k
    python download.py --models dinov2 --datasets pf-willow --dry-run

Every file streams to `<dest>.part` (resumed with an HTTP range request after an interruption; a
transfer that stalls is given up, its bytes kept), then is checked with whatever is known of it
before it moves into place: the size the server announced, the official size and sha256 in the
table below (or the sha256 prefix in Meta's file name), and, for model weights, that it loads as a
complete checkpoint of its backbone (every key and shape). What was checked is said, never more:
a file nothing is known about is reported as unverified. Archives are unpacked after every member
has been checked to stay inside the target folder. The checks passed are recorded in
`.download-manifest.json` in each destination folder, so re-runs skip finished work without
re-reading files (a file is checked again only when its size or mtime changed).

The table of what can be fetched, and how it is checked, fetched and unpacked: semcorr/download/.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.registry import ALIASES, BACKBONES, get_spec
from semcorr.cli.errors import run_main
from semcorr.cli.flags import path as expand_path
from semcorr.cli.flags import positive_float
from semcorr.config.settings import REPO_ROOT
from semcorr.download.checks import DownloadError
from semcorr.download.fetch import ensure, plan, total_line
from semcorr.download.table import DATASET_ITEMS, Item, build_table
from semcorr.download.transfer import STALL_BYTES


def folder_arg(text: str) -> Path:
    """A folder flag's value: `~` and environment variables expanded, made absolute."""
    return Path(expand_path(text)).absolute()


def root_problem(root: Path) -> str | None:
    """Why files cannot be written under `root` (a file, or a folder this user may not write), or None."""
    existing = root
    while not os.path.exists(existing):  # False too when a folder on the way may not be read
        existing = existing.parent
    if not existing.is_dir():
        what = f"--root {root} is a file" if existing == root else f"--root {root}: {existing} is a file"
        return f"{what}, not a folder; give a folder (it is created if missing)"
    if not os.access(existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
        where = "" if existing == root else f" ({existing} does not let this user create anything in it)"
        return f"--root {root} is not writable{where}; choose a folder you can write to, or change its permissions"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Download model weights and benchmark datasets into place, checked.",
        epilog=f"Models: {', '.join(BACKBONES)} (aliases: {', '.join(ALIASES)}).",
    )
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME", help="backbones to fetch")
    parser.add_argument("--datasets", nargs="+", default=[], choices=list(DATASET_ITEMS), help="datasets to fetch")
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be fetched, sizes, a total and destinations"
    )
    parser.add_argument(
        "--root",
        type=folder_arg,
        help="put everything under this folder, in the repository layout (default: the repository); "
        "~ and $VARIABLES are expanded",
    )
    parser.add_argument("--keep-archives", action="store_true", help="keep dataset archives after unpacking them")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="give up on a server that answers nothing for this long, or whose transfer stalls: less than "
        f"{STALL_BYTES >> 10} KiB received in this long (the partial file is kept for resuming) (default 60)",
    )
    args = parser.parse_args(argv)
    if not args.models and not args.datasets:
        parser.error("nothing to do: name some --models and/or --datasets")
    try:
        args.models = [get_spec(name).name for name in args.models]
    except ValueError as error:
        parser.error(str(error))
    if problem := root_problem(args.root or REPO_ROOT):
        parser.error(problem)
    return args


def main(argv: list[str] | None = None, table: dict[str, Item] | None = None) -> int:
    """Run the command line; `table` replaces `build_table(--root)` (for tests). Exit status."""
    args = parse_args(argv)
    table = table if table is not None else build_table(args.root or REPO_ROOT)
    keys = list(dict.fromkeys([*args.models, *args.datasets]))
    if args.dry_run:
        steps = []
        for key in keys:
            item_steps = plan(table[key], args.timeout, args.root)
            print(f"{key}:\n  " + "\n  ".join(step.text for step in item_steps))
            steps += item_steps
        print(total_line(steps))
        return 0
    results: list[tuple[str, bool, str]] = []
    for key in keys:
        try:
            outcome = ensure(table[key], keep_archives=args.keep_archives, timeout=args.timeout, root=args.root)
            results.append((key, True, outcome))
        except DownloadError as error:
            print(f"\nERROR: {error}\n", file=sys.stderr)
            results.append((key, False, str(error).splitlines()[0].rstrip(":")))
        except KeyboardInterrupt:
            print("\nInterrupted; re-run the same command to resume.", file=sys.stderr)
            return 130
    width = max(len(key) for key in keys)
    print("\nSummary:")
    for key, ok, outcome in results:
        print(f"  {'ok' if ok else 'FAILED':6}  {key:{width}}  {outcome}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    run_main(lambda: sys.exit(main()))
