"""train_cnn: the cnn.arch baseline, transfer then fine-tune -> models/cnn_transfer, models/cnn_finetuned."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("train_cnn")
def main(params: Params, paths: Paths) -> None:
    """the cnn.arch baseline, transfer then fine-tune -> models/cnn_transfer, models/cnn_finetuned."""
    from vitbench.train import phases as training
    from vitbench.models import cnn  # noqa: F401 - the CNN builder this stage runs

    training.train_cnn(params.cnn, params.train, params.seed, paths, params.augment_online)


if __name__ == "__main__":
    main()
