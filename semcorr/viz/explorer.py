"""The interactive match explorer behind notebooks/explore_matches.ipynb: click a source pixel, see its
similarity over the target with the prediction of every matcher (and, for a dataset pair,
the ground truth of the nearest annotated keypoint).

Features come from the evaluations' feature cache (members.build_member), and a click is matched by
the engine itself (matching.predict_variants) with every matcher of matching_strategies.MATCHERS, so it
answers what `match_pair.py --points x,y --matcher NAME` answers, in milliseconds once the pair's features
are in memory.

    settings = resolve("evaluation", {"model": "dinov2", "dataset": "spair"})
    explorer = Explorer(settings, load_backbones(settings)[0])
    explorer.open_images("a.jpg", "b.jpg")   # or explorer.open_pair(pair) for a dataset pair
    click = explorer.click(120, 80)          # click.predictions["argmax"], click.heatmap, ...
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

import matching_strategies
from models import Backbone
from pck import mark_correct
from semcorr.config.settings import EvalSettings, MatchSettings, from_record
from semcorr.data.datasets import load_pairs
from semcorr.data.images import load_image
from semcorr.data.pairs import PairRecord
from semcorr.engine.matching import predict_variants, source_descriptors, target_similarity
from semcorr.engine.members import Member, build_member
from semcorr.engine.pair import check_inside, image_pair
from semcorr.runs.folders import Run
from semcorr.runs.record import data_of
from semcorr.viz import viz2d
from semcorr.viz.figures import draw_feature_pca, heatmap_in_pixels, pair_ranking


@dataclass
class Click:
    """What a click on a source pixel answers: predictions in target pixels and the similarity heatmap."""

    source: np.ndarray  # (2,) the clicked source pixel (x, y)
    predictions: dict[str, np.ndarray]  # each matcher's (2,) target pixel (window K, temperature T)
    window: int
    temperature: float
    similarity: float  # cosine similarity of the most similar target patch
    heatmap: np.ndarray  # (rows, cols) similarity at target pixels (every `stride`-th one on a large image)
    extent: tuple[float, float, float, float]  # where the heatmap lies on the target (left, right, bottom, top)
    keypoint: int | None  # the annotated source keypoint nearest the click (dataset pairs)
    keypoint_id: str | None
    keypoint_distance: float | None  # from the click, in source pixels
    truth: np.ndarray | None  # (2,) that keypoint's ground truth on the target
    seconds: float  # matching and heatmap

    def record(self) -> dict[str, object]:
        """The click as JSON-ready values."""
        point = {"keypoint": self.keypoint_id, "keypoint_distance": self.keypoint_distance}
        point["truth"] = None if self.truth is None else self.truth.tolist()
        return {
            "source": self.source.tolist(),
            "predictions": {name: xy.tolist() for name, xy in self.predictions.items()},
            "window": self.window,
            "temperature": self.temperature,
            "similarity": self.similarity,
            **point,
            "milliseconds": 1000 * self.seconds,
        }

    def describe(self) -> str:
        """One line: the click, both predictions, the similarity and, for a dataset pair, the truth."""
        fmt = "({:.1f}, {:.1f})".format
        shown = ", ".join(f"{name} {fmt(*xy)}" for name, xy in self.predictions.items())
        text = f"source {fmt(*self.source)} -> {shown} (K{self.window} T{self.temperature:g}); similarity {self.similarity:.3f}"
        if self.truth is not None:
            errors = ", ".join(f"{name} {np.linalg.norm(xy - self.truth):.1f}" for name, xy in self.predictions.items())
            text += (
                f"; keypoint {self.keypoint_id} ({self.keypoint_distance:.1f} px from the click): ground truth "
                f"{fmt(*self.truth)}; px off: {errors}"
            )
        return text + f" [{1000 * self.seconds:.1f} ms]"


class Explorer:
    """One backbone's features of one image pair, and the matches of clicked source pixels by every matcher.

    `window` and `temperature` (K and T of the windowed matchers) may change between clicks; the descriptor
    sampling and the window border are the settings'."""

    def __init__(self, settings: EvalSettings, backbone: Backbone):
        self.settings = settings
        self.extract = replace(settings.extract, num_workers=0)  # two images: no loader workers
        self.backbone = backbone
        self.window, self.temperature = settings.match.window, settings.match.temperature
        self.pair: PairRecord | None = None
        self.member: Member | None = None

    def open_images(self, src: str | Path, trg: str | Path) -> PairRecord:
        return self.open_pair(image_pair(src, trg))

    def open_pair(self, pair: PairRecord) -> PairRecord:
        """Extract (or read from the cache) the features of the pair's two images."""
        self.member, _ = build_member(
            self.settings.members[0], self.extract, self.backbone, [pair.src, pair.trg], progress=False
        )
        self.pair = pair
        return pair

    @property
    def stats(self) -> dict[str, float]:
        """The last extraction's figures: images, images_extracted, images_from_cache, extraction_s."""
        self.opened()
        return self.member.features.stats

    def matchers(self) -> dict[str, MatchSettings]:
        """Every matcher of matching_strategies.MATCHERS, with the current window and temperature."""
        base = replace(self.settings.match, window=self.window, temperature=self.temperature)
        return {name: replace(base, matcher=name) for name in matching_strategies.MATCHERS}

    def click(self, x: float, y: float) -> Click:
        """Match source pixel (x, y) (pixel centres at integers) in the target, as match_pair.py would."""
        pair, member = self.opened(), self.member
        point = np.array([[x, y]], np.float32)
        check_inside(point, pair.src.size, "the point")
        t0 = time.perf_counter()
        query = replace(pair, src_kps=point, trg_kps=np.full_like(point, np.nan), kp_ids=["click"])
        matchers = self.matchers()
        predictions = predict_variants([query], [member], list(matchers.values()), progress=False, with_similarity=True)
        fs = member.features
        desc = source_descriptors(fs, [query], self.settings.match.descriptor)
        ks = torch.zeros(1, dtype=torch.long, device=fs.feats.device)
        sim = target_similarity([member], [desc], ks, pair.trg.key)[0].float().cpu().numpy()
        heat, extent = heatmap_in_pixels(sim, fs.geometries[pair.trg.key], fs.prep.patch_size)
        nearest = nearest_keypoint(pair.src_kps, point[0])
        return Click(
            source=point[0].astype(np.float64),
            predictions={name: p.pixels[0] for name, p in zip(matchers, predictions, strict=True)},
            window=self.window,
            temperature=self.temperature,
            similarity=float(predictions[0].similarity[0]),
            heatmap=heat,
            extent=extent,
            keypoint=nearest,
            keypoint_id=None if nearest is None else pair.kp_ids[nearest],
            keypoint_distance=None if nearest is None else float(np.linalg.norm(pair.src_kps[nearest] - point[0])),
            truth=None if nearest is None else pair.trg_kps[nearest].astype(np.float64),
            seconds=time.perf_counter() - t0,
        )

    def features_figure(self) -> Figure:
        """The open pair's features: their first three principal components, computed jointly, as RGB."""
        pair = self.opened()
        return draw_feature_pca(self.member.features, [pair.src, pair.trg])

    def opened(self) -> PairRecord:
        """The open pair (ValueError when none is)."""
        if self.pair is None or self.member is None:
            raise ValueError("no image pair open: call open_images(src, trg) or open_pair(pair) first")
        return self.pair


