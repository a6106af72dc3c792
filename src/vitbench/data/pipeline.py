"""The tf.data input pipeline every training and evaluation step reads images through.

Each image file is read and decoded once: the decoded, resized uint8 tensors are cached (in
memory, or in a tf.data file cache on disk for sets larger than memory: `train.cache`), then
shuffled (seeded, reshuffled every epoch), batched, preprocessed per batch and prefetched.
Evaluation keeps the manifest order (`shuffle=False`), so predictions line up with the manifest
rows.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from vitbench.data.manifest import read_manifest
from vitbench.core.errors import DataError, short_list

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
Preprocess = Callable[[tf.Tensor], tf.Tensor]
BatchAugment = Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
CACHE_MODES = ("auto", "memory", "disk", "none")  # train.cache
MEMORY_SHARE = 0.5  # auto caches in memory when the decoded images fit in this share of free memory
DISK_CACHE = Path(".cache") / "tfdata"  # relative to the project root, where the stages run


def _scale_minus_one_one(x: tf.Tensor) -> tf.Tensor:
    """0..255 -> -1..1 (MobileNetV2 and ViT)."""
    return tf.convert_to_tensor(x, tf.float32) / 127.5 - 1.0


def _caffe(x: tf.Tensor) -> tf.Tensor:
    """RGB -> BGR and ImageNet mean subtraction, no scaling (VGG16, ResNet50)."""
    import keras

    # a tensor, never a NumPy array: keras edits float NumPy input in place
    return keras.applications.imagenet_utils.preprocess_input(
        tf.convert_to_tensor(x, tf.float32), mode="caffe")


IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of 0..1 images (Keras "torch" mode; DeiT)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _torch(x: tf.Tensor) -> tf.Tensor:
    """0..255 -> 0..1, minus the ImageNet mean, over its std, per RGB channel (DeiT)."""
    x = tf.convert_to_tensor(x, tf.float32) / 255.0
    return (x - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def _identity(x: tf.Tensor) -> tf.Tensor:
    """0..255 unchanged (EfficientNet rescales inside the model)."""
    return tf.convert_to_tensor(x, tf.float32)


# How a model's inputs are scaled, by name (a family or CNN architecture names one; records keep it)
PREPROCESS: dict[str, Preprocess] = {
    "tf": _scale_minus_one_one,       # MobileNetV2, the from-scratch ViT, Google's ViT checkpoints
    "torch": _torch,                  # ImageNet mean/std (DeiT)
    "caffe": _caffe,                  # VGG16, ResNet50
    "raw": _identity,                 # models that rescale inside (EfficientNet, EfficientNetV2)
}


def preprocess_fn(name: str) -> Preprocess:
    """The preprocessing function called `name`; an unknown name is a ValueError listing the known ones."""
    try:
        return PREPROCESS[name]
    except KeyError:
        raise ValueError(f"unknown preprocess {name!r}; expected one of {', '.join(PREPROCESS)}") from None


def decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """Read one image file -> uint8 RGB [image_size, image_size, 3] (bilinear with antialiasing,
    aspect not kept)."""
    raw = tf.io.read_file(path)
    return resize_uint8(tf.io.decode_image(raw, channels=3, expand_animations=False), image_size)


def resize_uint8(image: tf.Tensor | np.ndarray, image_size: int) -> tf.Tensor:
    """An RGB image [h, w, 3] -> uint8 [image_size, image_size, 3] (bilinear with antialiasing, so
    a downscale averages instead of aliasing; aspect not kept).

    The last step of `vitbench.data.imageprep`: training, evaluation and `vitbench predict` all go
    through it.
    """
    image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
    image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
    return tf.cast(image, tf.uint8)


def make_dataset(paths: Sequence[str], labels: Sequence[int], image_size: int, preprocess: str,
                 batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 cache: bool | str = True, cache_dir: str | Path = DISK_CACHE,
                 augment: BatchAugment | None = None) -> tf.data.Dataset:
    """Batches of (preprocessed float32 images [b, s, s, 3], int32 labels [b]).

    Files are read and decoded once (parallel map) and the uint8 images cached as `cache` says:
    "memory" (or True), "disk" (a tf.data file cache in `cache_dir`), "none" (or False: decode at
    every epoch) or "auto" (`choose_cache`). With `shuffle`, the order comes from `seed` and
    changes every epoch; without it, it is the input order. `augment` (training only, see
    `vitbench.data.online`) runs on each batch of 0..255 float32 images before the preprocessing,
    one batch after the other so that its seeded random draws repeat; it may turn the labels into
    float32 one-hot mixtures [b, classes]. Missing files, mismatched lengths and an empty input
    raise DataError up front.
    """
    paths = [str(p) for p in paths]
    labels = np.asarray(labels, dtype=np.int32)
    _check_inputs(paths, labels, batch_size)
    fn = preprocess_fn(preprocess)
    mode = choose_cache({True: "memory", False: "none"}.get(cache, cache), len(paths), image_size)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: (decode_resize(p, image_size), y),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    if mode == "memory":
        ds = ds.cache()
    elif mode == "disk":
        ds = ds.cache(str(disk_cache_prefix(cache_dir, paths, labels, image_size)))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: augment(tf.cast(x, tf.float32), y))  # sequential: seeded
    ds = ds.map(lambda x, y: (fn(tf.cast(x, tf.float32)), y),
                num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.prefetch(AUTOTUNE)


def available_memory() -> int:
    """Bytes of memory available to new allocations: MemAvailable of /proc/meminfo (Linux), else
    the free physical pages (os.sysconf)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def decoded_bytes(n_images: int, image_size: int) -> int:
    """What `n_images` decoded uint8 RGB images at `image_size` px take in a cache."""
    return n_images * image_size * image_size * 3


