"""The registry is the only place that knows what a model is: no code outside
src/vitbench/models/ tests a model id or family name, and a model of a family the registry alone
knows is classified by it in compare and in the seeds summary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vitbench.models import registry

REPO = Path(__file__).resolve().parents[1]
SCANNED = {"src/vitbench": True, "stages": True,   # root: whether equality with an id counts
           "benchmarks": False}   # a benchmark may pick its table's rows by id; never guess a kind
IDENTITIES = set(registry.model_ids()) | set(registry.families())


def _strings(node: ast.AST) -> list[str]:
    """The string constants of `node` itself or of the tuple/list/set it is."""
    items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return [n.value for n in items if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def identity_tests(tree: ast.AST, equality: bool = True) -> list[tuple[int, str]]:
    """(line, code) of every `x.startswith/endswith(<prefix of a model id or family>)` and, with
    `equality`, every comparison (==, !=, in, <=, ...) with a model id or family name literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("startswith", "endswith") and node.args:
            if any(any(i.startswith(s) or i.endswith(s) for i in IDENTITIES)
                   for s in _strings(node.args[0])):
                found.append((node.lineno, ast.unparse(node)))
        elif equality and isinstance(node, ast.Compare):
            if any(s in IDENTITIES for side in (node.left, *node.comparators) for s in _strings(side)):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_model_id_or_family_is_tested_outside_models() -> None:
    problems = []
    for root, equality in SCANNED.items():
        for file in sorted((REPO / root).rglob("*.py")):
            if "models" in file.relative_to(REPO / root).parts[:-1]:
                continue
            problems += [f"{file.relative_to(REPO)}:{line}: {code}"
                         for line, code in identity_tests(ast.parse(file.read_text()), equality)]
    assert not problems, "ask vitbench.models.registry (or metrics/<id>.json) instead:\n" + \
        "\n".join(problems)


def test_the_scan_finds_what_it_looks_for() -> None:
    code = ("a = m.startswith('cnn')\nb = f == 'vit_ft'\nc = i in ('vit_scratch', 'x')\n"
            "d = k == 'CNN'\ne = s.startswith('data/')\n")
    assert [line for line, _ in identity_tests(ast.parse(code))] == [1, 2, 3]
    assert [line for line, _ in identity_tests(ast.parse(code), equality=False)] == [1]


def test_model_ids_are_declared_by_the_families() -> None:
    assert registry.model_ids() == tuple(m for f in registry.families().values() for m in f.phases)


# --- a family only the registry knows, through evaluate, compare and the seeds summary -----------

FAKES = {  # model id: (fake family, its kind, phase); both borrow the tiny ViT builder
    "vitconv_scratch": ("vitconv", "CNN", "transfer"),    # a CNN whose id starts with "vit"
    "cnnformer_scratch": ("cnnformer", "ViT", "scratch"),  # a ViT whose id starts with "cnn"
}


@pytest.fixture
def fake_families(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    for model_id, (name, kind, phase) in FAKES.items():
        fake = dataclasses.replace(registry.family("vit"), name=name, kind=kind,
                                   phases={model_id: phase})
        monkeypatch.setitem(registry._DECLARED, name, fake)


@pytest.mark.slow
def test_a_new_family_is_classified_by_the_registry(fake_families: None, tmp_path: Path) -> None:
    from dvc_project import TINY

    from vitbench.core.config import merge, params_with
    from vitbench.data.cleaning import clean_dataset
    from vitbench.data.manifest import read_labels
    from vitbench.data.sources import fetch_dataset
    from vitbench.data.splitting import split_dataset
    from vitbench.evaluate.evaluation import evaluate
    from vitbench.core.fsutil import read_json
    from vitbench.models.store import save_model
    from vitbench.core.paths import Paths
    from vitbench.report.markdown import render_markdown
    from vitbench.report.results import load_results, summarise
    from vitbench.experiments.seeds import experiments, summarize

    params = params_with(merge(TINY, {   # params.yaml + TINY + these
        "dataset": {"synthetic": {"per_class": 8, "image_size": 48}}, "clean": {"min_per_class": 4},
        "evaluate": {"attention_samples": 0, "robustness": False}}),
        sections=registry.family("vit").params)   # the section of the builder both borrow
    paths = Paths(tmp_path)
    fetch_dataset(params.dataset, params.seed, paths)
    clean_dataset(params.clean, paths)
    split_dataset(params.split, params.seed, paths)
    classes = read_labels(paths.labels)
    for model_id, (name, _, _) in FAKES.items():   # untrained: evaluate does not care
        family = registry.family(name)
        cfg = params.vit   # the borrowed builder's section
        build = family.build_kwargs(cfg, len(classes))
        image_size, preprocess = family.input_spec(cfg)
        save_model(family.rebuild(build), paths.model(model_id), {
            "id": model_id, "family": name, "build": build, "classes": classes,
            "image_size": image_size, "preprocess": preprocess, "pretrained": False,
            "train_seconds": 0.0, "epochs_run": 0})
        evaluate(model_id, params.evaluate, params.seed, paths)

    metrics = {m: {**read_json(paths.metrics_json(m)), **read_json(paths.detail_json(m))} for m in FAKES}
    assert {m: (x["family"], x["kind"]) for m, x in metrics.items()} == {
        "vitconv_scratch": ("vitconv", "CNN"), "cnnformer_scratch": ("cnnformer", "ViT")}

    results = load_results(paths, tuple(FAKES))
    summary = summarise(results, classes)
    assert summary["cnn_vs_vit"]["best_cnn"] == "vitconv_scratch"
    assert summary["cnn_vs_vit"]["best_vit"] == "cnnformer_scratch"
    assert {m: s["kind"] for m, s in summary["models"].items()} == {
        "vitconv_scratch": "CNN", "cnnformer_scratch": "ViT"}
    random_init = [w for w in summary["warnings"] if "RANDOM weights" in w]
    assert len(random_init) == 1 and random_init[0].startswith("vitconv_scratch")
    assert "NO: random init!" in render_markdown(summary, results, classes)

    show = [{"rev": str(seed) * 40, "name": f"seed-{seed}", "data": {   # one model per experiment
        "params": {"params.yaml": {"data": {"seed": seed}}},
        "metrics": {f"metrics/{m}.json": {"data": metrics[m]}}}} for seed, m in enumerate(FAKES)]
    cnn_only, vit_only = summarize(experiments(show))["per_seed"]
    assert (cnn_only["best_cnn"], cnn_only["best_vit"]) == (metrics["vitconv_scratch"]["accuracy"], None)
    assert (vit_only["best_cnn"], vit_only["best_vit"]) == (None, metrics["cnnformer_scratch"]["accuracy"])
