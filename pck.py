"""PCK: the per-keypoint table, and every summary figure computed from that table alone.

A keypoint is correct at alpha when its distance to the ground truth is <= alpha * L (< alpha * L under a
strict protocol, GeoAware-SC's: the table's attrs["strict"]), with L:
  bbox   max side of the target bounding box (SPair-71k's protocol)
  image  max side of the target image (PF-Pascal's usual protocol)
  kpbox  max side of the box spanned by the target keypoints (PF-Willow's usual protocol)
Two averagings are reported: per_image (mean over pairs of each pair's PCK) and per_keypoint
(pooled over all keypoints). Figures are percentages. No pair enters them with an L that cannot be (a
box without width or height, keypoints at one point, more than twice its image: semcorr/data/pairs.py).

Beside PCK, the two figures Jamais Vu (github.com/VICO-UoE/JamaisVu, NeurIPS 2025) reports, each with the same
shape (per alpha, both averagings, per category): PCK-dagger (pck_dagger), from the keypoint table like PCK, and
KAP (kap), from the per-keypoint scores that semcorr/engine/kap.py takes from the similarity maps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from semcorr.data.pairs import DIFFICULTY_LEVELS, PairRecord, threshold_lengths, threshold_problems

NORM_DESCRIPTIONS = {
    "bbox": "alpha * max side of the target bounding box",
    "image": "alpha * max side of the target image",
    "kpbox": "alpha * max side of the box spanned by the target keypoints",
}


def correct_column(alpha: float) -> str:
    return f"correct@{alpha:g}"


STRICT = "strict"  # a keypoint table's attrs key: correct when distance < alpha * L (else <=)
KEYPOINT_SUBSETS = {"geo_aware": "geometry-aware keypoints (GeoAware-SC's subset of SPair-71k)"}


def is_correct(
    distance: np.ndarray | pd.Series, norm_l: np.ndarray | pd.Series, alpha: float, strict: bool = False
) -> np.ndarray:
    """The rule that marks a keypoint correct at alpha: its distance to the ground truth is <= alpha * L
    (strict: < alpha * L)."""
    return np.asarray(distance < alpha * norm_l if strict else distance <= alpha * norm_l)


def keypoint_table(
    pairs: list[PairRecord],
    pred: np.ndarray,
    alphas: list[float],
    norm: str,
    similarity: np.ndarray | None = None,
    strict: bool = False,
) -> pd.DataFrame:
    """One row per keypoint: ids, source / ground-truth / predicted pixels, distance, L, correctness (by the
    strict rule or not), the pairs' per-keypoint flags (e.g. geo_aware) and (when given) the similarity the
    prediction matched at.

    `pred` is (K, 2), the predictions of all pairs' keypoints concatenated in pair order. A pair whose threshold
    length L cannot be (semcorr/data/pairs.threshold_problems; the loaders leave such pairs out) is an error.
    """
    problems = threshold_problems(pairs, norm)
    if problems:
        i, problem = next(iter(problems.items()))
        raise ValueError(
            f"pair {pairs[i].pair_id} has no usable PCK threshold length L (--pck-norm {norm}): {problem}; "
            f"{len(problems)} such pairs in all"
        )
    counts = [p.num_keypoints for p in pairs]
    gt = np.concatenate([p.trg_kps for p in pairs]).astype(np.float64)
    src = np.concatenate([p.src_kps for p in pairs]).astype(np.float64)
    norms = np.repeat(threshold_lengths(pairs, norm), counts)
    dist = np.linalg.norm(pred.astype(np.float64) - gt, axis=1)
    table = pd.DataFrame(
        {
            "pair_id": np.repeat([p.pair_id for p in pairs], counts),
            "category": np.repeat([p.category for p in pairs], counts),
            "kp_id": [k for p in pairs for k in p.kp_ids],
            "src_x": src[:, 0],
            "src_y": src[:, 1],
            "gt_x": gt[:, 0],
            "gt_y": gt[:, 1],
            "pred_x": pred[:, 0],
            "pred_y": pred[:, 1],
            "distance": dist,
            "norm_L": norms,
        }
    )
    for name in sorted({name for p in pairs for name in p.kp_flags}):
        table[name] = np.concatenate([p.kp_flags.get(name, [False] * p.num_keypoints) for p in pairs]).astype(bool)
    if similarity is not None:
        table["similarity"] = similarity
    table.attrs[STRICT] = strict
    return mark_correct(table, alphas)


def mark_correct(table: pd.DataFrame, alphas: Iterable[float]) -> pd.DataFrame:
    """The per-keypoint table with a correct@alpha column for each alpha by `is_correct` (strict as the table's
    attrs say): scores a table at thresholds it was not evaluated at (a column it has is replaced in place)."""
    alphas, strict = list(alphas), table.attrs.get(STRICT, False)
    correct = pd.DataFrame(
        {correct_column(a): is_correct(table["distance"], table["norm_L"], a, strict) for a in alphas},
        index=table.index,
    )
    present = [column for column in correct if column in table]
    scored = pd.concat([table, correct.drop(columns=present)], axis="columns")
    scored[present] = correct[present]
    scored.attrs[STRICT] = strict
    return scored


def pck_curve(table: pd.DataFrame, alphas: Iterable[float]) -> pd.DataFrame:
    """PCK (%) at any alphas from a per-keypoint table, both averagings, computed as metrics.json's are."""
    alphas = [float(a) for a in alphas]
    scores = overall(mark_correct(table, alphas), alphas)
    return pd.DataFrame([{"alpha": a, **scores[f"pck@{a:g}"]} for a in alphas])


