"""fetch: get the dataset named by `dataset.source` into data/raw/<class>/ (atomically)."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("fetch")
def main(params: Params, paths: Paths) -> None:
    """Fetch dataset.source into data/raw (nothing is rewritten while the source is unchanged)."""
    from vitbench.data.freshness import fetch_if_changed

    fetch_if_changed(params.dataset, params.seed, paths)


if __name__ == "__main__":
    main()
