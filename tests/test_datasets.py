"""Dataset loaders on tiny datasets written in the exact on-disk formats (tests/dataset_factory.py)."""

import json
import re
import shutil

import numpy as np
import pytest
import scipy.io
from dataset_factory import (
    KP_COLOURS,
    FakeImage,
    FakePair,
    default_pairs,
    fake_images,
    fake_pairs,
    make_custom,
    make_pf_pascal,
    make_pf_willow,
    make_spair,
)
from PIL import Image

from semcorr.data.datasets import load_pairs
from semcorr.data.images import ImageError, load_image
from semcorr.data.pairs import BAD_THRESHOLD, DatasetError


def assert_matches(pairset, pairs, positional_ids=False, boxes=True):
    """The loaded pairs are the described ones, in order, with their keypoints, ids and boxes."""
    assert len(pairset.pairs) == len(pairs)
    for got, want in zip(pairset.pairs, pairs, strict=True):
        src, trg, ids = want.expected(positional_ids)
        assert got.src_kps.dtype == np.float32 and got.src_kps.shape == (len(ids), 2)
        np.testing.assert_allclose(got.src_kps, src, atol=1e-4)
        np.testing.assert_allclose(got.trg_kps, trg, atol=1e-4)
        assert got.kp_ids == ids
        assert got.category == want.src.category
        assert (got.src.size, got.trg.size) == (want.src.size, want.trg.size)
        if boxes:
            np.testing.assert_allclose(got.trg_bbox, want.trg.box(), atol=1e-4)
            np.testing.assert_allclose(got.src_bbox, want.src.box(), atol=1e-4)


def split_of(pairs, split):
    return [p for p in pairs if p.split == split]


# ---- SPair-71k ---------------------------------------------------------------------------------


@pytest.mark.parametrize("windows_names", [False, True])
def test_spair_every_split_and_layout(tmp_path, windows_names):
    pairs = default_pairs("spair")
    for pair, flags in zip(pairs, [{"viewpoint_variation": 2, "mirror": 1}, {"truncation": 1}], strict=False):
        pair.flags = flags
    root = make_spair(tmp_path / "SPair-71k", pairs, windows_names=windows_names)
    for split in ("trn", "val", "test"):
        expected = split_of(pairs, split)
        assert_matches(load_pairs("spair", root=root, split=split, layout="large"), expected)
        assert_matches(load_pairs("spair", root=root, split=split, layout="small"), expected[::2])
    ps = load_pairs("spair", root=root, split="train")  # alias of trn
    assert ps.split == "trn" and ps.pairs[0].pair_id == f"000001-{pairs[0].src.name}-{pairs[0].trg.name}:cat"
    assert ps.pairs[0].flags == {
        "viewpoint_variation": 2, "scale_variation": 0, "truncation": 0, "occlusion": 0, "mirror": 1, "azimuth_difference": 0,
    }  # fmt: skip
    assert ps.pairs[1].flags["truncation"] == 1
    first = ps.pairs[0].src
    assert first.key == f"spair/cat/{pairs[0].src.name}"
    assert first.path == str(root / "JPEGImages" / "cat" / f"{pairs[0].src.name}.jpg")


def test_spair_layout_lines_with_underscore(tmp_path):
    root = make_spair(tmp_path, windows_names=True)
    layout = root / "Layout" / "large" / "val.txt"
    official = layout.read_text()
    layout.write_text(official.replace(":", "_"))
    ps = load_pairs("spair", root=root, split="val")
    assert [p.pair_id for p in ps.pairs] == official.split()


def test_spair_lists_pairs_without_opening_images(tmp_path):
    root = make_spair(tmp_path)
    for jpg in (root / "JPEGImages").rglob("*.jpg"):
        jpg.write_bytes(b"not a jpeg")  # sizes must come from the annotations
    ps = load_pairs("spair", root=root, split="test")
    assert len(ps.pairs) == 12 and ps.pairs[0].src.size == (48, 36)


