"""train_cnn: the cnn.arch baseline, transfer then fine-tune -> models/cnn_transfer, models/cnn_finetuned."""

from vitbench.config import Params
from vitbench.paths import Paths
from vitbench.stage import stage_cli


@stage_cli("train_cnn")
def main(params: Params, paths: Paths) -> None:
    """the cnn.arch baseline, transfer then fine-tune -> models/cnn_transfer, models/cnn_finetuned."""
    from vitbench import training
    from vitbench.models import cnn  # noqa: F401 - the CNN builder this stage runs

    training.train_cnn(params.cnn, params.train, params.seed, paths, params.augment_online)


if __name__ == "__main__":
    main()
