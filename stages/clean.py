"""clean: decode, convert to RGB, reject with reasons, deduplicate and resize data/raw into data/clean."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("clean")
def main(params: Params, paths: Paths) -> None:
    """Clean data/raw into data/clean and metrics/clean.json."""
    from vitbench.data.cleaning import clean_dataset

    clean_dataset(params.clean, paths)


if __name__ == "__main__":
    main()