def test_spair_same_image_name_in_two_categories(tmp_path):
    cats = fake_images("cat", 2, seed=1)
    dogs = [FakeImage(i.name, "dog", (30, 20), {0: (1.0, 2.0), 1: (3.0, 4.0)}) for i in cats]
    pairs = fake_pairs(cats) + fake_pairs(dogs)
    ps = load_pairs("spair", root=make_spair(tmp_path, pairs), split="test")
    images = ps.unique_images()
    assert len(images) == 4 and len({i.path for i in images}) == 4
    assert {i.size for i in images} == {(48, 36), (30, 20)}


def test_spair_limit_clamping_and_empty_pairs(tmp_path):
    images = [
        FakeImage("a", "cat", (40, 30), {0: (5.0, 5.0), 1: (43.0, -2.0)}),  # 1 outside the image
        FakeImage("b", "cat", (40, 30), {0: (6.0, 6.0), 1: (7.0, 7.0)}),
        FakeImage("c", "cat", (40, 30), {2: (8.0, 8.0)}),  # no keypoint in common with a or b
    ]
    pairs = [FakePair(images[0], images[1]), FakePair(images[0], images[2]), FakePair(images[1], images[0])]
    root = make_spair(tmp_path, pairs)
    ps = load_pairs("spair", root=root, split="test")
    assert [p.trg.key for p in ps.pairs] == ["spair/cat/b", "spair/cat/a"]
    assert ps.skipped == {"no keypoints": 1}
    np.testing.assert_array_equal(ps.pairs[0].src_kps, [[5, 5], [39, 0]])
    np.testing.assert_array_equal(ps.pairs[1].trg_kps, [[5, 5], [39, 0]])
    assert (
        ps.clamped_keypoints == 2 and "2 keypoints lie outside their image [0, W-1] x [0, H-1]: clamped" in ps.notes[0]
    )
    assert "skipped 1 (no keypoints)" in ps.summary()
    assert len(load_pairs("spair", root=root, split="test", limit=1).pairs) == 1
    assert load_pairs("spair", root=root, split="test", limit=0).pairs == []


def test_a_pair_without_a_threshold_length_is_skipped_and_limit_still_counts_usable_pairs(tmp_path):
    flat = FakeImage("flat", "cat", (40, 30), {0: (5.0, 5.0), 1: (9.0, 7.0)}, bbox=(6.0, 6.0, 6.0, 6.0))
    images = [FakeImage(n, "cat", (40, 30), {0: (5.0 + i, 5.0), 1: (20.0, 9.0 + i)}) for i, n in enumerate("ab")]
    pairs = [FakePair(images[0], flat), FakePair(images[0], images[1]), FakePair(images[1], images[0])]
    root = make_spair(tmp_path, pairs)
    ps = load_pairs("spair", root=root, split="test", limit=2)
    assert [p.trg.key for p in ps.pairs] == ["spair/cat/b", "spair/cat/a"]  # the first pair's place is refilled
    assert ps.skipped == {BAD_THRESHOLD: 1}
    assert "first: pair 000001-a-flat:cat: the target box [6, 6, 6, 6] has no width or no height" in ps.notes[0]
    assert load_pairs("spair", root=root, split="test", pck_norm="kpbox").skipped == {}  # its keypoints span 4 px


def test_spair_missing_root_says_how_to_download(tmp_path):
    with pytest.raises(DatasetError, match=r"python download\.py --datasets spair") as err:
        load_pairs("spair", root=tmp_path / "nowhere")
    assert "PairAnnotation/{trn,val,test}" in str(err.value)


