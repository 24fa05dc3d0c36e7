"""Pose alignment by flip (--flip-align): mirrored queries, the decision, what is recorded, and the errors.
Against GeoAware-SC's own code: tests/test_protocol_geoaware.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import colour_backbone, colour_config

from semcorr.cli.resolve import resolve
from semcorr.data.pairs import DatasetError, mirror_partners
from semcorr.engine import flip
from semcorr.engine.evaluation import evaluate
from semcorr.engine.matching import source_descriptors
from semcorr.engine.members import build_member
from semcorr.runs.folders import read_run


def with_partners(pairset, partner: dict[str, str]):
    """The pairs with left-right partners (ids not in `partner` lie on the mirror axis)."""
    for pair in pairset.pairs:
        pair.kp_mirror = [partner.get(kp, kp) for kp in pair.kp_ids]
    return pairset


def test_partners_are_swapped_where_both_are_there(colour_pairs):
    pair = replace(colour_pairs.pairs[0], kp_ids=["0", "1", "2", "4"], kp_mirror=["1", "0", "3", "4"])
    order, has = mirror_partners(pair)
    assert order.tolist() == [1, 0, 2, 3]  # 2's partner 3 is not visible in both: it keeps its own place
    assert has.tolist() == [True, True, False, True]  # ... and keeps its unflipped prediction; 4 is on the axis
    with pytest.raises(DatasetError, match="no left-right keypoint partners"):
        mirror_partners(replace(pair, kp_mirror=None))


def test_a_mirrored_query_reads_the_mirror_image_at_the_partners_mirrored_place(tmp_path, colour_pairs):
    """On the colour-coded object a point and its mirror have the same colour, so the mirror image's descriptor at
    the mirrored place of keypoint j is the image's descriptor of keypoint j."""
    pairs = with_partners(colour_pairs, {"0": "1", "1": "0"}).pairs
    settings = colour_config(tmp_path)
    images = [*colour_pairs.unique_images(), *flip.mirrored_sources(pairs)]
    member, _ = build_member(settings.member, settings.extract, colour_backbone(tmp_path), images, progress=False)
    plain = source_descriptors(member.features, pairs, "nearest")
    mirrored = source_descriptors(member.features, pairs, "nearest", mirrored=True)
    order = np.concatenate(
        [mirror_partners(p)[0] + sum(q.num_keypoints for q in pairs[:i]) for i, p in enumerate(pairs)]
    )
    np.testing.assert_allclose(mirrored.numpy(), plain.numpy()[order], atol=1e-3)
    assert not np.allclose(mirrored.numpy(), plain.numpy(), atol=1e-3)  # keypoints 0 and 1 did swap


@pytest.mark.parametrize("mode", ["mutual-nn", "mask"])
def test_a_flip_run_records_each_decision_and_which_keypoints_took_it(tmp_path, colour_pairs, mode):
    masks = tmp_path / "masks"
    for pair in colour_pairs.pairs:  # the whole image inside, in preprocess_mask_sam.py's layout
        (masks / pair.category).mkdir(parents=True, exist_ok=True)
        for ref, suffix in ((pair.src, ""), (pair.src, "_flip"), (pair.trg, "")):
            Image.new("L", (96, 96), 255).save(masks / pair.category / f"{Path(ref.path).stem}_mask{suffix}.png")
    pairset = with_partners(colour_pairs, {"0": "1", "1": "0"})
    settings = replace(colour_config(tmp_path), flip_align=mode, flip_masks=str(masks))
    run = read_run(evaluate(settings, pairset, colour_backbone(tmp_path)))
    pairs, table, metrics = run.pairs(), run.keypoints(), run.metrics
    assert pairs["flip_chosen"].dtype == bool and pairs[["original_distance", "flip_distance"]].notna().all().all()
    assert (pairs["flip_chosen"] == (pairs["flip_distance"] < pairs["original_distance"])).all()
    chosen = dict(zip(pairs["pair_id"], pairs["flip_chosen"], strict=True))
    assert (table["flipped"] <= table["pair_id"].map(chosen)).all()  # only keypoints of chosen pairs take it
    assert metrics["flip"] == {"mode": mode, "pairs_flipped": int(pairs["flip_chosen"].sum()), "pairs": len(pairs),
                               "keypoints_flipped": int(table["flipped"].sum()), "keypoints": len(table)}  # fmt: skip


def test_flip_needs_partners_and_masks_and_says_so(tmp_path, colour_pairs):
    settings = replace(colour_config(tmp_path), flip_align="mutual-nn")
    with pytest.raises(DatasetError, match="--flip-align needs each keypoint's left-right partner"):
        evaluate(settings, colour_pairs, colour_backbone(tmp_path))
    settings = replace(settings, flip_align="mask", flip_masks=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=r"no mask .*nowhere.*preprocess_mask_sam\.py.*mutual-nn"):
        evaluate(settings, with_partners(colour_pairs, {}), colour_backbone(tmp_path))


def test_flip_settings_are_resolved_once(tmp_path):
    assert resolve("evaluation", {}).flip_align == "off"
    settings = resolve("evaluation", {"flip_align": "mask", "data_root": str(tmp_path)})
    assert settings.flip_masks == str(tmp_path / "features")  # where preprocess_mask_sam.py writes them
