"""What every stage script shares: the click command, params loading, logging, and exit codes.

A stage script is only::

    @stage_cli("fetch")
    def main(params: Params, paths: Paths) -> None:
        fetch_dataset(params.dataset, params.seed, paths)

`--params` and `--root` are added here; a `VitbenchError` (bad params, bad data, failed download)
and a full disk (or a file-size limit: `ulimit -f`) become one `error: <stage>: ...` line on stderr
and exit code 1, before any output is replaced.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vitbench.core.config import ModelSections, Params, load_params
from vitbench.core.errors import VitbenchError
from vitbench.core.fsutil import disk_full, is_disk_full
from vitbench.core.paths import Paths

log = logging.getLogger("vitbench")


def setup_logging(verbose: bool = False) -> None:
    """Log to stderr as `LEVEL module: message`; silence TensorFlow's C++ chatter."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def stage_cli(name: str, *options: Callable[[Callable[..., Any]], Callable[..., Any]],
              sections: ModelSections = ()) -> Callable[[Callable[..., Any]], click.Command]:
    """Turn `fn(params, paths, **options)` into the click command of stage `name`; `params` holds
    the shared sections and the model `sections` (a family's `params`), validated."""

    def decorate(fn: Callable[..., Any]) -> click.Command:
        def command(params_path: str, root: str, verbose: bool, **kwargs: Any) -> None:
            setup_logging(verbose)
            start = time.perf_counter()
            try:
                params: Params = load_params(params_path, sections)
                fn(params, Paths(Path(root)), **kwargs)
            except VitbenchError as exc:
                click.secho(f"error: {name}: {exc}", fg="red", err=True)
                sys.exit(1)
            except OSError as exc:  # a full disk (or ulimit -f) outside the atomic writers
                if not is_disk_full(exc):
                    raise
                where = exc.filename or Path(root).resolve()
                click.secho(f"error: {name}: {disk_full(exc, where)}", fg="red", err=True)
                sys.exit(1)
            log.info("%s done in %.1fs", name, time.perf_counter() - start)

        command.__doc__ = fn.__doc__
        for option in reversed(options):
            command = option(command)
        command = click.option("--params", "params_path", default="params.yaml", show_default=True,
                               type=click.Path(dir_okay=False), help="The params file.")(command)
        command = click.option("--root", default=".", show_default=True,
                               type=click.Path(file_okay=False), help="The project root.")(command)
        command = click.option("-v", "--verbose", is_flag=True, help="Debug logging.")(command)
        return click.command(name=name)(command)

    return decorate