def test_spair_bad_input_names_the_file(tmp_path):
    root = make_spair(tmp_path)
    ann = sorted((root / "PairAnnotation" / "test").iterdir())
    data = json.loads(ann[0].read_text())
    del data["trg_kps"]
    ann[0].write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="missing field 'trg_kps'") as err:
        load_pairs("spair", root=root)
    assert str(ann[0]) in str(err.value)
    ann[0].write_text("{not json")
    with pytest.raises(DatasetError, match="malformed pair annotation"):
        load_pairs("spair", root=root)
    data["trg_kps"] = data["src_kps"][:-1]
    ann[0].write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="differ in length"):
        load_pairs("spair", root=root)
    ann[0].unlink()
    with pytest.raises(DatasetError, match=r"not found: tried .*json or .*_cat.json"):
        load_pairs("spair", root=root)
    (root / "JPEGImages" / "cat" / "cat_10000.jpg").unlink()  # an image of the val pairs
    with pytest.raises(DatasetError, match=r"image not found: .*cat_10000.jpg"):
        load_pairs("spair", root=root, split="val")
    with pytest.raises(DatasetError, match="no layout 'medium'"):
        load_pairs("spair", root=root, split="test", layout="medium")
    with pytest.raises(DatasetError, match="no split 'dev'"):
        load_pairs("spair", root=root, split="dev")


# ---- PF-Pascal ---------------------------------------------------------------------------------


@pytest.mark.parametrize("trn_csv", ["trn_pairs.csv", "train_pairs.csv"])
def test_pf_pascal_every_split(tmp_path, trn_csv):
    pairs = default_pairs("pf-pascal")
    for n, pair in enumerate(split_of(pairs, "trn")):
        pair.flags = {"flip": n % 2}
    root = make_pf_pascal(tmp_path, pairs, trn_csv=trn_csv)
    test = load_pairs("pf-pascal", root=root, split="test")
    assert_matches(test, split_of(pairs, "test"), positional_ids=True)
    assert test.pairs[0].flags == {} and test.pairs[0].src.key.startswith("pf-pascal/cat_")
    trn = load_pairs("pf-pascal", root=root, split="trn")
    assert_matches(trn, split_of(pairs, "trn"))  # ids: the .mat rows, NaN rows left out
    assert [p.flags["flip"] for p in trn.pairs] == [n % 2 for n in range(len(trn.pairs))]
    assert_matches(load_pairs("pf-pascal", root=root, split="val"), split_of(pairs, "val"))
    assert len({p.pair_id for p in trn.pairs}) == len(trn.pairs)


def test_pf_pascal_one_based_coordinates_become_zero_based(tmp_path):
    image = FakeImage("2011_000001", "cow", (20, 10), {0: (0.0, 0.0), 1: (19.0, 9.0), 2: (4.25, 3.5)})
    other = FakeImage("2011_000002", "cow", (20, 10), {0: (1.0, 1.0), 1: (2.0, 2.0), 2: (3.0, 3.0)})
    root = make_pf_pascal(tmp_path, [FakePair(image, other, "test")])
    csv_row = (root / "test_pairs.csv").read_text().splitlines()[1]
    assert csv_row.endswith("1.0;20.0;5.25,1.0;10.0;4.5,2.0;3.0;4.0,2.0;3.0;4.0")  # as MATLAB wrote them
    pair = load_pairs("pf-pascal", root=root).pairs[0]
    np.testing.assert_allclose(pair.src_kps, [[0, 0], [19, 9], [4.25, 3.5]])
    assert pair.category == "cow" and pair.pair_id == "0001-2011_000001-2011_000002"
    assert pair.src.size == (20, 10)
    assert load_pairs("pf-pascal", root=root).clamped_keypoints == 0