def overall(table: pd.DataFrame, alphas: list[float], metric: str = "pck") -> dict[str, dict[str, float]]:
    """PCK (or the `metric` whose hits the correct@alpha columns hold) at each alpha, both averagings, over the whole
    table."""
    per_pair = table.groupby("pair_id", sort=False)
    out = {}
    for alpha in alphas:
        col = correct_column(alpha)
        out[f"{metric}@{alpha:g}"] = {
            "per_image": 100.0 * float(per_pair[col].mean().mean()),
            "per_keypoint": 100.0 * float(table[col].mean()),
        }
    return out


def alphas_of(table: pd.DataFrame) -> list[float]:
    """The thresholds a keypoint table was scored at, from its column names."""
    return [float(c.split("@", 1)[1]) for c in table.columns if c.startswith("correct@")]


def summarize(table: pd.DataFrame) -> dict[str, object]:
    """Overall, per-category and per-keypoint-id PCK (both averagings), from the keypoint table only."""
    alphas = alphas_of(table)
    per_category = {
        cat: {**overall(group, alphas), "pairs": int(group["pair_id"].nunique()), "keypoints": len(group)}
        for cat, group in table.groupby("category", sort=True)
    }
    by_id = table.groupby(["category", "kp_id"], sort=True)
    id_pck = by_id[[correct_column(a) for a in alphas]].mean() * 100.0
    id_pck.columns = [f"pck@{a:g}" for a in alphas]
    id_pck["keypoints"] = by_id.size()
    per_kp_id: dict[str, dict[str, dict]] = {}
    for (cat, kp), row in zip(id_pck.index, id_pck.to_dict("records"), strict=True):
        per_kp_id.setdefault(cat, {})[kp] = {**row, "keypoints": int(row["keypoints"])}
    subsets = {
        name: {**overall(table[table[name]], alphas), "pairs": int(table.loc[table[name], "pair_id"].nunique()),
               "keypoints": int(table[name].sum()), "description": description}
        for name, description in KEYPOINT_SUBSETS.items()
        if name in table and table[name].any()
    }  # fmt: skip
    return {
        **overall(table, alphas),
        "pairs": int(table["pair_id"].nunique()),
        "keypoints": len(table),
        "per_category": per_category,
        "per_keypoint_id": per_kp_id,
        **({"subsets": subsets} if subsets else {}),
        "pck_dagger": pck_dagger(table),
    }


# --- PCK-dagger and KAP (Jamais Vu's pck_train.py: compute_pck with PCKD, compute_kap) ----------------------------

DAGGER_RULE = (
    "correct when distance < alpha * L and, of the pair's keypoints visible in both images, its own ground truth is "
    "the nearest to its prediction (equal distances: the lowest id)"
)
KAP_RULE = (
    "average precision (scikit-learn's definition) of each source-visible keypoint's similarity map, min-max "
    "normalised over the pair's maps: positive, its maximum within alpha * L of the target keypoint (where it is "
    "visible there), negative, its maximum beyond (over the whole map where it is not); patches at their top-left "
    "corner"
)
KAP_AVERAGING = {
    "per_image": "mean over image pairs of each pair's average precision",
    "per_keypoint": "each category's average precision over its pooled keypoints, averaged over categories weighted "
    "by their source-visible keypoints",
}


