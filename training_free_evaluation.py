"""Zero-shot evaluation of a pretrained backbone on a correspondence benchmark.

python training_free_evaluation.py --model dinov2 --dataset spair
python training_free_evaluation.py --model dinov3 --dataset pf-pascal --matcher wsoftargmax --window 5 --temperature 0.1
"""

from pathlib import Path

from semcorr.cli.errors import run_main
from semcorr.cli.flags import evaluation_parser, given
from semcorr.cli.resolve import resolve


def main(argv: list[str] | None = None) -> Path:
    flags = given(evaluation_parser(__doc__.splitlines()[0]).parse_args(argv))
    from semcorr.engine.evaluation import run_evaluation  # torch loads after the arguments are parsed

    return run_evaluation(resolve("evaluation", flags))


if __name__ == "__main__":
    run_main(main)