def test_pf_pascal_exif_orientation_turns_keypoints_with_the_image(tmp_path):
    turned = FakeImage("2009_000001", "dog", (30, 44), {0: (3.0, 4.0), 1: (25.0, 8.0), 2: (10.0, 40.0)}, orientation=6)
    plain = FakeImage("2009_000002", "dog", (40, 30), {0: (5.0, 5.0), 1: (30.0, 6.0), 2: (20.0, 25.0)})
    pairs = [FakePair(turned, plain, "test"), FakePair(plain, turned, "trn")]
    root = make_pf_pascal(tmp_path, pairs)
    for split in ("test", "trn"):
        ps = load_pairs("pf-pascal", root=root, split=split)
        assert_matches(ps, [pairs[split == "trn"]], positional_ids=split == "test")
    pair = load_pairs("pf-pascal", root=root).pairs[0]
    assert pair.src.size == (30, 44) and pair.src.orientation == 6
    rgb = np.asarray(load_image(pair.src)).astype(int)
    assert rgb.shape == (44, 30, 3)
    for (x, y), kp_id in zip(pair.src_kps, pair.kp_ids, strict=True):
        colour = KP_COLOURS[int(kp_id)]
        assert np.abs(rgb[int(y), int(x)] - colour).max() < 60, (kp_id, rgb[int(y), int(x)], colour)


def test_pf_pascal_images_without_dataset_folder(tmp_path):
    root = make_pf_pascal(tmp_path)
    shutil.move(root / "PF-dataset-PASCAL" / "JPEGImages", root / "JPEGImages")
    shutil.move(root / "PF-dataset-PASCAL" / "Annotations", root / "Annotations")
    assert len(load_pairs("pf-pascal", root=root, split="val").pairs) == 12


def test_pf_pascal_without_annotations_test_loads_trn_does_not(tmp_path):
    root = make_pf_pascal(tmp_path, annotations=False)
    ps = load_pairs("pf-pascal", root=root, split="test")
    assert len(ps.pairs) == 12 and ps.pairs[0].trg_bbox is None
    assert "bounding boxes are None" in ps.notes[-1]
    with pytest.raises(
        DatasetError, match=r"PF-Pascal trn pairs come from the .mat annotations, but there is no .*Annotations"
    ):
        load_pairs("pf-pascal", root=root, split="trn")


def test_pf_pascal_bad_input_names_the_file(tmp_path):
    root = make_pf_pascal(tmp_path)
    csv_path = root / "test_pairs.csv"
    text = csv_path.read_text()
    header, first, *rest = text.splitlines()
    cells = first.split(",")
    csv_path.write_text("\n".join([header, ",".join([*cells[:2], "21", *cells[3:]]), *rest]))
    with pytest.raises(DatasetError, match=r"test_pairs.csv, row 1: class '21' is not a 1-based VOC class"):
        load_pairs("pf-pascal", root=root)
    csv_path.write_text("\n".join([header, ",".join([*cells[:3], cells[3] + ";7", *cells[4:]]), *rest]))
    with pytest.raises(DatasetError, match="row 1: XA, YA, XB, YB must have the same number"):
        load_pairs("pf-pascal", root=root)
    csv_path.write_text(text)
    image = cells[0].split("/")[-1]
    (root / "PF-dataset-PASCAL" / "JPEGImages" / image).unlink()
    with pytest.raises(DatasetError, match=f"image '{cells[0]}' of .*row 1 not found; tried") as err:
        load_pairs("pf-pascal", root=root)
    assert str(root / "JPEGImages" / image) in str(err.value)
    mat = next((root / "PF-dataset-PASCAL" / "Annotations" / "dog").glob("*.mat"))
    scipy.io.savemat(str(mat), {"points": np.zeros((2, 2))})
    with pytest.raises(DatasetError, match=re.escape(f"{mat}: malformed annotation")):
        load_pairs("pf-pascal", root=root, split="trn")
    mat.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"annotation not found: {mat}")):
        load_pairs("pf-pascal", root=root, split="trn")
    with pytest.raises(DatasetError, match=r"python download\.py --datasets pf-pascal") as err:
        load_pairs("pf-pascal", root=tmp_path / "missing", split="trn")
    assert "no " + str(tmp_path / "missing" / "train_pairs.csv") in str(err.value)


