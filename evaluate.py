"""Evaluate a fine-tuned checkpoint (--checkpoint), or a weights file of --model (--weights).

python evaluate.py --checkpoint results/finetune/20260101-120000_finetune_dinov3_vitb16_512x512_spair-trn/best.pt --dataset spair
python evaluate.py --model dinov2 --weights my_dinov2.safetensors --dataset pf-willow
"""

from pathlib import Path

from semcorr.cli.errors import run_main
from semcorr.cli.flags import evaluation_parser, given
from semcorr.cli.resolve import resolve


def main(argv: list[str] | None = None) -> Path:
    flags = given(evaluation_parser(__doc__.splitlines()[0], checkpoint="either").parse_args(argv))
    from semcorr.engine.evaluation import run_evaluation  # torch loads after the arguments are parsed

    return run_evaluation(resolve("evaluation", flags))


if __name__ == "__main__":
    run_main(main)
