"""Drawing helpers only: the shared figure style, an atomic PNG writer and the offline HTML template
of `dvc plots show`. May import core; knows no model and no stage (each layer draws its own figures)."""
