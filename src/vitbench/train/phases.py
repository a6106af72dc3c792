"""Training: the three training stages and the resumable loop they share.

`train_family` trains one model family (`vitbench.models.family.Family`, handed over by the stage
script that imports it): a family with pretrained weights (cnn, vit_ft) in two phases (transfer:
backbone frozen; fine-tune: everything trainable, BatchNorm kept in inference mode by the
builders), saving both models (a CNN with no pretrained weights trains its whole base in the first
phase: the family's `from_scratch`); the from-scratch ViT in one. Each phase has its recipe
(`config.PhaseRecipe`, found in the family's section by `Family.recipe`: lr, weight decay -> AdamW, warm-up + cosine, label smoothing) and trains
on online-augmented batches (`augment_online`, the same for every model; validation batches never
are); record.json's `recipe` says what it got. The optimizer, schedule and loss come from
`vitbench.train.optim`. Every phase runs `vitbench.train.loop.fit_phase`: `train.epochs` (or the section's
own `epochs`: `Train.for_stage`), early stopping on `val_loss` (`train.patience`) at a constant lr
only (a warm-up + cosine phase runs every epoch: `optim.stops_early`), at least `train.min_steps`
optimizer steps (`step_budget`: longer epochs on repeated data when the data are few; `steps_run`
in record.json), the weights of the best epoch restored, dvclive learning curves,
and a backup in `.cache/backup/<id>/` after every epoch, so a killed run resumes from its last
finished epoch. A finished transfer phase is kept there too, so a kill during fine-tuning does not
redo it. Backups carry a fingerprint of the params and data they came from; a stale one is ignored.
What differs between model families (builder, input size, freezing, pretrained weights) is the
family's declaration; this module imports no family, so a stage's code is its own family's.

Determinism: `keras.utils.set_random_seed(seed)` seeds Python, NumPy and TensorFlow, and the
training set is shuffled from the seed, so two runs on one CPU machine give the same models up
to float rounding. What still varies: GPU kernels (cuDNN, atomic reductions) are not bit-exact
(op determinism is not forced: it is slow and some ops lack it); multi-threaded CPU reductions may
sum in another order; under a distribution strategy the replica split and all-reduce order
differ; a resumed run restores weights, optimizer state, history and early-stopping state exactly,
but the random streams (shuffle order, dropout) restart from the seed, so it does not repeat the
uninterrupted run bit for bit; `train_seconds` is wall time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from vitbench import __version__
from vitbench.core.config import AugmentOnline, PhaseRecipe, Train, to_dict
from vitbench.data.imageprep import read_transform
from vitbench.data.manifest import read_labels, read_manifest
from vitbench.data.online import batch_augmenter
from vitbench.data.pipeline import labelled_paths, make_dataset
from vitbench.core.fsutil import atomic_dir, sha256_file
from vitbench.models import resolve_pretrained
from vitbench.models.family import Family
from vitbench.models.store import count_params, display_name, load_model, save_model
from vitbench.train.multiworker import prebuild, save_on_chief
from vitbench.train.loop import (PhaseResult, clean_backups, fit_phase, prepare_backup,
                           publish_curves, write_curves)
from vitbench.train.optim import compile_model, make_optimizer, stops_early
from vitbench.core.paths import Paths
from vitbench.core.recipe import recipe_record, tokens_of

if TYPE_CHECKING:
    from vitbench.train.features import HeadOnFeatures

log = logging.getLogger(__name__)



# --- runtime: seed, strategy, precision -------------------------------------------------------

@dataclass(frozen=True)
class Runtime:
    """Where and how a stage trains."""

    strategy: tf.distribute.Strategy
    device: str
    mixed_precision: bool
    chief: bool  # writes backups, curves and models (False only on non-chief multi-worker tasks)

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)


def get_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirrored when TF_CONFIG is set, Mirrored over several GPUs (or, without GPUs,
    several configured logical CPUs), else the default strategy. Call before other TF work."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    return tf.distribute.get_strategy()


def use_mixed_precision(setting: bool | str) -> bool:
    """Set the global Keras dtype policy: mixed_float16 when `setting` is true, or "auto" on a GPU."""
    on = bool(tf.config.list_physical_devices("GPU")) if setting == "auto" else bool(setting)
    keras.mixed_precision.set_global_policy("mixed_float16" if on else "float32")
    return on


def task() -> tuple[str, int, bool]:
    """(task type, index, is chief) from TF_CONFIG; ("chief", 0, True) without it."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    spec = config.get("task") or {}
    kind, index = str(spec.get("type", "chief")), int(spec.get("index", 0))
    has_chief = bool((config.get("cluster") or {}).get("chief"))
    return kind, index, kind == "chief" or (kind == "worker" and index == 0 and not has_chief)