def test_pf_pascal_pair_without_common_keypoints_is_skipped(tmp_path):
    a = FakeImage("2008_000001", "cat", (30, 20), {0: (1.0, 1.0), 1: (2.0, 2.0)})
    b = FakeImage("2008_000002", "cat", (30, 20), {2: (3.0, 3.0), 3: (4.0, 4.0)})
    c = FakeImage("2008_000003", "cat", (30, 20), {1: (5.0, 5.0), 3: (6.0, 6.0)})
    root = make_pf_pascal(tmp_path, [FakePair(a, b, "trn"), FakePair(a, c, "trn")])
    ps = load_pairs("pf-pascal", root=root, split="trn")
    assert ps.skipped == {"no keypoints": 1}
    assert [p.kp_ids for p in ps.pairs] == [["1"]] and ps.pairs[0].pair_id.startswith("0002-")


# ---- PF-Willow ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path_prefix", "image_dir"),
    [("PF-dataset", "PF-dataset"), ("PF-dataset", ""), ("", "PF-dataset"), ("", "")],
)
def test_pf_willow_test_pairs_and_path_variants(tmp_path, path_prefix, image_dir):
    pairs = default_pairs("pf-willow")
    root = make_pf_willow(tmp_path, pairs, path_prefix=path_prefix, image_dir=image_dir)
    ps = load_pairs("pf-willow", root=root)
    assert_matches(ps, pairs, boxes=False)
    assert {p.category for p in ps.pairs} == {"car(G)", "duck(S)"}
    assert all(p.num_keypoints == 10 and p.trg_bbox is None for p in ps.pairs)
    assert ps.pairs[-1].src.key.startswith("pf-willow/duck(S)/")


def test_pf_willow_bad_input(tmp_path):
    root = make_pf_willow(tmp_path)
    with pytest.raises(DatasetError, match="pf-willow has no split 'trn'"):
        load_pairs("pf-willow", root=root, split="trn")
    image = next((root / "PF-dataset" / "car(G)").glob("*.png"))
    image.write_bytes(b"\x89PNG broken")
    with pytest.raises(ImageError, match=re.escape(f"cannot read image {image}: not an image")):
        load_pairs("pf-willow", root=root)
    image.unlink()
    with pytest.raises(DatasetError, match="not found; tried") as err:
        load_pairs("pf-willow", root=root)
    assert str(root / "car(G)" / image.name) in str(err.value)
    (root / "test_pairs.csv").write_text("imageA,imageB,XA1,YA1\nPF-dataset/a/b.png,PF-dataset/a/c.png,1,2\n")
    with pytest.raises(DatasetError, match="malformed pair list"):
        load_pairs("pf-willow", root=root)
    (tmp_path / "empty").mkdir()  # e.g. the default root pf_willow/, which holds only the loader
    with pytest.raises(DatasetError, match=r"python download\.py --datasets pf-willow") as err:
        load_pairs("pf-willow", root=tmp_path / "empty")
    assert f"no {tmp_path / 'empty' / 'test_pairs.csv'}" in str(err.value)


# ---- custom pairs and load_pairs ----------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_custom_pairs_with_and_without_keypoints(tmp_path, fmt):
    pairs = fake_pairs(fake_images("mug", 2, size=(32, 24), num_kps=4, seed=3))
    ps = load_pairs("custom", root=make_custom(tmp_path / "kp", pairs, fmt))
    assert_matches(ps, pairs, boxes=False)
    np.testing.assert_allclose(ps.pairs[0].trg_bbox, pairs[0].trg.box())
    assert ps.pairs[0].src.key == f"custom/images/{pairs[0].src.name}.png"
    bare = load_pairs("custom", root=make_custom(tmp_path / "bare", pairs, fmt, keypoints=False))
    assert [p.num_keypoints for p in bare.pairs] == [0, 0] and bare.skipped == {}
    assert bare.pairs[0].src_kps.shape == (0, 2) and bare.pairs[0].category == "mug"


