"""metrics/compare.md: the comparison as a report a person reads (tables by pandas + tabulate).

The conclusion's wording follows the statistics: a model is "better" only when McNemar's exact
test on the shared test images gives p < 0.05; otherwise the report says the difference is not
significant and how many test images would resolve it (`vitbench.core.stats`). A model at chance
(`ModelResult.at_chance`) is marked "at chance" wherever it is named and is never best, best
calibrated, robust or the winner; when the best model of a kind is at chance the verdict is void.

Every user-provided string (class names, model names) passes through `vitbench.core.markup.escape_text`
before it is written, so a class folder called `<img src=x onerror=alert(1)>` or `**bold**` shows
as that literal text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from vitbench.core import stats
from vitbench.evaluate.calibration import BINS
from vitbench.core.markup import escape_text
from vitbench.core.recipe import describe as describe_recipe
from vitbench.report.results import VOID, ModelResult, above_chance, per_class_f1, robustness_table
from vitbench.evaluate.robustness import CORRUPTIONS, SEVERITIES

# (header, metric key, formatter, which value is best: "max", "min" or None)
TABLE_COLUMNS: tuple[tuple[str, str, Any, str | None], ...] = (
    ("Params", "params_total", lambda v: _fmt_count(v), "min"),
    ("Size (MB)", "size_mb", lambda v: f"{v:.1f}", "min"),
    ("Train time", "train_seconds", lambda v: _fmt_seconds(v), "min"),
    ("Input", "image_size", lambda v: f"{v:.0f} px", None),   # equal footing: inputs and budget
    ("Epochs", "epochs_run", lambda v: f"{v:.0f}", None),
    ("Steps", "steps_run", lambda v: f"{v:.0f}", None),
    ("Images/s", "infer_images_per_second", lambda v: f"{v:.1f}", "max"),
    ("Accuracy", "accuracy", lambda v: f"{v:.1%}", "max"),
    ("Loss", "loss", lambda v: f"{v:.3f}", "min"),
    ("Macro F1", "f1_macro", lambda v: f"{v:.3f}", "max"),
    ("ECE", "ece", lambda v: f"{v:.3f}", "min"),
    ("Corrupted acc.", "corruption_accuracy", lambda v: f"{v:.1%}", "max"),
)
# columns whose cell also shows the 95% interval
INTERVALS = {"accuracy": (lambda v: f"{v * 100:.0f}"), "f1_macro": (lambda v: f"{v:.2f}")}
AT_CHANCE = "at chance"


def render_markdown(summary: dict[str, Any], results: list[ModelResult], classes: list[str]) -> str:
    """The report: warnings, conclusion, the side-by-side table, paired tests, robustness, maps,
    per-class F1."""
    n = summary["test_images"]
    lines = ["# CNN or Vision Transformer? The comparison", ""]
    if summary["warnings"]:
        lines += [f"> **WARNING:** {escape_text(w)}" + "  " for w in summary["warnings"]] + [""]
    lines += ["## Conclusion", "", *conclusion(summary, results, classes), ""]
    robust = robustness_table(results)
    corrupted = (f"Corrupted acc.: mean accuracy under {len(CORRUPTIONS)} corruptions x "
                 f"{len(SEVERITIES)} severities. " if not robust.empty else "")
    lines += [f"## All models on the test split ({n} images)", "", _models_table(results), "",
              "Best value per column in **bold** (never a model at chance). Accuracy and macro F1 with their 95% interval in "
              "brackets (accuracy: Wilson; macro F1: bootstrap over the test images, "
              f"{stats.BOOTSTRAP_RESAMPLES} resamples). ECE: expected calibration error over "
              f"{BINS} confidence bins (0 = confidence matches accuracy). {corrupted}"
              "Size is the model folder on disk; images/s is inference alone on one in-memory "
              "batch. Train time and epochs: the model's own training phase (a fine-tuned model "
              "also got its transfer phase's; the epochs each phase planned: Training recipe).", ""]
    lines += ["## Paired tests (McNemar, exact)", "", _pairs_table(summary, results), "",
              "A right / B right: test images only that model classifies correctly. p < 0.05: the "
              f"two accuracies differ beyond chance on these {n} images. Images needed: test "
              "images that would detect the observed difference (or 5 points when there is none) "
              "with 80% power at alpha = 0.05 (Connor 1987, from the observed share of "
              "discordant images).", ""]
    if not robust.empty:
        lines += ["## Robustness: accuracy under corruptions", "", _robustness_md(robust, results),
                  "", f"Each corruption is the mean over its {len(SEVERITIES)} severities "
                  "(ImageNet-C severities 1, 3, 5), applied to the test images at each model's "
                  "input size. Per severity: `plots/<id>/eval/robustness.csv`; curves: "
                  "`plots/compare/robustness.png`.", ""]
    lines += ["## Training recipe", "", *_recipe_lines(results), ""]
    lines += ["## Where the models look", "", *_map_links(results), ""]
    lines += ["## F1 per class", "", _per_class_table(results, classes), ""]
    return "\n".join(lines)


def conclusion(summary: dict[str, Any], results: list[ModelResult], classes: list[str]) -> list[str]:
    """A short data-driven verdict: who wins, whether it is significant, at what cost;
    calibration, robustness, perfect and hard classes."""
    by_id = {r.model_id: r for r in results}
    pairs = {(p["a"], p["b"]): p for p in summary["pairwise"]}
    out = _chance_sentences(results)
    out.append(_winner_sentence(summary["best"]["accuracy"], results, "accuracy", pairs))
    if summary["best"]["f1_macro"]["models"] != summary["best"]["accuracy"]["models"]:
        out.append(_winner_sentence(summary["best"]["f1_macro"], results, "f1_macro", pairs))
    if summary["cnn_vs_vit"]:
        versus = summary["cnn_vs_vit"]
        out.append(_versus_sentence(versus, by_id, summary["test_images"]))
        out.append("- " + footing_sentence(by_id[versus["best_cnn"]].metrics,
                                           by_id[versus["best_vit"]].metrics))
    out += _kind_sentences(summary["kinds"], results)
    perfect = [f"{_label(by_id[m])} {len(c)}/{len(classes)}"
               for m, c in summary["perfect_classes"].items()]
    out.append("- Classes with a perfect score (precision = recall = 1): " + ", ".join(perfect) + ".")
    judged = above_chance(results) or results
    out.append(_hardest_class_sentence(summary["unsolved_classes"], per_class_f1(judged, classes)))
    return out


def _chance_sentences(results: list[ModelResult]) -> list[str]:
    """The models at chance, named first: nothing below counts them."""
    failed = [r for r in results if r.at_chance]
    if not failed:
        return []
    listed = ", ".join(f"{escape_text(r.name)} ({float(r.metrics['accuracy']):.1%} against "
                       f"{r.majority_rate:.1%} for always answering the most frequent class, "
                       f"p = {_fmt_p(float(r.metrics['chance_p']))})" for r in failed)
    return [f"- **At chance:** {listed}. A model at chance failed to train: it is never best, "
            "best calibrated or robust here, and decides no verdict."]


def _versus_sentence(versus: dict[str, Any], by_id: dict[str, ModelResult], n: int) -> str:
    cnn, vit = by_id[versus["best_cnn"]], by_id[versus["best_vit"]]
    head = (f"- **CNN or ViT?** Best CNN {_label(cnn)} ({_acc_ci(cnn)}) against best ViT "
            f"{_label(vit)} ({_acc_ci(vit)}): ")
    counts = (f"McNemar exact p = {_fmt_p(versus['p_value'])}; only the ViT is right on "
              f"{_images(versus['vit_only_right'])}, only the CNN on {_images(versus['cnn_only_right'])}")
    if versus["winner"] == VOID:
        failed = [by_id[m] for m in versus["at_chance"]]
        if len(failed) > 1:
            why = "both are at chance: training failures, not evidence for either kind"
        else:
            other = "ViT" if failed[0].kind == "CNN" else "CNN"
            why = (f"the best {failed[0].kind} is at chance: a training failure, not evidence "
                   f"for the {other}")
        return (head + f"**no verdict**, {why}. Fix the training (learning rate, epochs, "
                "weights) and re-run before comparing the kinds.")
    if versus["winner"] in ("CNN", "ViT"):
        points = abs(versus["accuracy_difference"]) * 100
        return (head + f"the **{versus['winner']}** is better, by {points:.1f} accuracy points "
                f"({counts}).")
    return (head + f"**no significant difference** on {n} test images ({counts}). About "
            f"{versus['images_needed']:,} test images would be needed to resolve "
            f"{versus['resolve_points'] * 100:.1f} points (80% power, alpha = 0.05); see "
            "`vitbench seeds` for repeated runs.")


def footing_sentence(cnn: dict[str, Any], vit: dict[str, Any]) -> str:
    """Every difference in inputs and budget between the best CNN and the best ViT (their
    metrics, as evaluate wrote them): input size, pretrained or random weights, optimizer steps
    and epochs of the last training phase ("Not like for like: the CNN saw 96 px inputs, the ViT
    48 px; ..."), what they share said once, then their training time and parameters."""
    differ, same = [], []
    if cnn.get("image_size") is not None and vit.get("image_size") is not None:
        if cnn["image_size"] != vit["image_size"]:
            differ.append(f"the CNN saw {cnn['image_size']:.0f} px inputs, the ViT "
                          f"{vit['image_size']:.0f} px")
        else:
            same.append(f"{cnn['image_size']:.0f} px inputs")
    weights = {True: "pretrained weights", False: "random weights"}
    start = (bool(cnn["pretrained"]), bool(vit["pretrained"]))
    if start[0] != start[1]:
        differ.append(f"the CNN started from {weights[start[0]]}, the ViT from {weights[start[1]]}")
    else:
        same.append(weights[start[0]])
    if _length(cnn) != _length(vit):
        differ.append(f"the CNN's last training phase ran {_length(cnn)}, the ViT's {_length(vit)}")
    else:
        same.append(f"{_length(cnn)} in the last training phase")
    head = ("**Not like for like:** " + "; ".join(differ) if differ
            else "**Like for like** in inputs, weights and training length")
    both = f" (both: {', '.join(same)})" if same else ""
    return (f"{head}{both}. Training took the CNN {_fmt_seconds(cnn['train_seconds'])} and the "
            f"ViT {_fmt_seconds(vit['train_seconds'])}; the CNN has "
            f"{_fmt_count(cnn['params_total'])} parameters, the ViT {_fmt_count(vit['params_total'])}.")


def _length(metrics: dict[str, Any]) -> str:
    """"120 optimizer steps (5 epochs)": the last training phase's length (steps when known)."""
    epochs = _count(metrics["epochs_run"], "epoch")
    steps = metrics.get("steps_run")
    return epochs if steps is None else f"{_count(steps, 'optimizer step')} ({epochs})"


def _count(n: float, noun: str) -> str:
    """"1 epoch", "5 epochs"."""
    return f"{n:.0f} {noun}" + ("" if n == 1 else "s")


def _kind_sentences(kinds: dict[str, dict[str, Any]], results: list[ModelResult]) -> list[str]:
    """Calibration and robustness, over the models above chance only."""
    eligible = above_chance(results)
    if not eligible:
        return ["- Calibration and robustness: not compared, every model is at chance."]
    left_out = " (models at chance left out)" if len(eligible) < len(results) else ""
    failed = [f for f, v in kinds.items() if v["ece"] is None]
    best_ece = min(eligible, key=lambda r: float(r.metrics["ece"]))
    averages = [f"{f}s {v['ece']:.3f}" for f, v in kinds.items() if v["ece"] is not None]
    out = [f"- Calibration: best calibrated {_label(best_ece)} (ECE {best_ece.metrics['ece']:.3f}); "
           + ", ".join(averages) + f" on average{left_out}."]
    drops = {f: v["corruption_drop"] for f, v in kinds.items() if v["corruption_drop"] is not None}
    if failed and any("corruption_accuracy" in r.metrics for r in results):
        out.append("- Robustness: the families are not compared: every "
                   + " and every ".join(failed) + " is at chance (it has no accuracy to lose).")
    elif len(drops) == len(kinds) and len(drops) > 1:
        text = ", ".join(f"the {f}s {d * 100:.1f}" for f, d in drops.items())
        ordered = sorted(drops, key=lambda f: drops[f])
        verdict = ("both degrade alike" if np.isclose(drops[ordered[0]], drops[ordered[1]], atol=5e-3)
                   else f"the **{ordered[0]}s degrade less**")
        out.append(f"- Robustness: under common corruptions the models lose on average {text} "
                   f"accuracy points{left_out}: {verdict}.")
    return out


def _winner_sentence(top: dict[str, Any], results: list[ModelResult], key: str,
                     pairs: dict[tuple[str, str], dict[str, Any]]) -> str:
    label = {"accuracy": "accuracy", "f1_macro": "macro F1"}[key]
    fmt = (lambda v: f"{v:.1%}") if key == "accuracy" else (lambda v: f"{v:.3f}")
    if not top["models"]:
        return f"- Best {label}: none, every model is at chance."
    eligible = above_chance(results)
    winners = [r for r in eligible if r.model_id in top["models"]]
    others = sorted((r for r in eligible if r.model_id not in top["models"]),
                    key=lambda r: -float(r.metrics[key]))
    names = " and ".join(f"**{_label(r)}**" for r in winners)
    if not others and len(winners) == 1:
        return f"- Best {label}: {names} with {fmt(top['value'])}, the only model above chance."
    if not others:
        scope = "all models" if len(eligible) == len(results) else "all models above chance"
        return (f"- Best {label}: {scope} tie at {fmt(top['value'])}. "
                + _cheapest_sentence(winners))
    runner = others[0]
    gap = top["value"] - float(runner.metrics[key])
    gap_text = f"{gap * 100:.1f} points" if key == "accuracy" else f"{gap:.3f}"
    tie = " (a tie)" if len(winners) > 1 else ""
    sentence = (f"- Best {label}: {names}{tie} with {fmt(top['value'])}, {gap_text} ahead of the "
                f"runner-up {_label(runner)} ({fmt(float(runner.metrics[key]))}")
    if key == "accuracy":
        pair = pairs.get((winners[0].model_id, runner.model_id)) or \
            pairs.get((runner.model_id, winners[0].model_id))
        significant = "significant" if pair and pair["p_value"] < stats.ALPHA else "not significant"
        sentence += (f"; McNemar p = {_fmt_p(pair['p_value'])}, {significant}" if pair else "")
        sentence += "). " + _cost_sentence(winners[0], runner)
        if len(winners) > 1:
            sentence += " " + _cheapest_sentence(winners)
    else:
        sentence += ")."
    return sentence


def _cost_sentence(winner: ModelResult, runner: ModelResult) -> str:
    """What the winner costs against the runner-up: size and inference speed."""
    w, r = winner.metrics, runner.metrics
    size = _ratio(w["size_mb"], r["size_mb"], ("larger", "smaller", "as large"))
    speed = _ratio(w["infer_images_per_second"], r["infer_images_per_second"],
                   ("faster", "slower", "as fast"))
    return (f"The price: it is {size} ({w['size_mb']:.1f} MB against {r['size_mb']:.1f} MB) and "
            f"{speed} ({w['infer_images_per_second']:.1f} against "
            f"{r['infer_images_per_second']:.1f} images/s).")


def _cheapest_sentence(tied: list[ModelResult]) -> str:
    """Among equally accurate models, name the smallest and the fastest."""
    small = min(tied, key=lambda r: float(r.metrics["size_mb"]))
    fast = max(tied, key=lambda r: float(r.metrics["infer_images_per_second"]))
    size = f"{small.metrics['size_mb']:.1f} MB"
    speed = f"{fast.metrics['infer_images_per_second']:.1f} images/s"
    if small is fast:
        return f"The cheapest of them: {_label(small)}, both the smallest ({size}) and the fastest ({speed})."
    return (f"The cheapest of them: {_label(small)} is the smallest ({size}), "
            f"{_label(fast)} the fastest ({speed}).")


def _ratio(a: float, b: float, words: tuple[str, str, str]) -> str:
    """`a` against `b` in words, e.g. "3.2x larger", "2x slower", "about as fast"."""
    more, less, same = words
    a, b = float(a), float(b)
    if a <= 0 or b <= 0:
        return f"not measurably {more} or {less}"
    if np.isclose(a, b, rtol=0.05):
        return f"about {same}"
    return f"{a / b:.2g}x {more}" if a > b else f"{b / a:.2g}x {less}"


def _hardest_class_sentence(unsolved: list[str], f1: pd.DataFrame) -> str:
    if unsolved:
        return ("- **No model got a single test image right** of class(es): "
                + ", ".join(map(escape_text, unsolved)) + ". Check their labels and training images.")
    mean_f1 = f1.mean(axis=1, skipna=True).dropna()
    if mean_f1.empty:
        return "- No per-class scores to compare."
    hardest = str(mean_f1.idxmin())
    if mean_f1[hardest] >= 1.0:
        return "- Every model recognises every class perfectly on this test split."
    return f"- Hardest class: {escape_text(hardest)} (mean F1 over the models {mean_f1[hardest]:.3f})."


# --- tables ---------------------------------------------------------------------------------------

def _markdown(table: pd.DataFrame) -> str:
    """A table of markdown cells (user-provided text in them already passed through
    `escape_text`: `_label`, class names) as GitHub markdown: first column left, the rest right."""
    return table.to_markdown(index=False, disable_numparse=True,
                             colalign=("left",) + ("right",) * (table.shape[1] - 1))


def _label(r: ModelResult) -> str:
    """A model's display name as markdown text, marked when the model is at chance."""
    return escape_text(r.name) + (f" ({AT_CHANCE})" if r.at_chance else "")


def _models_table(results: list[ModelResult]) -> str:
    table = pd.DataFrame({"Model": [_label(r) for r in results],
                          "Pretrained": [_pretrained_cell(r) for r in results]})
    eligible = [not r.at_chance for r in results]
    for header, key, fmt, better in TABLE_COLUMNS:
        values = [r.metrics.get(key) for r in results]
        if all(v is None for v in values):
            continue
        cells = [_bold("-" if v is None else fmt(v), mark)
                 for v, mark in zip(values, _best_marks(values, better, eligible))]
        if key in INTERVALS:
            ci = INTERVALS[key]
            cells = [f"{c} ({ci(r.metrics[key + '_ci_low'])}-{ci(r.metrics[key + '_ci_high'])})"
                     for c, r in zip(cells, results)]
        table[header] = cells
    return _markdown(table)


def _pairs_table(summary: dict[str, Any], results: list[ModelResult]) -> str:
    by_id = {r.model_id: r for r in results}
    rows = [{"Model A": _label(by_id[p["a"]]), "Model B": _label(by_id[p["b"]]),
             "A right": str(p["a_only_right"]), "B right": str(p["b_only_right"]),
             "p": _bold(_fmt_p(p["p_value"]), p["p_value"] < stats.ALPHA
                        and not by_id[p["a"]].at_chance and not by_id[p["b"]].at_chance),
             "Images needed": "-" if p["images_needed"] is None else f"{p['images_needed']:,}"}
            for p in summary["pairwise"]]
    return _markdown(pd.DataFrame(rows))


def _robustness_md(robust: pd.DataFrame, results: list[ModelResult]) -> str:
    by_id = {r.model_id: r for r in results}
    shown = [by_id[m] for m in robust.index]
    table = pd.DataFrame({"Model": [_label(r) for r in shown]})
    eligible = [not r.at_chance for r in shown]
    for column in robust.columns:
        values = robust[column].tolist()
        table[column.replace("_", " ")] = [_bold(f"{v:.1%}", m) for v, m in
                                           zip(values, _best_marks(values, "max", eligible))]
    return _markdown(table)


def _map_links(results: list[ModelResult]) -> list[str]:
    """Links to each model's Grad-CAM (CNNs) or attention (ViTs) figure on the same test images."""
    out = []
    for r in results:
        name = "gradcam" if r.kind == "CNN" else "attention"
        out.append(f"- {_label(r)}: [{name}](../plots/{r.model_id}/eval/{name}.png), "
                   f"[reliability](../plots/{r.model_id}/eval/reliability.png)")
    return out


def _recipe_lines(results: list[ModelResult]) -> list[str]:
    """What each model was trained with (record.json's `recipe`), and whether the data side
    (materialised copies, online augmentation) was the same for all that recorded it, as a fair
    comparison needs."""
    lines = [f"- {_label(r)}: {escape_text(describe_recipe(r.recipe))}" for r in results]
    data = {repr((r.recipe["augment_online"], r.recipe["augment_copies"]))
            for r in results if r.recipe}   # models without a recorded recipe: unknown
    if len(data) > 1:
        lines += ["", "**The models did not all see the same augmentation**: the comparison is "
                  "not like for like."]
    return lines


def _pretrained_cell(r: ModelResult) -> str:
    if r.metrics["pretrained"]:
        return "yes"
    return "**NO: random init!**" if r.meant_pretrained else "no (by design)"


def _per_class_table(results: list[ModelResult], classes: list[str]) -> str:
    f1 = per_class_f1(results, classes)
    eligible = [not r.at_chance for r in results]
    rows = []
    for c, row in f1.iterrows():
        values = [None if pd.isna(v) else float(v) for v in row]
        differ = len({v for v, ok in zip(values, eligible) if v is not None and ok}) > 1
        marks = _best_marks(values, "max", eligible) if differ else [False] * len(values)
        rows.append([escape_text(c)] + [_bold("-" if v is None else f"{v:.3f}", m)
                                        for v, m in zip(values, marks)])
    return _markdown(pd.DataFrame(rows, columns=["Class", *(_label(r) for r in results)]))


def _best_marks(values: list[Any], better: str | None, eligible: list[bool]) -> list[bool]:
    """Which values are the best of the column (`better`: "max", "min" or None), counting only
    the `eligible` rows (models above chance)."""
    numbers = [v for v, ok in zip(values, eligible) if v is not None and ok and better is not None]
    if not numbers:
        return [False] * len(values)
    top = max(numbers) if better == "max" else min(numbers)
    return [ok and v is not None and bool(np.isclose(float(v), top, rtol=1e-9, atol=1e-12))
            for v, ok in zip(values, eligible)]


def _bold(text: str, mark: bool) -> str:
    return f"**{text}**" if mark and not text.startswith("**") else text


def _acc_ci(r: ModelResult) -> str:
    m = r.metrics
    return f"{m['accuracy']:.1%}, 95% CI {m['accuracy_ci_low']:.0%}-{m['accuracy_ci_high']:.0%}"


def _images(n: int) -> str:
    return _count(n, "test image")


def _fmt_p(p: float) -> str:
    if p == 0:                       # below the smallest float: scipy's exact tests return 0.0
        return "< 1e-300"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _fmt_count(n: float) -> str:
    n = float(n)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g} {suffix}"
    return f"{n:.0f}"


def _fmt_seconds(s: float) -> str:
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