def nearest_keypoint(kps: np.ndarray, xy: np.ndarray) -> int | None:
    """Index of the keypoint nearest xy among those with finite coordinates, None if there is none."""
    distance = np.linalg.norm(np.asarray(kps, np.float64) - xy, axis=1)
    distance[~np.isfinite(distance)] = np.inf
    return int(np.argmin(distance)) if np.isfinite(distance).any() else None


# --- pairs to explore ------------------------------------------------------------------------------


def settings_of_run(run: Run, device: str = "auto") -> EvalSettings:
    """The settings of a single-model evaluation folder (model, weights, image size, protocol, matcher, dataset,
    feature cache), on `device` here, so that the explorer reads the very features the run used."""
    from semcorr.cli.resolve import concrete_device

    settings = from_record(EvalSettings, run.config["settings"])
    if len(settings.members) > 1:
        raise ValueError(
            f"{run.path} is an ensemble evaluation: explore one member instead (its model and weights, with "
            f"DATASET={settings.data.dataset} and SPLIT={settings.data.split})"
        )
    backbone = replace(settings.member.backbone, device=concrete_device(device))
    return replace(settings, members=(replace(settings.member, backbone=backbone),), data=data_of(run))


def dataset_pairs(settings: EvalSettings) -> dict[str, PairRecord]:
    """The pairs of the settings' dataset split (its first `limit`), by pair id."""
    return {p.pair_id: p for p in load_pairs(settings.data).pairs}


def pair_choices(pairs: dict[str, PairRecord], table: pd.DataFrame | None = None, alpha: float = 0.1) -> dict:
    """Labels -> pair ids for a pair list: in file order, or with a run's per-keypoint table the pairs it
    evaluated, worst PCK@alpha first."""
    if table is None:
        return {f"{p.pair_id} ({p.category}, {p.num_keypoints} keypoints)": p.pair_id for p in pairs.values()}
    ranking = pair_ranking(mark_correct(table, [alpha]), alpha).iloc[::-1]
    return {
        f"{row.pair_id} ({row.category}, PCK@{alpha:g} {row.pck:.0f}%)": row.pair_id
        for row in ranking.itertuples()
        if row.pair_id in pairs
    }


