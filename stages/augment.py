"""augment: materialise the training set with augmented copies in data/augmented."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("augment")
def main(params: Params, paths: Paths) -> None:
    """Write data/augmented and plots/augment_preview.png (copies and online augmentation)."""
    from vitbench.data.augmentation import augment_dataset

    augment_dataset(params.augment, params.seed, paths, params.augment_online)


if __name__ == "__main__":
    main()
