"""`python -m vitbench`: the `vitbench` command."""

from vitbench.cli import main

if __name__ == "__main__":
    main(prog_name="vitbench")