def test_custom_csv_from_a_spreadsheet_with_byte_order_mark(tmp_path):
    pairs = fake_pairs(fake_images("mug", 2, num_kps=3))
    path = make_custom(tmp_path, pairs, "csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Excel's "CSV UTF-8"
    assert_matches(load_pairs("custom", root=path), pairs, boxes=False)
    path.write_text(path.read_text(encoding="utf-8-sig"), encoding="utf-16")  # "Unicode text", with its mark
    assert_matches(load_pairs("custom", root=path), pairs, boxes=False)
    path.write_bytes(b"source,target\n\xff\xfe.png,b.png\n")  # neither
    with pytest.raises(DatasetError, match=f"cannot read {re.escape(str(path))}: not UTF-8 or UTF-16 text"):
        load_pairs("custom", root=path)


def test_custom_pairs_bad_input(tmp_path):
    path = make_custom(tmp_path, fake_pairs(fake_images("mug", 2)))
    data = json.loads(path.read_text())
    data["pairs"][0]["source_kp"] = data["pairs"][0].pop("source_kps")
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"pair 1: unknown field.*source_kp;"):
        load_pairs("custom", root=path)
    data["pairs"][0]["source_kps"] = data["pairs"][0].pop("source_kp")[:-1]
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match="pair 1: source_kps has 4 points but target_kps has 5"):
        load_pairs("custom", root=path)
    data["pairs"][1]["target"] = "images/none.png"
    path.write_text(json.dumps(data["pairs"][1:]))
    with pytest.raises(DatasetError, match=r"pair 1: image not found: .*none.png"):
        load_pairs("custom", root=path)
    data["pairs"][1]["target_bbox"] = [1, 2, 3]
    data["pairs"][1]["target"] = data["pairs"][1]["source"]
    path.write_text(json.dumps(data["pairs"][1:]))
    with pytest.raises(DatasetError, match=r"pair 1: target_bbox must be \[x1, y1, x2, y2\], got \[1, 2, 3\]"):
        load_pairs("custom", root=path)
    with pytest.raises(DatasetError, match="no default location"):
        load_pairs("custom")
    with pytest.raises(DatasetError, match="custom pairs file not found"):
        load_pairs("custom", root=tmp_path / "absent.json")
    with pytest.raises(DatasetError, match="unknown dataset 'caltech'"):
        load_pairs("caltech")


def test_a_resized_spair_image_is_an_error_when_decoded_or_rescaled_on_request(tmp_path):
    images = [FakeImage("a", "cat", (40, 30), {0: (9.0, 5.0)}), FakeImage("b", "cat", (40, 30), {0: (19.5, 28.0)})]
    root = make_spair(tmp_path, [FakePair(images[0], images[1])])
    path = root / "JPEGImages" / "cat" / "b.jpg"
    Image.open(path).resize((20, 15)).save(path)  # a copy of the dataset at half size
    (pair,) = load_pairs("spair", root=root).pairs
    with pytest.raises(
        ImageError, match=r"b\.jpg is 20x15 pixels, but its annotation says 40x30.*--rescale-annotations"
    ):
        load_image(pair.trg)
    rescaled = load_pairs("spair", root=root, rescale_annotations=True)
    (pair,) = rescaled.pairs
    assert pair.trg.size == (20, 15) and pair.src.size == (40, 30)
    # pixel centres: x (19.5 + 0.5) / 2 - 0.5, y (28 + 0.5) / 2 - 0.5
    np.testing.assert_allclose(pair.trg_kps, [[9.5, 13.75]])
    np.testing.assert_allclose(pair.src_kps, [[9.0, 5.0]])
    x1, y1, x2, y2 = images[1].box()
    np.testing.assert_allclose(
        pair.trg_bbox, [(x1 + 0.5) / 2 - 0.5, (y1 + 0.5) / 2 - 0.5, (x2 + 0.5) / 2 - 0.5, (y2 + 0.5) / 2 - 0.5]
    )
    assert load_image(pair.trg).size == (20, 15)
    assert (
        "annotations of 1 images rescaled to their files (--rescale-annotations), e.g. spair/cat/b: 40x30 -> 20x15"
        in rescaled.notes
    )


