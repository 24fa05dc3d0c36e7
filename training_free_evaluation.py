"""Zero-shot evaluation of a pretrained backbone on a correspondence benchmark.

python training_free_evaluation.py --model dinov2 --dataset spair
python training_free_evaluation.py --model dinov3 --dataset pf-pascal --matcher wsoftargmax --window 5 --temperature 0.1
"""

from cli import eval_config, evaluation_parser, run_main


def main(argv: list[str] | None = None) -> None:
    cfg = eval_config(evaluation_parser(__doc__.splitlines()[0]).parse_args(argv))
    from evaluation import run_evaluation  # torch loads after the arguments are parsed

    run_evaluation(cfg)


if __name__ == "__main__":
    run_main(main)
