"""Below everything: typed params, paths, atomic file writes, errors, statistics, code deps. Imports nothing else from vitbench."""
