"""split: stratified, seeded, leakage-checked train/val/test manifests in data/split."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("split")
def main(params: Params, paths: Paths) -> None:
    """Split data/clean/manifest.csv into data/split."""
    from vitbench.data.splitting import split_dataset

    split_dataset(params.split, params.seed, paths)


if __name__ == "__main__":
    main()
