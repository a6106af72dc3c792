"""finetune_vit: vit-keras ViT-B/16 or B/32, transfer then fine-tune -> models/vit_transfer, models/vit_finetuned."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("finetune_vit")
def main(params: Params, paths: Paths) -> None:
    """vit-keras ViT-B/16 or B/32, transfer then fine-tune -> models/vit_transfer, models/vit_finetuned."""
    from vitbench.train import phases as training
    from vitbench.models import pretrained_vit  # noqa: F401 - the pretrained-ViT builder this stage runs

    training.finetune_vit(params.vit_ft, params.train, params.seed, paths, params.augment_online)


if __name__ == "__main__":
    main()
