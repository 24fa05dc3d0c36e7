"""Golden AP-10K pair lists made by GeoAware-SC's own notebook, for tests/test_ap10k.py.

    git clone https://github.com/Junyi42/GeoAware-SC /tmp/GeoAware-SC
    python benchmarks/make_ap10k_goldens.py --geoaware /tmp/GeoAware-SC

Writes the synthetic annotation set of tests/dataset_factory.py (synthetic_ap10k: every rule of the
benchmark has a case in it) into a scratch folder laid out as the notebook expects
(data/ap-10k/annotations/, data/ap-10k/data/ with an empty file per image: the notebook only moves them,
data/ap-10k_is_crowd.txt), runs the code cells 0-5 of its prepare_ap10k.ipynb there in one namespace, as
a Jupyter kernel would, and writes what they made to tests/fixtures/ap10k/notebook_lists.json.gz: each
species' train / val / test images and the pair names of every PairAnnotation folder. One thing is
changed while the cells run: os.walk and os.listdir list names in sorted order (the notebook takes the
file system's order, which nobody can reproduce; ap10k/pair_lists.py takes sorted order). Nothing of
GeoAware-SC is needed to run the tests: only to make this file again (a few seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from dataset_factory import make_ap10k, synthetic_ap10k  # noqa: E402

GOLDENS = REPO / "tests" / "fixtures" / "ap10k" / "notebook_lists.json.gz"
NOTEBOOK = "prepare_ap10k.ipynb"
CELLS = range(6)  # cell 6 draws examples
LISTS = {"train_filtered.txt": "trn", "val_filtered.txt": "val", "test_filtered.txt": "test"}


@contextlib.contextmanager
def sorted_listing() -> Iterator[None]:
    """os.walk (top-down) and os.listdir in sorted name order while the block runs."""
    walk, listdir = os.walk, os.listdir

    def sorted_walk(top, *args, **kwargs):
        for root, dirs, files in walk(top, *args, **kwargs):
            dirs.sort()  # in place: the walk descends in this order
            files.sort()
            yield root, dirs, files

    os.walk, os.listdir = sorted_walk, lambda path=".": sorted(listdir(path))
    try:
        yield
    finally:
        os.walk, os.listdir = walk, listdir


def run_notebook(notebook: Path, work: Path) -> str:
    """Run the notebook's code cells CELLS in `work`; what they printed."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    namespace, printed, cwd = {"__name__": "__main__"}, io.StringIO(), os.getcwd()
    os.chdir(work)
    try:
        with sorted_listing(), contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            for i in CELLS:
                exec(compile("".join(cells[i]["source"]), f"{NOTEBOOK} cell {i}", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return printed.getvalue()


def collected(dataset: Path) -> dict:
    """Each species' image lists and each PairAnnotation folder's pair names, checked against the files' content."""
    splits = {}
    for species in sorted(p for p in (dataset / "ImageAnnotation").glob("*/*") if p.is_dir()):
        key = f"{species.parent.name}/{species.name}"
        splits[key] = {split: [Path(line).stem for line in (species / name).read_text().splitlines()]
                       for name, split in LISTS.items()}  # fmt: skip
    pairs = {}
    for folder in sorted((dataset / "PairAnnotation").iterdir()):
        names = []
        for path in sorted(folder.glob("*.json")):
            content = json.loads(path.read_text())
            src, trg = (Path(content[f"{side}_json_path"]).stem for side in ("src", "trg"))
            assert path.stem.rpartition(":")[0] == f"{src}-{trg}", path
            names.append(path.stem)
        pairs[folder.name] = names
    return {"splits": splits, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geoaware", type=Path, required=True, help="a checkout of github.com/Junyi42/GeoAware-SC")
    parser.add_argument("--out", type=Path, default=GOLDENS)
    args = parser.parse_args()
    notebook = args.geoaware / NOTEBOOK
    files, crowd = synthetic_ap10k()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        dataset = make_ap10k(work / "data" / "ap-10k", files=files, crowd=crowd, images=False)
        (dataset / "ap-10k_is_crowd.txt").rename(work / "data" / "ap-10k_is_crowd.txt")
        for image in (image for content in files.values() for image in content["images"]):
            (dataset / "data" / image["file_name"]).touch()
        printed = run_notebook(notebook, work)
        goldens = {
            "made_by": "benchmarks/make_ap10k_goldens.py: GeoAware-SC's prepare_ap10k.ipynb cells 0-5, sorted listing",
            "notebook_sha256": hashlib.sha256(notebook.read_bytes()).hexdigest(),
            "python": sys.version.split()[0],
            "printed": printed.splitlines(),
            **collected(dataset),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(gzip.compress(json.dumps(goldens, indent=1).encode(), mtime=0))
    counts = {folder: len(names) for folder, names in goldens["pairs"].items()}
    print(f"{args.out}: {counts}")


if __name__ == "__main__":
    main()
