"""An evaluation's metrics.json: what every figure means (dataset, split, threshold, averagings, units),
the PCK summary (pck.summarize, with PCK-dagger, and per SPair-71k difficulty level), KAP (with --kap), counts and
timings."""

from __future__ import annotations

import time

import pandas as pd

import pck
from semcorr.config.settings import AVERAGINGS
from semcorr.data.pairs import PairSet

UNITS = {
    "metrics.json": "PCK in % (pck@alpha: per_image and per_keypoint, see averaging)",
    "per_pair.csv": "pck@alpha in %; norm_L (the threshold length L) and the sizes in pixels",
    "per_keypoint.csv": "src/gt/pred x, y, distance and norm_L in pixels of the original image; similarity is the "
    "cosine similarity at the matched patch (-1..1); correct@alpha is distance <= alpha * norm_L (< under a strict "
    "rule: see strict)",
    "per_keypoint_kap.csv": "positive@alpha and negative@alpha are similarities min-max normalised over the pair's "
    "source-visible keypoints (0..1); positive is empty where the keypoint is not visible in the target",
}
ORIGINS = {
    "centre": "pixel centres",
    "corner": "0 at the image's edge (the original project's convention)",
    "canvas": "0 at the image's edge (GeoAware-SC's convention)",
}


def meaning(
    dataset: str, split: str, norm: str, coordinates: str = "centre", strict: bool = False
) -> dict[str, object]:
    """What every figure of the run's files means: dataset, split, threshold and its rule, averagings and units."""
    threshold = pck.NORM_DESCRIPTIONS[norm]
    if dataset == "custom" and norm == "bbox":
        threshold += " (the target_bbox each pair of the pairs file gives)"
    return {
        "dataset": dataset,
        "split": split,
        "pck_norm": norm,
        "threshold": threshold,
        "strict": strict,
        "rule": f"correct when distance {'<' if strict else '<='} alpha * L",
        "averaging": AVERAGINGS,
        "unit": "%",
        "units": {**UNITS, "coordinates": f"x right, y down, integer values at {ORIGINS[coordinates]}"},
    }


def feature_timings(stats: list[dict]) -> dict[str, float | None]:
    """Extraction figures of one or more feature sets, summed."""
    keys = ("extraction_s", "cache_read_s", "images_extracted", "images_from_cache", "features_gb")
    total = {k: sum(s[k] for s in stats) for k in keys}
    rate = total["images_extracted"] / total["extraction_s"] if total["extraction_s"] > 0 else None
    return {**total, "images_per_s": rate, "features_streamed": any(s["features_streamed"] for s in stats)}


def evaluation_metrics(
    eval_set: PairSet,
    *,
    norm: str,
    coordinates: str = "centre",
    strict: bool = False,
    table: pd.DataFrame,
    summary: dict,
    skipped: dict[str, int],
    feature_stats: list[dict],
    matching_s: float,
    started: float,
    startup_s: float | None = None,
    flip: dict | None = None,
    kap: dict | None = None,
    kap_s: float | None = None,
) -> dict:
    """metrics.json: protocol, PCK summary (and PCK per difficulty level where the pairs carry SPair-71k's flags or
    azimuth differences), the flip decisions (`flip`, with --flip-align), KAP (pck.kap, with --kap), counts and
    timings (extraction summed over members)."""
    timings = feature_timings(feature_stats)
    if len(feature_stats) > 1:
        timings["per_member"] = [feature_timings([s]) for s in feature_stats]
    flags = pd.DataFrame([{"pair_id": p.pair_id, **p.flags} for p in eval_set.pairs])
    if pck.difficulty_flags(flags):  # SPair-71k: PCK by viewpoint, scale, truncation, occlusion level, azimuth
        summary = {**summary, "difficulty": pck.difficulty(table, flags)}
    return {
        "protocol": meaning(eval_set.dataset, eval_set.split, norm, coordinates, strict),
        **summary,
        **({"flip": flip} if flip else {}),
        **({"kap": kap} if kap else {}),
        "counts": {
            "pairs": len(eval_set.pairs),
            "keypoints": len(table),
            "images": feature_stats[0]["images"],
            "pairs_skipped": skipped,
            "notes": eval_set.notes,
        },
        "timings": {
            **timings,
            "matching_s": matching_s,
            **({"kap_s": kap_s} if kap else {}),
            "startup_s": startup_s,
            "total_s": time.time() - started,
        },
    }
