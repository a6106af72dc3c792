"""train_vit: the from-scratch ViT (Keras example + SPT/LSA) -> models/vit_scratch."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("train_vit")
def main(params: Params, paths: Paths) -> None:
    """the from-scratch ViT (Keras example + SPT/LSA) -> models/vit_scratch."""
    from vitbench.train import phases as training
    from vitbench.models import vit  # noqa: F401 - the ViT builder this stage runs

    training.train_vit(params.vit, params.train, params.seed, paths, params.augment_online)


if __name__ == "__main__":
    main()
