"""compare: every model side by side -> metrics/compare.json, compare_detail.json, compare.md, plots/compare/."""

from vitbench.config import Params
from vitbench.paths import Paths
from vitbench.stage import stage_cli


@stage_cli("compare")
def main(params: Params, paths: Paths) -> None:
    """Write the comparison report."""
    from vitbench.report import compare

    compare(params.compare, params.seed, paths)


if __name__ == "__main__":
    main()