def nearest_is_own(table: pd.DataFrame) -> np.ndarray:
    """Per row of a keypoint table: whether its own ground truth is, of its pair's (the table holds the keypoints
    visible in both images), the nearest to its prediction; equal distances go to the lowest id (numeric ids by
    value), as torch.argmin over Jamais Vu's ascending ids."""
    if table.empty:
        return np.zeros(0, dtype=bool)
    pair = pd.factorize(table["pair_id"])[0]
    numeric = pd.to_numeric(table["kp_id"], errors="coerce")
    rank = pd.factorize(numeric if numeric.notna().all() else table["kp_id"], sort=True)[0]
    order = np.lexsort((rank, pair))  # each pair's rows together, ids ascending
    pair = pair[order]
    size = np.bincount(pair)[pair]  # each row's pair's number of keypoints
    row = np.repeat(np.arange(len(pair)), size)  # every (row, candidate of its pair)
    block = np.cumsum(size) - size  # where each row's candidates start
    candidate = np.searchsorted(pair, pair)[row] + np.arange(len(row)) - np.repeat(block, size)
    pred = table[["pred_x", "pred_y"]].to_numpy(np.float64)[order]
    gt = table[["gt_x", "gt_y"]].to_numpy(np.float64)[order]
    d2 = ((pred[row] - gt[candidate]) ** 2).sum(axis=1)
    nearest = d2 == np.repeat(np.minimum.reduceat(d2, block), size)
    hits = np.flatnonzero(nearest)  # in row order, each row's candidates by ascending id
    first = hits[np.r_[True, row[hits][1:] != row[hits][:-1]]]  # each row's first nearest: the lowest id
    own = np.empty(len(order), dtype=bool)
    own[order] = candidate[first] == np.arange(len(order))
    return own


def pck_dagger(table: pd.DataFrame) -> dict[str, object]:
    """PCK-dagger at the table's alphas, both averagings, overall and per category, from the keypoint table alone."""
    alphas, own = alphas_of(table), nearest_is_own(table)
    hits = table[["pair_id", "category"]].assign(
        **{correct_column(a): is_correct(table["distance"], table["norm_L"], a, strict=True) & own for a in alphas}
    )
    per_category = {cat: overall(group, alphas, "pck_dagger") for cat, group in hits.groupby("category", sort=True)}
    return {**overall(hits, alphas, "pck_dagger"), "per_category": per_category, "rule": DAGGER_RULE}


def kap_alphas(samples: pd.DataFrame) -> list[float]:
    """The thresholds a table of KAP scores holds, from its column names."""
    return [float(c.split("@", 1)[1]) for c in samples.columns if c.startswith("positive@")]


def kap(samples: pd.DataFrame) -> dict[str, object]:
    """KAP at each alpha, both averagings, overall and per category, from the per-keypoint scores alone (one row per
    source-visible keypoint: pair_id, category, trg_visible, positive@alpha and negative@alpha)."""
    visible = samples["trg_visible"].to_numpy(bool)
    pair, pairs = pd.factorize(samples["pair_id"])
    category, categories = pd.factorize(samples["category"], sort=True)
    pair_category = np.zeros(len(pairs), int)
    pair_category[pair] = category
    keypoints = np.bincount(category)
    out: dict[str, object] = {}
    per_category: dict[str, dict] = {cat: {} for cat in categories}
    for alpha in kap_alphas(samples):
        positive, negative = (samples[f"{kind}@{alpha:g}"].to_numpy(np.float64) for kind in ("positive", "negative"))
        scores, labels = np.r_[positive[visible], negative], np.r_[np.ones(visible.sum()), np.zeros(len(negative))]
        by_pair = average_precision(scores, labels, np.r_[pair[visible], pair])
        by_category = average_precision(scores, labels, np.r_[category[visible], category])
        pair_mean = np.bincount(pair_category, by_pair) / np.bincount(pair_category)
        key = f"kap@{alpha:g}"
        out[key] = {
            "per_image": 100.0 * float(by_pair.mean()),
            "per_keypoint": 100.0 * float(np.average(by_category, weights=keypoints)),
        }
        for c, cat in enumerate(categories):
            per_category[cat][key] = {
                "per_image": 100.0 * float(pair_mean[c]),
                "per_keypoint": 100.0 * float(by_category[c]),
            }
    for c, cat in enumerate(categories):
        per_category[cat] |= {"pairs": int((pair_category == c).sum()), "keypoints": int(keypoints[c])}
    counts = {"pairs": len(pairs), "keypoints": len(samples)}
    return {**out, **counts, "per_category": per_category, "rule": KAP_RULE, "averaging": KAP_AVERAGING}