# --- drawing ---------------------------------------------------------------------------------------

TRUTH_LABEL = "nearest keypoint, its ground truth"
CLICKED = {"marker": "o", "color": viz2d.CORRECT, "markeredgecolor": "black", "markersize": 8, "zorder": 5}
MATCHER_MARKERS = [  # one style per matcher, in the order of matching_strategies.MATCHERS
    {"marker": "s", "color": "none", "markeredgecolor": "magenta", "markeredgewidth": 2, "markersize": 10},
    {"marker": "*", "color": viz2d.CORRECT, "markeredgecolor": "black", "markersize": 14},
    {"marker": "D", "color": "orange", "markeredgecolor": "black", "markersize": 8},
    {"marker": "P", "color": "deepskyblue", "markeredgecolor": "black", "markersize": 10},
]
TRUTH_MARKER = {"marker": "X", "color": viz2d.TRUTH, "markeredgecolor": "black", "markersize": 10}


class ExplorerView:
    """The explorer on a matplotlib figure: the source (click on it) beside the target with the
    similarity heatmap, the predictions and the ground truth. The figure's canvas calls `on_click`."""

    def __init__(self, explorer: Explorer, fig: Figure):
        self.explorer, self.fig = explorer, fig
        self.reset()

    def reset(self) -> None:
        """Draw the explorer's pair afresh, with no click yet."""
        pair = self.explorer.opened()
        fig = self.fig
        fig.clear()
        fig.set_layout_engine("constrained")
        src, trg = load_image(pair.src), load_image(pair.trg)
        ratios = [src.width / src.height, 1.1 * trg.width / trg.height]  # room for the colour bar
        self.src_ax, self.trg_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": ratios})
        for ax, image, title in ((self.src_ax, src, "source: click a point"), (self.trg_ax, trg, "target")):
            ax.imshow(image)
            ax.set_axis_off()
            ax.set_title(title, fontsize=9)
            ax.set_autoscale_on(False)  # the image's limits stay whatever is drawn over it
        if pair.num_keypoints:
            viz2d.plot_keypoints(self.src_ax, pair.src_kps, "white", size=12)
        self.heat = self.trg_ax.imshow(np.full((1, 1), np.nan), cmap="jet", alpha=0.5)
        self.colorbar = fig.colorbar(self.heat, ax=self.trg_ax, shrink=0.8, label="cosine similarity")
        self.clicked = self.src_ax.plot([], [], ls="none", label="clicked point", **CLICKED)[0]
        self.nearest = self.src_ax.plot([], [], ls="none", **TRUTH_MARKER)[0]
        styles = {name: MATCHER_MARKERS[i % len(MATCHER_MARKERS)] for i, name in enumerate(self.explorer.matchers())}
        self.marks = {
            name: self.trg_ax.plot([], [], ls="none", label=name, **style)[0]
            for name, style in {**styles, TRUTH_LABEL: TRUTH_MARKER}.items()
        }
        handles = [self.clicked, *self.marks.values()]
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
        self.last: Click | None = None
        fig.canvas.draw_idle()

    def point(self, x: float, y: float) -> Click:
        """Match source pixel (x, y) and draw the answer."""
        click = self.explorer.click(x, y)
        self.heat.set_data(click.heatmap)
        self.heat.set_extent(click.extent)
        self.heat.set_clim(float(click.heatmap.min()), float(click.heatmap.max()))
        self.clicked.set_data([click.source[0]], [click.source[1]])
        for name, xy in click.predictions.items():
            self.marks[name].set_data([xy[0]], [xy[1]])
        truth = click.truth if click.truth is not None else np.full(2, np.nan)
        self.marks[TRUTH_LABEL].set_data([truth[0]], [truth[1]])
        kp = self.explorer.pair.src_kps[click.keypoint] if click.keypoint is not None else np.full(2, np.nan)
        self.nearest.set_data([kp[0]], [kp[1]])
        self.trg_ax.set_title(f"target: similarity (peak {click.similarity:.3f})", fontsize=9)
        self.last = click
        self.fig.canvas.draw_idle()
        return click

    def on_click(self, event) -> Click | None:
        """A mouse press on the figure: a press on the source image is matched, any other is ignored
        (as are presses while the toolbar zooms or pans)."""
        toolbar = getattr(self.fig.canvas, "toolbar", None)
        if event.inaxes is not self.src_ax or event.xdata is None or (toolbar is not None and toolbar.mode):
            return None
        return self.point(event.xdata, event.ydata)

    def redo(self) -> Click | None:
        """Match the last clicked point again (after the window or temperature changed)."""
        return None if self.last is None else self.point(*self.last.source)
