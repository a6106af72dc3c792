"""clean: decode, convert to RGB, reject with reasons, deduplicate and resize data/raw into data/clean."""

from vitbench.config import Params
from vitbench.paths import Paths
from vitbench.stage import stage_cli


@stage_cli("clean")
def main(params: Params, paths: Paths) -> None:
    """Clean data/raw into data/clean and metrics/clean.json."""
    from vitbench.data.cleaning import clean_dataset

    clean_dataset(params.clean, paths)


if __name__ == "__main__":
    main()
