"""The compare stage: evaluated models read back from files, the verdict, compare.md and its figures. May import core, plots and evaluate's file readers."""
