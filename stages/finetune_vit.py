"""finetune_vit: a pretrained ViT (vit_ft.variant), transfer then fine-tune -> models/vit_transfer, models/vit_finetuned."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli
from vitbench.models import vit_ft


@stage_cli("finetune_vit", sections=vit_ft.FAMILY.params)
def main(params: Params, paths: Paths) -> None:
    """a pretrained ViT (vit_ft.variant), transfer then fine-tune -> models/vit_transfer, models/vit_finetuned."""
    from vitbench.train.phases import train_family

    train_family(vit_ft.FAMILY, params.vit_ft, params.train, params.seed, paths,
                 params.augment_online)


if __name__ == "__main__":
    main()