def setup_runtime(train: Train, seed: int) -> Runtime:
    """Strategy first (multi-worker needs that), then the seed and the precision policy; logs them."""
    strategy = get_strategy()
    keras.utils.set_random_seed(seed)
    if train.deterministic:      # same seed, same weights, run after run (slower kernels)
        tf.config.experimental.enable_op_determinism()
    mixed = use_mixed_precision(train.mixed_precision)
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    rt = Runtime(strategy, device, mixed, task()[2])
    log.info("training on %s: %s with %d replica(s), mixed precision %s, seed %d%s", device,
             type(strategy).__name__, rt.replicas, "on" if mixed else "off", seed,
             ", deterministic ops" if train.deterministic else "")
    return rt


# --- data --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainData:
    """The training and validation batches of one stage."""

    classes: list[str]
    train: tf.data.Dataset
    val: tf.data.Dataset
    train_paths: list[str]
    batch_size: int
    online: AugmentOnline = AugmentOnline.only()   # what the train batches went through
    copies: float = 0.0                      # materialised augmented copies per original image

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.train_paths) // self.batch_size)


def load_train_data(train_cfg: Train, seed: int, paths: Paths, image_size: int,
                    preprocess: str, online: AugmentOnline = AugmentOnline.only()) -> TrainData:
    """data/augmented/train.csv (shuffled from the seed, augmented on the fly per `online`) and
    data/split/val.csv (never augmented), labels.json order."""
    classes = read_labels(paths.labels)
    train_paths, train_labels = labelled_paths(paths.augmented_csv, classes)
    val_paths, val_labels = labelled_paths(paths.split_csv("val"), classes)
    batch = train_cfg.batch_size
    cache = {"cache": train_cfg.cache, "cache_dir": paths.cache / "tfdata"}
    augment = batch_augmenter(online, len(classes), seed)
    train = make_dataset(train_paths, train_labels, image_size, preprocess, batch,
                         shuffle=True, seed=seed, augment=augment, **cache)
    val = make_dataset(val_paths, val_labels, image_size, preprocess, batch, **cache)
    log.info("%d training and %d validation images, %d classes, %dpx, batch %d, online "
             "augmentation: %s", len(train_paths), len(val_paths), len(classes), image_size, batch,
             online.active or "off")
    return TrainData(classes, train, val, train_paths, batch, online,
                     materialised_copies(paths.augmented_csv))


def materialised_copies(csv: Path) -> float:
    """Augmented copies per original image in data/augmented/train.csv (its `augmented` column)."""
    flags = read_manifest(csv).get("augmented")
    if flags is None:
        return 0.0
    augmented = int((flags.astype(int) != 0).sum())
    return round(augmented / max(len(flags) - augmented, 1), 3)


