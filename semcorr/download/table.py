"""What can be downloaded: each model's and dataset's files, where to get them and what is known of them.
Model entries are built from models/registry.py; dataset entries are listed here.

Sources relied on for the dataset URLs:
- SPair-71k: the dataset page, https://cvlab.postech.ac.kr/research/SPair-71k/
- PF-Pascal / PF-Willow images: https://www.di.ens.fr/willow/research/proposalflow/
- pair lists: the ones NCNet ships (github.com/ignacio-rocco/ncnet, datasets/pf-pascal/image_pairs;
  train_pairs.csv is used by NCNet/DHPF/GeoAware-SC as trn_pairs.csv) and the CNNGeometric /
  WeakAlign ones on www.di.ens.fr (test_pairs_pf.csv is PF-Willow's test list).
- AP-10K: the Google Drive file the AP-10K README links to (github.com/AlexTheBad/AP-10K, "Download"; the
  same id GeoAware-SC's data/prepare_ap10k.sh fetches), and GeoAware-SC's crowd list at a pinned commit
  (its sha256 and size are of that file). The correspondence pair lists are built from them on first use.
Model URLs come from models/registry.py. The SAM sizes and sha256 below are the ones that several
public projects record for Meta's files (Meta publishes none; its SAM file names end in the md5
prefix, not a sha256 one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ap10k import CROWD_LIST, CROWD_LIST_URL
from models.registry import BACKBONES, BackboneSpec
from semcorr.config.settings import REPO_ROOT
from semcorr.data.datasets import DEFAULT_ROOTS


@dataclass(frozen=True)
class Source:
    """One file of an item: where to get it and what is known of it.

    `name` is the file name in the item's folder; `urls` are tried in order. `size` (bytes) and
    `sha256` are the official file's, where published. `backbone` names the registered backbone
    whose complete checkpoint the file must be. An archive lists in `unpacks_to` the paths
    (relative to the folder) it must create; it is unpacked into the folder.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None
    backbone: str | None = None
    unpacks_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class Item:
    """A model checkpoint or a dataset: files that go into one folder.

    `kind` is the command-line option that selects it ("models" or "datasets"). Licence-gated
    files have no urls; `request_url` says where to ask for them.
    """

    key: str
    kind: str
    folder: Path
    sources: tuple[Source, ...]
    request_url: str | None = None


PROPOSAL_FLOW = "https://www.di.ens.fr/willow/research/proposalflow/dataset/"
CNNGEOMETRIC = "https://www.di.ens.fr/willow/research/cnngeometric/other_resources/"
NCNET_COMMIT = "8f6839c6738d6c51a06c78810ecbbfe21dcd87ac"  # pinned: the hashes below are of this version
NCNET_PAIRS = f"https://raw.githubusercontent.com/ignacio-rocco/ncnet/{NCNET_COMMIT}/datasets/pf-pascal/image_pairs/"
SPAIR = "cvlab.postech.ac.kr/research/SPair-71k/data/SPair-71k.tar.gz"
AP10K_DRIVE_ID = "1-FNNGcdtAQRehYYkGY1y4wzFNg4iWNad"
AP10K = (
    f"https://drive.usercontent.google.com/download?id={AP10K_DRIVE_ID}&export=download&confirm=t",
    f"https://drive.google.com/uc?id={AP10K_DRIVE_ID}&export=download&confirm=t",
)

# Official weights files whose size and full sha256 are known, by file name (see the module docstring).
# The others: no size is published, and only DINOv3's file names carry a sha256 prefix.
KNOWN_WEIGHTS: dict[str, tuple[int, str]] = {
    "sam_vit_b_01ec64.pth": (375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "sam_vit_l_0b3195.pth": (1_249_524_607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "sam_vit_h_4b8939.pth": (2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
}

DATASET_ITEMS: dict[str, Item] = {
    "spair": Item(
        "spair",
        "datasets",
        DEFAULT_ROOTS["spair"].parent,  # the tarball unpacks to SPair-71k/
        (
            Source(
                "SPair-71k.tar.gz",
                (f"https://{SPAIR}", f"http://{SPAIR}"),
                unpacks_to=("SPair-71k/JPEGImages", "SPair-71k/PairAnnotation", "SPair-71k/Layout"),
            ),
        ),
    ),
    "pf-pascal": Item(
        "pf-pascal",
        "datasets",
        DEFAULT_ROOTS["pf-pascal"],
        (
            Source(
                "PF-dataset-PASCAL.zip",
                (PROPOSAL_FLOW + "PF-dataset-PASCAL.zip",),
                unpacks_to=("PF-dataset-PASCAL/JPEGImages", "PF-dataset-PASCAL/Annotations"),
            ),
            Source(
                "trn_pairs.csv",
                (NCNET_PAIRS + "train_pairs.csv",),
                sha256="e7604e992744706b0ec0ed9fad240b5e0e45f38c13eaf567af0338ec8a50f40f",
                size=277_757,
            ),
            Source(
                "val_pairs.csv",
                (NCNET_PAIRS + "val_pairs.csv", CNNGEOMETRIC + "val_pairs_pf_pascal.csv"),
                sha256="a9dd7f303abc7ee31c51fe73f39923a6880d4dc9aa4d7af38d5f15a7345407f5",
                size=29_131,
            ),
            Source(
                "test_pairs.csv",
                (NCNET_PAIRS + "test_pairs.csv", CNNGEOMETRIC + "test_pairs_pf_pascal.csv"),
            ),
        ),
    ),
    "pf-willow": Item(
        "pf-willow",
        "datasets",
        DEFAULT_ROOTS["pf-willow"],
        (
            Source("PF-dataset.zip", (PROPOSAL_FLOW + "PF-dataset.zip",), unpacks_to=("PF-dataset",)),
            Source("test_pairs.csv", (CNNGEOMETRIC + "test_pairs_pf.csv",)),
        ),
    ),
    "ap10k": Item(
        "ap10k",
        "datasets",
        DEFAULT_ROOTS["ap10k"].parent,  # the zip unpacks to ap-10k/; the crowd list goes beside it, as in GeoAware-SC
        (
            Source("ap-10k.zip", AP10K, unpacks_to=("ap-10k/annotations", "ap-10k/data")),
            Source(
                CROWD_LIST,
                (CROWD_LIST_URL,),
                sha256="64444a59008ec9402b9409dce6234af946a2f480a8348d1751d22af10c812ee6",
                size=24_011,
            ),
        ),
    ),
}


def model_item(spec: BackboneSpec) -> Item:
    """The download entry of one backbone, from its registry spec and KNOWN_WEIGHTS."""
    size, sha256 = KNOWN_WEIGHTS.get(spec.official_file, (None, None))
    source = Source(
        spec.official_file,
        (spec.url,) if spec.url else (),
        sha256=sha256,
        sha256_prefix=None if sha256 else spec.sha256_prefix,  # a full hash supersedes the file name's prefix
        size=size,
        backbone=spec.name,
    )
    return Item(spec.name, "models", spec.default_weights.parent, (source,), spec.request_url)


def build_table(root: Path = REPO_ROOT) -> dict[str, Item]:
    """Every downloadable item by key, with the repository layout re-created under `root`."""
    items = [*(model_item(spec) for spec in BACKBONES.values()), *DATASET_ITEMS.values()]
    return {item.key: replace(item, folder=Path(root) / item.folder.relative_to(REPO_ROOT)) for item in items}