def average_precision(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """The average precision of each group's scores (group codes 0..n-1), all groups in one pass, by scikit-learn's
    average_precision_score definition: over the distinct scores in descending order (equal scores taken together),
    the precision at each, weighted by the recall it adds. A group without positives gets NaN."""
    order = np.lexsort((-scores, groups))
    group, score, label = groups[order], scores[order], labels[order]
    first = np.searchsorted(group, group)  # each sample's group's first sample
    tp = np.cumsum(label)
    tp = tp - (tp[first] - label[first])
    seen = np.arange(len(group)) - first + 1
    last = np.r_[(group[1:] != group[:-1]) | (score[1:] != score[:-1]), True]  # a distinct score's last sample
    group, tp, seen = group[last], tp[last], seen[last]
    starts = np.r_[True, group[1:] != group[:-1]]
    positives = np.zeros(group[-1] + 1)
    positives[group] = tp  # each group's last: its total
    recall = tp / np.maximum(positives[group], 1)
    added = recall - np.where(starts, 0.0, np.r_[0.0, recall[:-1]])
    precision_sum = np.bincount(group, added * tp / seen, minlength=len(positives))
    return np.where(positives > 0, precision_sum, np.nan)


def pair_table(table: pd.DataFrame, pairs: list[PairRecord]) -> pd.DataFrame:
    """One row per evaluated pair: images (keys and paths), sizes, flags, keypoint count, the
    threshold length L and PCK at each alpha."""
    alphas = alphas_of(table)
    scores = table.groupby("pair_id", sort=False)[[correct_column(a) for a in alphas]].mean() * 100.0
    scores.columns = [f"pck@{a:g}" for a in alphas]
    rows = pd.DataFrame(
        [
            {
                "pair_id": p.pair_id,
                "category": p.category,
                "src_image": p.src.key,
                "trg_image": p.trg.key,
                "src_path": p.src.path,
                "trg_path": p.trg.path,
                "src_w": p.src.size[0],
                "src_h": p.src.size[1],
                "trg_w": p.trg.size[0],
                "trg_h": p.trg.size[1],
                "keypoints": p.num_keypoints,
                **p.flags,
            }
            for p in pairs
        ]
    )
    lengths = table.groupby("pair_id", sort=False)["norm_L"].first()
    return rows.merge(lengths, left_on="pair_id", right_index=True, how="left").merge(
        scores, left_on="pair_id", right_index=True, how="left"
    )


SPAIR_FLAGS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion")  # the pair annotations'


def has_difficulty_flags(pairs: pd.DataFrame) -> bool:
    """Whether every pair of a per-pair table carries SPair-71k's difficulty flags."""
    return all(flag in pairs and pairs[flag].notna().all() for flag in SPAIR_FLAGS)


def difficulty_flags(pairs: pd.DataFrame) -> list[str]:
    """The difficulty flags every pair of a per-pair table carries."""
    return [flag for flag in DIFFICULTY_LEVELS if flag in pairs and pairs[flag].notna().all()]


def level_name(flag: str, level: int) -> str:
    names = DIFFICULTY_LEVELS[flag]
    return names[level] if 0 <= level < len(names) else str(level)


def difficulty(table: pd.DataFrame, pairs: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """PCK (both averagings) at each level of each difficulty flag present: flag -> level name -> PCK
    at each alpha, pairs, keypoints. `pairs` is the per-pair table (pair_id and the flag columns)."""
    alphas, present = alphas_of(table), difficulty_flags(pairs)
    flags = pairs[["pair_id", *present]].astype(dict.fromkeys(present, int))
    levels = table.merge(flags, on="pair_id", how="left", validate="many_to_one")
    return {
        flag: {
            level_name(flag, level): {
                **overall(group, alphas),
                "pairs": int(group["pair_id"].nunique()),
                "keypoints": len(group),
            }
            for level, group in levels.groupby(flag, sort=True)
        }
        for flag in present
    }