def fingerprint(family: Family, cfg: Any, train: Train, seed: int, paths: Paths,
                online: AugmentOnline = AugmentOnline.only()) -> str:
    """Hash of what a stage's models depend on: seed, train.*, augment_online (`online`), its
    params section `cfg`, the data manifests (which carry each image's sha256) and the code: every
    vitbench module this one and the family's package import, as `vitbench.core.deps` finds them
    (the same list the dvc.yaml test checks)."""
    from vitbench.core import deps

    data_files = (paths.augmented_csv, paths.split_csv("val"), paths.labels)
    code_files = (deps.module_files(__name__) + deps.module_files("vitbench.train.features")
                  + deps.module_files(family.module))
    payload = {
        "version": __version__,
        "seed": seed,
        "train": to_dict(train),
        "augment_online": to_dict(online),
        family.name: to_dict(cfg),
        "data": {p.name: sha256_file(p) for p in data_files},
        "code": {deps.relative(p): sha256_file(p) for p in code_files},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# --- one phase, end to end -----------------------------------------------------------------------

@dataclass(frozen=True)
class StepBudget:
    """How a phase runs `train.epochs` epochs and at least `train.min_steps` optimizer steps."""

    epochs: int
    steps_per_epoch: int    # optimizer steps in one epoch
    virtual: bool           # epochs of `steps_per_epoch` steps on repeated data, not single passes
    min_epochs: int         # early stopping waits for these: min_steps are run whole

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def step_budget(train: Train, batches: int) -> StepBudget:
    """`train.epochs` passes over the `batches` of the training set when they make at least
    `train.min_steps` steps (or min_steps is null); else as many epochs, each stretched to
    ceil(min_steps / epochs) steps of the repeated data, so that validation, callbacks and
    backups still run once per epoch, `train.epochs` times a phase (docs/recipe.md)."""
    epochs, least = train.epochs, train.min_steps
    if least is None or epochs * batches >= least:
        return StepBudget(epochs, batches, False, -(-least // batches) if least else 0)
    per_epoch = -(-least // epochs)
    return StepBudget(epochs, per_epoch, True, -(-least // per_epoch))


@dataclass(frozen=True)
class Job:
    """What a stage trains: shared by its phases."""

    family: str
    build: dict[str, Any]
    image_size: int
    preprocess: str
    pretrained: bool
    print_: str  # fingerprint of params + data


def train_phase(model: keras.Model, model_id: str, job: Job, recipe: PhaseRecipe,
                train: Train, paths: Paths, data: TrainData, rt: Runtime,
                head: HeadOnFeatures | None = None) -> dict[str, Any]:
    """Compile with the phase's recipe, fit (resumably), save models/<id>; returns the record.
    With `head`, the head alone is fitted on cached features and then copied into `model`
    (vitbench.train.features)."""
    fitted, train_ds, val_ds = ((model, data.train, data.val) if head is None
                                else (head.model, head.train, head.val))
    budget = step_budget(train, data.steps_per_epoch)
    with rt.strategy.scope():
        optimizer = make_optimizer(recipe, budget.steps)
        compile_model(fitted, optimizer, len(data.classes), recipe.label_smoothing)
    backup = prepare_backup(paths.backup(model_id), job.print_) / "fit"
    if not rt.chief:  # a non-chief worker keeps its own copy
        kind, index, _ = task()
        backup = backup.with_name(f"fit-{kind}-{index}")
    prebuild(model, data.train, rt.strategy)  # multi-worker only: Keras cannot build it itself
    log.info("training %s: %s of %s parameters trainable", model_id,
             f"{count_params(model.trainable_weights):,}", f"{model.count_params():,}")
    curves = paths.backup(model_id) / "curves"  # published to plots/<id>/train only on success
    patience = train.patience if stops_early(recipe) else None  # cosine: every epoch runs
    if budget.virtual:
        log.info("%s: %d epochs of %d steps on repeated data (train.min_steps %d; one pass is %d "
                 "steps)", model_id, budget.epochs, budget.steps_per_epoch, train.min_steps,
                 data.steps_per_epoch)
    result = fit_phase(fitted, train_ds, val_ds, epochs=budget.epochs,
                       patience=patience, backup_dir=backup, curves_dir=curves, write=rt.chief,
                       steps_per_epoch=budget.steps_per_epoch if budget.virtual else None,
                       min_epochs=budget.min_epochs)
    record = make_record(model_id, job, model, data.classes, result, rt)
    record["recipe"] = recipe_record(recipe, type(optimizer).__name__, data.copies, data.online,
                                     epochs=train.epochs, patience=patience,
                                     tokens=tokens_of(job.build))
    if head is not None:
        head.copy_to(model)
        head.annotate(record)
    record["input"] = read_transform(paths.clean, job.image_size)  # the model's own input recipe
    save_on_chief(model, paths.model(model_id), record, rt.chief)  # every worker joins the save
    if rt.chief:
        publish_curves(curves, paths.train_plots(model_id))
    log.info("%s: %d epoch(s) in %.1fs, best val_loss at epoch %d", model_id, result.epochs_run,
             result.seconds, result.best_epoch + 1)
    return record


def make_record(model_id: str, job: Job, model: keras.Model, classes: list[str],
                result: PhaseResult, rt: Runtime) -> dict[str, Any]:
    """record.json of a trained model (docs/design.md, "Models on disk")."""
    record: dict[str, Any] = {"id": model_id, "family": job.family, "build": dict(job.build)}
    record["display_name"] = display_name(model_id, record)
    record.update({
        "classes": list(classes), "image_size": job.image_size, "preprocess": job.preprocess,
        "pretrained": job.pretrained, "train_seconds": round(result.seconds, 3),
        "epochs_run": result.epochs_run, "steps_run": result.steps_run,
        "best_epoch": result.best_epoch + 1,
        "params_total": int(model.count_params()),
        "params_trainable": count_params(model.trainable_weights),
        "history": result.history, "device": rt.device, "mixed_precision": rt.mixed_precision,
        "replicas": rt.replicas,
    })
    return record


@dataclass(frozen=True)
class StageStart:
    """What every training stage sets up first: runtime, data, input size and preprocessing."""

    rt: Runtime
    data: TrainData
    image_size: int
    preprocess: str


def start_stage(family: Family, cfg: Any, train: Train, seed: int, paths: Paths,
                online: AugmentOnline) -> StageStart:
    """Runtime (strategy, seed, precision), then the family's training and validation batches."""
    rt = setup_runtime(train, seed)
    image_size, preprocess = family.input_spec(cfg)
    data = load_train_data(train, seed, paths, image_size, preprocess, online)
    return StageStart(rt, data, image_size, preprocess)


# --- two-phase stages: transfer, then fine-tune ---------------------------------------------------

ModelMaker = Callable[[], tuple[keras.Model, dict[str, Any], bool]]


def two_phase(family: Family, cfg: Any, train: Train, seed: int, paths: Paths,
              start: StageStart, make_model: ModelMaker) -> None:
    """Transfer (backbone frozen, recipe cfg.transfer) -> the family's transfer model;
    fine-tune (all trainable, recipe cfg.finetune) -> its fine-tuned model.

    `make_model()` (called in the strategy scope) returns (model, its build kwargs, whether
    pretrained weights were loaded). A transfer phase finished by an earlier, killed run of the
    same params and data is reused instead of trained again.
    """
    from vitbench.train.features import head_on_features, use_feature_cache

    rt, data = start.rt, start.data
    transfer_id, finetune_id = ids = tuple(family.phases)
    print_ = fingerprint(family, cfg, train, seed, paths, data.online)
    with rt.strategy.scope():
        model, record = _reuse_phase1(paths, transfer_id, print_)
        if model is None:
            model, build, used = make_model()
            job = Job(family.name, build, start.image_size, start.preprocess, used, print_)
            family.prepare_phase(model, "transfer", used)
            head = (head_on_features(model, data.train, data.val, data.batch_size, seed,
                                     family.head_layers)
                    if use_feature_cache(cfg, used, bool(data.online.active), family.name)
                    else None)
            record = train_phase(model, transfer_id, job, family.recipe(cfg, "transfer"),
                                 train, paths, data, rt, head)
            save_on_chief(model, paths.backup(transfer_id) / "finished", record, rt.chief)
        job = Job(family.name, record["build"], start.image_size, start.preprocess,
                  bool(record["pretrained"]), print_)
        family.prepare_phase(model, "finetune", job.pretrained)
        train_phase(model, finetune_id, job, family.recipe(cfg, "finetune"), train,
                    paths, data, rt)
    clean_backups(paths, ids)  # on every worker: each has its own backup


def _reuse_phase1(paths: Paths, model_id: str, print_: str) -> tuple[keras.Model | None, dict | None]:
    """The transfer model an interrupted run finished (then re-published), or (None, None)."""
    finished = prepare_backup(paths.backup(model_id), print_) / "finished"
    if not finished.is_dir():
        return None, None
    model, record = load_model(finished)
    log.info("reusing the finished %s phase from %s (same params and data)", model_id, finished)
    save_model(model, paths.model(model_id), record)
    with atomic_dir(paths.train_plots(model_id)) as tmp:
        write_curves(tmp, record["history"])
    return model, record


def pretrained_stage(family: Family, cfg: Any, train: Train, seed: int, paths: Paths,
                     online: AugmentOnline) -> None:
    """A family with pretrained weights (`cfg.pretrained`: auto, true or false), in two phases."""
    train = train.for_stage(cfg)        # cfg.epochs or train's
    if cfg.pretrained is not False and family.check_weights is not None:
        family.check_weights(cfg)          # a bad setting is an error even with `auto`
    start = start_stage(family, cfg, train, seed, paths, online)
    build = family.build_kwargs(cfg, len(start.data.classes))

    def make_model() -> tuple[keras.Model, dict[str, Any], bool]:
        loaded, used = resolve_pretrained(cfg.pretrained, family.weights_label(cfg),
                                          lambda: family.load_pretrained(cfg, build))
        return (*loaded, True) if loaded is not None else (family.builder(**build), build, used)

    two_phase(family, cfg, train, seed, paths, start, make_model)


def scratch_stage(family: Family, cfg: Any, train: Train, seed: int, paths: Paths,
                  online: AugmentOnline) -> None:
    """A family trained from random weights in one phase (plus its figure, if it has one)."""
    from vitbench.data.pipeline import load_images

    train = train.for_stage(cfg)        # cfg.epochs or train's
    ((model_id, phase),) = family.phases.items()
    start = start_stage(family, cfg, train, seed, paths, online)
    rt, data = start.rt, start.data
    if rt.chief and family.figure is not None:
        first = load_images(data.train_paths[:1], start.image_size)[0]
        family.figure(cfg, first, paths.plots / family.figure_name)
    build = family.build_kwargs(cfg, len(data.classes))
    job = Job(family.name, build, start.image_size, start.preprocess, False,
              fingerprint(family, cfg, train, seed, paths, online))
    with rt.strategy.scope():
        model = family.builder(**build)
        train_phase(model, model_id, job, family.recipe(cfg, phase), train, paths, data, rt)
    clean_backups(paths, [model_id])  # on every worker: each has its own backup


# --- the stage entry point -------------------------------------------------------------------------

def train_family(family: Family, cfg: Any, train: Train, seed: int, paths: Paths,
                 online: AugmentOnline = AugmentOnline.only()) -> None:
    """Train `family`'s models with its params section `cfg` (train_cnn: models/cnn_transfer and
    cnn_finetuned; train_vit: models/vit_scratch and plots/vit_patches.png; finetune_vit:
    models/vit_transfer and vit_finetuned); `online`: augment_online (default: none)."""
    if "scratch" in family.phases.values():
        scratch_stage(family, cfg, train, seed, paths, online)
    else:
        pretrained_stage(family, cfg, train, seed, paths, online)
