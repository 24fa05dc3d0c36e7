"""The original project's published numbers, and when a run may stand beside one (same protocol)."""

from __future__ import annotations

from dataclasses import dataclass

from results import Run

PUBLISHED_ALPHAS = (0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Published:
    """One published result of the original project, PCK (%) at alphas 0.05 / 0.1 / 0.2."""

    dataset: str
    pck_norm: str
    model: str  # canonical backbone name, or "ensemble"
    setting: str  # zero-shot | fine-tuned | ensemble
    matcher: str
    per_image: tuple[float, float, float]
    per_keypoint: tuple[float, float, float] | None
    note: str


_PF = "averaging not stated; matcher not stated for zero-shot rows (argmax as in its SPair rows)"
PUBLISHED = [
    Published(
        "spair",
        "bbox",
        "dinov2_vitb14",
        "zero-shot",
        "argmax",
        (35.61, 51.90, 67.64),
        (38.12, 54.61, 70.41),
        "DINOv2-B/14 @518",
    ),
    Published(
        "spair",
        "bbox",
        "dinov3_vitb16",
        "zero-shot",
        "argmax",
        (32.39, 48.30, 62.85),
        (36.77, 53.67, 68.45),
        "DINOv3-B/16 @512",
    ),
    Published("spair", "bbox", "sam_vit_b", "zero-shot", "argmax", (11.72, 20.44, 33.41), None, "SAM-B @512"),
    Published(
        "spair",
        "bbox",
        "dinov2_vitb14",
        "fine-tuned",
        "wsoftargmax",
        (46.59, 58.89, 69.58),
        None,
        "last 2 blocks, logit scale 10; K9 T0.1",
    ),
    Published(
        "spair",
        "bbox",
        "dinov3_vitb16",
        "fine-tuned",
        "wsoftargmax",
        (56.41, 69.27, 78.74),
        (60.54, 73.67, 82.60),
        "last 3 blocks, logit scale 15, lr 1e-4; K5 T0.2",
    ),
    Published(
        "spair", "bbox", "sam_vit_b", "fine-tuned", "wsoftargmax", (25.92, 37.38, 50.04), None, "last 4 blocks; K7 T0.1"
    ),
    Published(
        "spair",
        "bbox",
        "ensemble",
        "ensemble",
        "wsoftargmax",
        (57.75, 70.08, 79.32),
        (62.21, 74.69, 83.27),
        "0.25 DINOv2 + 0.65 DINOv3 + 0.10 SAM, fine-tuned; K5 T0.2",
    ),
    Published("pf-pascal", "image", "dinov2_vitb14", "zero-shot", "argmax", (63.79, 82.52, 93.54), None, _PF),
    Published("pf-pascal", "image", "dinov3_vitb16", "zero-shot", "argmax", (65.80, 86.92, 95.65), None, _PF),
    Published("pf-pascal", "image", "sam_vit_b", "zero-shot", "argmax", (31.96, 48.98, 66.65), None, _PF),
    Published(
        "pf-pascal",
        "image",
        "dinov3_vitb16",
        "fine-tuned",
        "wsoftargmax",
        (62.13, 78.60, 88.24),
        None,
        "fine-tuned on SPair-71k; " + _PF,
    ),
    Published("pf-pascal", "image", "ensemble", "ensemble", "wsoftargmax", (63.32, 79.25, 88.47), None, _PF),
    Published("pf-willow", "image", "dinov2_vitb14", "zero-shot", "argmax", (54.13, 80.78, 93.78), None, _PF),
    Published("pf-willow", "image", "dinov3_vitb16", "zero-shot", "argmax", (60.86, 85.97, 96.61), None, _PF),
    Published("pf-willow", "image", "sam_vit_b", "zero-shot", "argmax", (33.66, 50.46, 68.67), None, _PF),
    Published(
        "pf-willow",
        "image",
        "dinov3_vitb16",
        "fine-tuned",
        "wsoftargmax",
        (61.94, 83.26, 94.04),
        None,
        "fine-tuned on SPair-71k; " + _PF,
    ),
    Published("pf-willow", "image", "ensemble", "ensemble", "wsoftargmax", (63.22, 83.81, 94.50), None, _PF),
]


def published_for(run: Run, info: dict[str, object]) -> Published | None:
    """The original project's number for the same backbone, setting, matcher and protocol (test split);
    `info` is what the run evaluated (analysis.run_settings)."""
    model = "ensemble" if info["setting"] == "ensemble" else run.config["resolved"]["model"]
    for entry in PUBLISHED:
        if (entry.dataset, entry.pck_norm, entry.model, entry.setting, entry.matcher, "test") == (
            info["dataset"],
            info["pck_norm"],
            model,
            info["setting"],
            run.config["args"]["match"]["matcher"],
            info["split"],
        ):
            return entry
    return None
