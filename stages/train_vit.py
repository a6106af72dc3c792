"""train_vit: the from-scratch ViT (Keras example + SPT/LSA) -> models/vit_scratch."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli
from vitbench.models import vit


@stage_cli("train_vit", sections=vit.FAMILY.params)
def main(params: Params, paths: Paths) -> None:
    """the from-scratch ViT (Keras example + SPT/LSA) -> models/vit_scratch."""
    from vitbench.train.phases import train_family

    train_family(vit.FAMILY, params.vit, params.train, params.seed, paths,
                 params.augment_online)


if __name__ == "__main__":
    main()
