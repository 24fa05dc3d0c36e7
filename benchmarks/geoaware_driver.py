"""Runs GeoAware-SC's own evaluation functions on a described input; for make_geoaware_goldens.py.

    python benchmarks/geoaware_driver.py canvases --ref CHECKOUT --spec spec.json --out canvases.npz
    python benchmarks/geoaware_driver.py evaluate --ref CHECKOUT --spec spec.json --out reference.json

Imports pck_train, utils/ and model_utils/ from a checkout of Junyi42/GeoAware-SC (nothing of it is copied
here). It writes the spec's miniature SPair-71k or PF-Pascal tree in the layout the reference reads
(data/SPair-71k/{JPEGImages,ImageAnnotation,PairAnnotation/test,features}, or data/PF-dataset-PASCAL with
test_pairs_pf_pascal.csv; features/<cat>/<stem>_dino[_flip].pt as preprocess_map.py saves them, masks as
preprocess_mask_sam.py does), chdirs there (the reference reads relative data/ paths), and:

- canvases: each image and its mirror image through utils_correspondence.resize (840, black canvas, LANCZOS)
  and ViTExtractor.preprocess_pil (ToTensor, ImageNet normalisation): the normalised tensors, for the
  backbone whose features the spec then gives;
- evaluate: for each config (pck_train's argparse defaults, then a yaml of configs/, then overrides), every
  pair through pck_train.compute_pck on its own (nothing crosses pairs there; the category's used points
  and permutation come from the whole split, as in pck_train.eval), recording the flip distances that reach
  utils_geoware.optimized_kps_1_to_2; and for SPair, eval_spair.convert_all_results and get_img_result
  (all pairs, the geometry-aware subset, each azimuth difference).

Spec: {"dataset": "spair" | "pascal", "npz": "<file beside the spec>", "images": {stem: {"category",
"array" (npz key, HxWx3 uint8), "kps" (SPair: {slot: [x, y]}; PF-Pascal: [[x, y], ...] as in its CSV),
"bndbox" (SPair), "azimuth_id" (SPair), "feat" / "feat_flip" (npz keys, (60, 60, C) float32), "mask" /
"mask_flip" (npz keys, uint8)}}, "pairs": [{"src", "trg"}], "configs": {name: {"base", "overrides"}}}.

What the reference needs to run on a CPU without its Stable Diffusion stack is stubbed (wandb, loguru,
fvcore, model_utils.extractor_sd, and .cuda() / .to("cuda"), which it calls unconditionally); the zero-shot
path concatenates SD features before DINO's, so 1-channel zero SD maps are written and dropped again.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
import numpy as np
import torch
from PIL import Image

ANNO_SIZE, NUM_PATCHES = 840, 60
VOC = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
       "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip
# pck_train.py's argparse defaults
DEFAULTS = dict(
    SEED=42, NOTE="", SAMPLE=0, TEST_SAMPLE=20, TOTAL_SAVE_RESULT=0, IMG_THRESHOLD=False, ANNO_SIZE=840, LR=1.25e-3,
    WD=1e-3, BZ=1, SCHEDULER=None, SCHEDULER_P1=0.3, EPOCH=1, EVAL_EPOCH=5000, NOT_WANDB=False,
    TRAIN_DATASET="spair", LOAD=None, DENSE_OBJ=1, GAUSSIAN_AUGMENT=0.1, FEAT_MAP_DROPOUT=0.2, ENSEMBLE=1,
    PROJ_DIM=768, PAIR_AUGMENT=False, SELF_CONTRAST_WEIGHT=0, SOFT_TRAIN_WINDOW=0, DO_EVAL=False, DUMMY_NET=False,
    EVAL_DATASET="spair", AP10K_EVAL_SUBSET="intra-species", COMPUTE_GEOAWARE_METRICS=False, KPT_RESULT=False,
    ADAPT_FLIP=False, MUTUAL_NN=False, SOFT_EVAL=False, SOFT_EVAL_WINDOW=7,
)  # fmt: skip


def stub(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def unavailable(*_, **__):
    raise RuntimeError("not available in this driver")


def import_reference(checkout: Path) -> types.SimpleNamespace:
    """The reference's modules, with what its evaluation imports but never runs stubbed, and CUDA calls on
    the CPU."""
    quiet = types.SimpleNamespace(info=lambda *a, **k: None, configure=lambda *a, **k: None, add=lambda *a, **k: 0)
    stub("wandb", init=unavailable, log=unavailable)
    stub("loguru", logger=quiet)
    fvcore, fvnn = stub("fvcore"), stub("fvcore.nn")
    fvnn.weight_init = stub("fvcore.nn.weight_init", c2_msra_fill=unavailable, c2_xavier_fill=unavailable)
    fvcore.nn = fvnn
    stub("model_utils.extractor_sd", load_model=unavailable, process_features_and_mask=unavailable)
    torch.Tensor.cuda = lambda self, *a, **k: self
    to = torch.Tensor.to

    def to_cpu(self, *args, **kwargs):
        args = tuple("cpu" if str(a).startswith("cuda") else a for a in args)
        if str(kwargs.get("device", "")).startswith("cuda"):
            kwargs["device"] = "cpu"
        return to(self, *args, **kwargs)

    torch.Tensor.to = to_cpu
    sys.path.insert(0, str(checkout))
    names = ("utils.utils_correspondence", "utils.utils_dataset", "utils.utils_geoware", "utils.eval_spair",
             "utils.logger", "model_utils.extractor_dino", "pck_train")  # fmt: skip
    return types.SimpleNamespace(**{n.split(".")[-1]: importlib.import_module(n) for n in names})


class DinoOnly(torch.nn.Module):
    """The aggregation 'network' of the DINO-only path: drops the 3 zero SD channels put in front."""

    def forward(self, batch, pose=None):
        return batch[:, 3:]


def build_tree(spec: dict, arrays: dict, root: Path) -> dict[str, str]:
    """The dataset in the reference's layout under root/data; each stem's image path as the reference reads it."""
    spair = spec.get("dataset", "spair") == "spair"
    base = root / "data" / ("SPair-71k" if spair else "PF-dataset-PASCAL")
    paths = {}
    for stem, info in spec["images"].items():
        image = Image.fromarray(np.asarray(arrays[info["array"]], np.uint8))
        folder = base / "JPEGImages" / (info["category"] if spair else "")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{stem}.jpg", format="PNG")  # PIL reads by content: exactly these pixels
        features = base / "features" / (info["category"] if spair else "")
        features.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "_flip"):
            if f"feat{suffix}" in info:
                feat = torch.from_numpy(np.asarray(arrays[info[f"feat{suffix}"]], np.float32))
                torch.save(feat.permute(2, 0, 1)[None].contiguous(), features / f"{stem}_dino{suffix}.pt")
                zero = torch.zeros(1, 1, NUM_PATCHES, NUM_PATCHES)
                torch.save({"s3": zero, "s4": zero, "s5": zero}, features / f"{stem}_sd{suffix}.pt")
            if f"mask{suffix}" in info:
                Image.fromarray(np.asarray(arrays[info[f"mask{suffix}"]], np.uint8)).save(
                    features / f"{stem}_mask{suffix}.png"
                )
        if spair:
            kps = {str(i): None for i in range(30)} | {str(int(k)): list(v) for k, v in info["kps"].items()}
            w, h = image.size
            annotation = {"filename": f"{stem}.jpg", "category": info["category"], "image_width": w,
                          "image_height": h, "image_depth": 3, "azimuth_id": info["azimuth_id"],
                          "bndbox": info["bndbox"], "kps": kps}  # fmt: skip
            path = base / "ImageAnnotation" / info["category"] / f"{stem}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(annotation))
            paths[stem] = f"data/SPair-71k/JPEGImages/{info['category']}/{stem}.jpg"
        else:
            (base / "Annotations" / info["category"]).mkdir(parents=True, exist_ok=True)
            paths[stem] = f"data/PF-dataset-PASCAL/../PF-dataset-PASCAL/JPEGImages/{stem}.jpg"
    if spair:
        write_spair_pairs(spec, arrays, base)
    else:
        write_pascal_pairs(spec, base)
    return paths


def write_spair_pairs(spec: dict, arrays: dict, base: Path) -> None:
    folder = base / "PairAnnotation" / "test"
    folder.mkdir(parents=True, exist_ok=True)
    for n, pair in enumerate(spec["pairs"]):
        src, trg = spec["images"][pair["src"]], spec["images"][pair["trg"]]
        (hs, ws), (ht, wt) = (np.asarray(arrays[i["array"]]).shape[:2] for i in (src, trg))
        annotation = {"pair_id": n, "category": src["category"], "src_imname": f"{pair['src']}.jpg",
                      "trg_imname": f"{pair['trg']}.jpg", "src_imsize": [ws, hs, 3], "trg_imsize": [wt, ht, 3],
                      "src_bndbox": src["bndbox"], "trg_bndbox": trg["bndbox"]}  # fmt: skip
        (folder / f"{n:06d}-{pair['src']}-{pair['trg']}:{src['category']}.json").write_text(json.dumps(annotation))


def write_pascal_pairs(spec: dict, base: Path) -> None:
    rows = []
    for pair in spec["pairs"]:
        src, trg = spec["images"][pair["src"]], spec["images"][pair["trg"]]
        coords = [";".join(repr(float(p[axis])) for p in image["kps"]) for image in (src, trg) for axis in (0, 1)]
        rows.append([f"PF-dataset-PASCAL/JPEGImages/{pair['src']}.jpg", f"PF-dataset-PASCAL/JPEGImages/{pair['trg']}.jpg",
                     VOC.index(src["category"]) + 1, *coords])  # fmt: skip
    with open(base / "test_pairs_pf_pascal.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["source_image", "target_image", "class", "XA", "YA", "XB", "YB"])
        writer.writerows(rows)


def canvases(ref: types.SimpleNamespace, spec: dict, paths: dict[str, str]) -> dict[str, np.ndarray]:
    """Each image's and its mirror image's normalised 840 canvas, by the reference's resize and preprocess_pil."""

    class Stub(torch.nn.Module):  # ViTExtractor only reads the patch size and stride off its model
        def __init__(self):
            super().__init__()
            self.patch_embed = torch.nn.Module()
            self.patch_embed.patch_size, self.patch_embed.proj = 14, torch.nn.Conv2d(3, 1, 14, 14)

    extractor = ref.extractor_dino.ViTExtractor("dinov2_vitb14", stride=14, model=Stub(), device="cpu")
    out = {}
    for stem in spec["images"]:
        image = Image.open(paths[stem]).convert("RGB")
        for tag, im in (("image", image), ("mirrored", image.transpose(Image.FLIP_LEFT_RIGHT))):
            canvas = ref.utils_correspondence.resize(im, ANNO_SIZE, resize=True, to_pil=True)
            out[f"{stem}/{tag}"] = extractor.preprocess_pil(canvas)[0].numpy()
    return out


