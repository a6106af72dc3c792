"""train_cnn: the cnn.arch baseline, transfer then fine-tune -> models/cnn_transfer, models/cnn_finetuned."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli
from vitbench.models import cnn


@stage_cli("train_cnn", sections=cnn.FAMILY.params)
def main(params: Params, paths: Paths) -> None:
    """the cnn.arch baseline, transfer then fine-tune -> models/cnn_transfer, models/cnn_finetuned."""
    from vitbench.train.phases import train_family

    train_family(cnn.FAMILY, params.cnn, params.train, params.seed, paths,
                 params.augment_online)


if __name__ == "__main__":
    main()
