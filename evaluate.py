"""Evaluate any checkpoint: a fine-tuned checkpoint of this project, or a weights file for --model.

python evaluate.py --checkpoint results/finetune/20260101-120000_dinov3/best.pt --dataset spair
python evaluate.py --checkpoint my_dinov2.safetensors --model dinov2 --dataset pf-willow
"""

from cli import eval_config, evaluation_parser, run_main
from evaluation import run_evaluation


def main(argv: list[str] | None = None) -> None:
    parser = evaluation_parser(__doc__.splitlines()[0], checkpoint=True)
    run_evaluation(eval_config(parser.parse_args(argv)))


if __name__ == "__main__":
    run_main(main)