def make_args(checkout: Path, ref: types.SimpleNamespace, config: dict, dataset: str) -> argparse.Namespace:
    """pck_train's defaults, the yaml, the overrides, then what main() derives (pck_train.py:366-371)."""
    values = dict(DEFAULTS)
    if config.get("base"):
        values |= ref.logger.load_config(str(checkout / config["base"]))
    values |= config.get("overrides", {})
    values["EVAL_DATASET"] = "pascal" if dataset == "pascal" else values["EVAL_DATASET"]
    values["NUM_PATCHES"] = NUM_PATCHES
    values["BBOX_THRE"] = not (values["IMG_THRESHOLD"] or values["EVAL_DATASET"] == "pascal")
    values["SAMPLE"] = values["SAMPLE"] or None
    return argparse.Namespace(**values)


def evaluate(ref: types.SimpleNamespace, args: argparse.Namespace, root: Path) -> dict:
    """Every pair through compute_pck on its own, with the flip distances it compared; the SPair summaries."""
    distances = []
    optimise = ref.pck_train.optimized_kps_1_to_2

    def recorded(a, kps, kps_flip, kps1, kps2, flip_dist, original_dist, *rest):
        distances.append({"original": float(original_dist), "flipped": float(flip_dist)})
        return optimise(a, kps, kps_flip, kps1, kps2, flip_dist, original_dist, *rest)

    ref.pck_train.optimized_kps_1_to_2 = recorded
    data_dir, categories, split = ref.utils_dataset.get_dataset_info(args, "test")
    pairs, results = [], []
    for category in categories:
        files, kps, thresholds, used = ref.utils_dataset.load_eval_data(args, data_dir, category, split)
        for i in range(len(files) // 2):
            distances.clear()
            threshold = thresholds[i : i + 1] if args.BBOX_THRE else None
            _, _, out, img_correct = ref.pck_train.compute_pck(
                args, str(root / "save"), DinoOnly(), files[2 * i : 2 * i + 2], kps[2 * i : 2 * i + 2], category,
                used, thresholds=threshold,
            )  # fmt: skip
            results += out
            pairs.append({
                "src": Path(files[2 * i]).stem, "trg": Path(files[2 * i + 1]).stem, "category": category,
                "used_points": used.tolist(), "pred_30slot": out[0]["src_kpts_pred"].tolist(),
                "pck": img_correct[:3], "flip": distances[0] if distances else None,
            })  # fmt: skip
    ref.pck_train.optimized_kps_1_to_2 = optimise
    out = {"args": {k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool | None)},
           "alphas": [0.1, 0.05, 0.15] if args.EVAL_DATASET == "pascal" else [0.1, 0.05, 0.01], "pairs": pairs}  # fmt: skip
    if args.EVAL_DATASET == "spair":
        spair = ref.eval_spair
        converted = spair.convert_all_results(results)
        out["geo_aware"] = {"pck": spair.get_img_result(converted, geo=True)[0].tolist(),
                            "pairs": spair.get_img_result(converted, geo=True)[1]}  # fmt: skip
        out["per_pair_geo_aware"] = [spair.get_img_result([c], geo=True)[0].tolist() for c in converted]
        out["azimuth"] = {str(a): {"pck": spair.get_img_result(converted, az=a)[0].tolist(),
                                   "pairs": spair.get_img_result(converted, az=a)[1]} for a in range(5)}  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("canvases", "evaluate"))
    ap.add_argument("--ref", type=Path, required=True, help="a checkout of Junyi42/GeoAware-SC")
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True, help="an empty folder for the reference's data tree")
    args = ap.parse_args()
    checkout, spec_path, out = args.ref.resolve(), args.spec.resolve(), args.out.resolve()
    spec = json.loads(spec_path.read_text())
    arrays = dict(np.load(spec_path.parent / spec["npz"]))
    ref = import_reference(checkout)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    paths = build_tree(spec, arrays, args.workdir.resolve())
    torch.set_grad_enabled(False)
    if args.mode == "canvases":
        np.savez(out, **canvases(ref, spec, paths))
        return
    dataset = spec.get("dataset", "spair")
    configs = {name: evaluate(ref, make_args(checkout, ref, config, dataset), args.workdir.resolve())
               for name, config in spec["configs"].items()}  # fmt: skip
    out.write_text(json.dumps(configs, indent=1))


if __name__ == "__main__":
    main()
