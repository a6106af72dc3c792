"""compare: every model side by side -> metrics/compare.json, compare_detail.json, compare.md, plots/compare/."""

from vitbench.core.config import Params
from vitbench.core.paths import Paths
from vitbench.core.stage import stage_cli


@stage_cli("compare")
def main(params: Params, paths: Paths) -> None:
    """Write the comparison report."""
    from vitbench.report.compare import compare

    compare(params.compare, params.seed, paths)


if __name__ == "__main__":
    main()