def choose_cache(mode: str, n_images: int, image_size: int, available: int | None = None) -> str:
    """The cache a dataset uses: `mode` itself, or for "auto" "memory" when the decoded images fit
    in MEMORY_SHARE of the available memory (`available` bytes, else `available_memory()`) and
    "disk" otherwise. Logs the choice."""
    if mode not in CACHE_MODES:
        raise ValueError(f"unknown cache mode {mode!r}; expected one of {', '.join(CACHE_MODES)}")
    size = decoded_bytes(n_images, image_size)
    if mode != "auto":
        log.debug("cache %s for %d images at %dpx (%.2f GB decoded)", mode, n_images, image_size,
                  size / 1e9)
        return mode
    available = available_memory() if available is None else available
    chosen = "memory" if size <= MEMORY_SHARE * available else "disk"
    log.info("cache auto -> %s: %d images at %dpx take %.2f GB decoded, %.2f GB of memory "
             "available (memory up to %d%% of it)", chosen, n_images, image_size, size / 1e9,
             available / 1e9, MEMORY_SHARE * 100)
    return chosen


def disk_cache_prefix(cache_dir: str | Path, paths: Sequence[str], labels: np.ndarray,
                      image_size: int) -> Path:
    """The tf.data file cache of these images: named by a hash of the paths, their sizes and
    modification times, the labels and the size, so changed data gets a fresh cache. Leftovers of
    an interrupted write (a lock file and no index) are removed first."""
    digest = hashlib.sha256(f"{image_size}|{labels.tobytes().hex()}".encode())
    for p in paths:
        st = os.stat(p)
        digest.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / f"{image_size}px-{len(paths)}-{digest.hexdigest()[:16]}"
    if not prefix.with_name(prefix.name + ".index").is_file():
        stale = sorted(folder.glob(prefix.name + "*"))
        if stale:
            log.warning("removing an unfinished disk cache (%s): a run stopped while writing it",
                        ", ".join(p.name for p in stale))
            for p in stale:
                p.unlink()
    log.info("disk cache of %d images at %dpx: %s", len(paths), image_size, prefix)
    return prefix


def labelled_paths(csv: str | Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """A manifest's absolute image paths and their label ids in `classes` order."""
    df = read_manifest(csv)
    if df.empty:
        raise DataError(f"manifest {csv} has no rows: no images to read")
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(df["class"]) - set(index))
    if unknown:
        raise DataError(f"manifest {csv} has class(es) {short_list(map(repr, unknown))} that are "
                        f"not in the labels ({short_list(classes)}); re-run `dvc repro split`")
    return list(df["path"]), np.array([index[c] for c in df["class"]], dtype=np.int32)


def dataset_from_manifest(csv: str | Path, classes: Sequence[str], image_size: int,
                          preprocess: str, batch_size: int, *, shuffle: bool = False,
                          seed: int = 0, cache: bool | str = True) -> tf.data.Dataset:
    """`make_dataset` over the rows of a manifest CSV, labels from `classes` (index = label id)."""
    paths, labels = labelled_paths(csv, classes)
    return make_dataset(paths, labels, image_size, preprocess, batch_size,
                        shuffle=shuffle, seed=seed, cache=cache)


def load_images(paths: Sequence[str], image_size: int, batch_size: int = 64) -> np.ndarray:
    """Decode and resize images into one uint8 array [n, s, s, 3], exactly as `make_dataset` does."""
    paths = [str(p) for p in paths]
    _check_inputs(paths, np.zeros(len(paths), np.int32), batch_size)
    ds = (tf.data.Dataset.from_tensor_slices(paths)
          .map(lambda p: decode_resize(p, image_size), num_parallel_calls=AUTOTUNE,
               deterministic=True)
          .batch(batch_size).prefetch(AUTOTUNE))
    chunks = [batch.numpy() for batch in tqdm(ds, total=-(-len(paths) // batch_size),
                                              desc="load images", unit="batch", disable=None)]
    return np.concatenate(chunks)


def _check_inputs(paths: list[str], labels: np.ndarray, batch_size: int) -> None:
    if not paths:
        raise DataError("no images to read: the manifest is empty")
    if len(paths) != len(labels):
        raise DataError(f"{len(paths)} image paths but {len(labels)} labels")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"image file not found: {missing[0]}{more}; re-run the stage that wrote it")