def test_an_empty_pair_list_names_the_file(tmp_path):
    root = make_spair(tmp_path, fake_pairs(fake_images("cat", 2)))
    (root / "Layout" / "large" / "test.txt").write_text("")
    with pytest.raises(
        DatasetError, match=r"no pairs in .* \(spair layout large, split test\): its pair list is empty"
    ):
        load_pairs("spair", root=root)


def test_rescaled_keypoints_stay_inside_their_image(tmp_path):
    """A keypoint on the last pixel row maps past the last row of a half-size file: clamped, and counted."""
    images = [
        FakeImage("a", "cat", (40, 30), {0: (9.0, 5.0), 1: (3.0, 1.0)}),  # 1 visible in the source only
        FakeImage("b", "cat", (40, 30), {0: (19.5, 29.0)}),
    ]
    root = make_spair(tmp_path, [FakePair(images[0], images[1])])
    for name in ("a", "b"):
        path = root / "JPEGImages" / "cat" / f"{name}.jpg"
        Image.open(path).resize((20, 15)).save(path)
    rescaled = load_pairs("spair", root=root, rescale_annotations=True)
    np.testing.assert_allclose(rescaled.pairs[0].trg_kps, [[9.5, 14.0]])  # (29 + 0.5) / 2 - 0.5 = 14.25 -> 14
    np.testing.assert_allclose(rescaled.pairs[0].src_only_kps, [[1.25, 0.25]])  # scaled with the source's others
    assert rescaled.clamped_keypoints == 1 and "1 rescaled keypoints lie outside their image: clamped" in rescaled.notes


def test_spair_image_annotations_give_azimuth_partners_and_the_geometry_aware_keypoints(tmp_path):
    """GeoAware-SC's rule (utils/eval_spair.py): a keypoint of a group of which >= 2 members are visible in the
    target and >= 1 in both; for cat, groups [2, 3] and [9, 10, 11, 12]; 13 is on its own (never)."""
    src = FakeImage("src", "cat", (60, 40), {2: (5.0, 5.0), 5: (8.0, 3.0), 9: (9.0, 9.0), 13: (20.0, 20.0)}, azimuth=1)
    trg = FakeImage("trg", "cat", (60, 40), {2: (6.0, 6.0), 3: (7.0, 7.0), 9: (9.0, 8.0), 10: (3.0, 3.0),
                                             13: (9.0, 20.0)}, azimuth=7)  # fmt: skip
    root = make_spair(tmp_path / "SPair-71k", [FakePair(src, trg, "test")])
    (pair,) = load_pairs("spair", root=root, split="test").pairs
    assert pair.kp_ids == ["2", "9", "13"]
    assert pair.kp_flags["geo_aware"] == [True, True, False]
    assert pair.kp_mirror == ["3", "10", "13"]  # SPAIR_FLIP_TRN's partners; 13 lies on the mirror axis
    assert pair.flags["azimuth_difference"] == 2  # bins 1 and 7 of 8: two apart the short way round
    assert pair.src_only_ids == ["5"] and pair.src_only_kps.tolist() == [[8.0, 3.0]]  # for KAP
    shutil.rmtree(root / "ImageAnnotation")
    pairset = load_pairs("spair", root=root, split="test")
    assert pairset.pairs[0].kp_mirror is None and "azimuth_difference" not in pairset.pairs[0].flags
    assert pairset.pairs[0].src_only_ids == [] and any("source-only keypoints" in n for n in pairset.notes)
    assert any("ImageAnnotation: no azimuth difference" in note for note in pairset.notes)
