"""evaluate: one model on the test split -> metrics/<id>.json and plots/<id>/eval/."""

import click

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("evaluate", click.option("--model", "model_id", required=True,
                                    help="The model id (dvc.yaml's evaluate keys)."))
def main(params: Params, paths: Paths, model_id: str) -> None:
    """Evaluate models/<id> on the test split."""
    from vitbench.evaluate.evaluation import evaluate
    from vitbench.evaluate.card import write_card

    evaluate(model_id, params.evaluate, params.seed, paths)
    write_card(model_id, params.dataset.source, paths)   # models/<id>/README.md, from the metrics


if __name__ == "__main__":
    main()
