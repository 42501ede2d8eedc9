"""Datasets for training, evaluation and calibration.

:func:`load_dataset` turns the config's ``dataset`` section into a :class:`DataBundle`. Every
split is an :class:`ImageTensorDataset`: raw pixels in one integer tensor, normalised per item.
Splits and subsets never depend on a run's seed, so a reference run and a compressed run built
from the same config see exactly the same train and test samples.

``dataset.validation`` carves a validation split out of the training split *before* anything else
(``max_train_samples``, calibration), or reads one from a separate folder/zip: it is never trained
on. Checkpoint selection and tuning score on it; the test split is only reported.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nncf_lossless.archive import safe_extract_zip
from nncf_lossless.checker.atomic import atomic_write
from nncf_lossless.errors import ConfigError, DataError

DEFAULT_CACHE_DIR = Path("~/.cache/nncf_lossless")

# Per-channel statistics of sklearn's load_digits() pixels divided by 16, over all 1797 images:
#   x = load_digits().images / 16; x.mean() -> 0.30526..., x.std() -> 0.37605...
DIGITS_MEAN = [0.30526]
DIGITS_STD = [0.37605]

# Part of every decoded-image cache key: bump it when decoding changes so stale caches are ignored.
_CACHE_VERSION = 1
_CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels", "class_names")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


class ImageTensorDataset(Dataset):
    """Images in one integer tensor ``N x C x H x W`` with integer labels ``N``.

    Item ``i`` is ``(x, y)``: ``x`` is a float32 ``C x H x W`` tensor, ``(pixels * scale - mean) / std``
    per channel, and ``y`` an ``int``. ``transform``, if given, maps the raw integer image to another
    one before scaling; random transforms draw from torch's global RNG, which the trainer seeds
    and checkpoints.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: list[float],
        std: list[float],
        *,
        scale: float = 1 / 255,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected N x C x H x W images and N labels, got {tuple(images.shape)} and {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.scale = scale
        self.transform = transform
        self._mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.images[index]
        if self.transform is not None:
            x = self.transform(x)
        x = (x.to(torch.float32) * self.scale - self._mean) / self._std
        return x, int(self.labels[index])


@dataclass(frozen=True)
class DataBundle:
    """Everything the trainer needs from a dataset.

    ``train`` may augment; ``test``, ``calibration`` (the train images without augmentation) and
    ``validation`` (``None`` without ``dataset.validation``) are deterministic. ``mean``/``std``
    apply per channel to pixels scaled to [0, 1]; ``sample_size`` is ``(1, C, H, W)``.

    ``split_ids`` names every sample of ``train``/``validation``/``test`` by one integer in a
    space shared by the splits (a sample's position in the source: the training folder's images
    first, then the test folder's, then a separate validation folder's; for digits, its index in
    ``load_digits()``), so disjointness can be checked. ``validation_info`` describes the
    validation split for ``results.json`` (``None`` without one).
    """

    train: Dataset
    test: Dataset
    calibration: Dataset
    class_names: list[str]
    mean: list[float]
    std: list[float]
    sample_size: tuple[int, ...]
    validation: Dataset | None = None
    split_ids: dict[str, np.ndarray] | None = None
    validation_info: dict[str, Any] | None = None


def load_dataset(cfg: dict[str, Any], *, seed: int = 0, cache_dir: Path | None = None) -> DataBundle:
    """Build the datasets described by the config's ``dataset`` section.

    ``name`` is ``"digits"`` (sklearn's bundled 8x8 digits, split with ``test_fraction``,
    stratified, fixed ``random_state=0``) or ``"image_folder"`` (``path`` to a directory or ``.zip``
    holding ``train/<class>/*`` and ``test/<class>/*``, possibly one level down). Decoded images
    and extracted archives are cached under ``cache_dir`` (default ``~/.cache/nncf_lossless``).
    ``max_train_samples``/``max_test_samples`` keep a fixed (seed 0) random subset.

    ``seed`` is accepted for the caller's convenience but nothing here depends on it: splits and
    subsets are fixed, and augmentation draws from torch's global RNG, which the caller seeds.
    Problems the user can fix raise :class:`DataError` or :class:`ConfigError` naming the key or path.
    """
    del seed
    if not isinstance(cfg, dict):
        raise ConfigError("dataset: expected a mapping")
    name = cfg.get("name")
    cache = Path(cache_dir if cache_dir is not None else DEFAULT_CACHE_DIR).expanduser()
    if name == "digits":
        train_images, train_labels, test_images, test_labels, class_names = _load_digits(cfg)
        train_ids, test_ids = _digits_ids(cfg)
        scale, default_stats, augment = 1 / 16, (DIGITS_MEAN, DIGITS_STD), False
    elif name == "image_folder":
        train_images, train_labels, test_images, test_labels, class_names = _load_image_folder(cfg, cache)
        train_ids, test_ids = torch.arange(len(train_labels)), len(train_labels) + torch.arange(len(test_labels))
        scale, default_stats, augment = 1 / 255, None, cfg.get("augment", True)
    else:
        raise DataError(f"dataset.name: unknown dataset {name!r}; known: digits, image_folder")

    val = _validation_split(cfg.get("validation"), train_images, train_labels, train_ids, test_images, test_ids,
                            class_names, cache, next_id=len(train_labels) + len(test_labels))
    if val is not None:
        keep = val.pop("keep")
        train_images, train_labels, train_ids = train_images[keep], train_labels[keep], train_ids[keep]
    limit = _positive_int(cfg, "max_train_samples")
    train_ids = _subset(train_ids, train_ids, limit)[0]
    train_images, train_labels = _subset(train_images, train_labels, limit)
    test_ids = _subset(test_ids, test_ids, _positive_int(cfg, "max_test_samples"))[0]
    test_images, test_labels = _subset(test_images, test_labels, _positive_int(cfg, "max_test_samples"))
    channels = train_images.shape[1]
    mean, std = default_stats or _channel_stats(train_images, scale)
    mean, std = _stat_override(cfg, "mean", mean, channels), _stat_override(cfg, "std", std, channels)
    if any(s <= 0 for s in std):
        raise ConfigError(f"dataset.std: every value must be positive, got {std}")

    transform = None
    if augment:
        from torchvision.transforms import v2

        steps = [v2.RandomCrop(tuple(train_images.shape[2:]), padding=4), v2.RandomHorizontalFlip()]
        if augment == "trivial":
            # More varied inputs for distillation raise teacher-student agreement (Stanton et al., 2021)
            # while staying natural images, unlike mixup's blends. Needs uint8 pixels, which image folders give.
            steps.append(v2.TrivialAugmentWide())
        transform = v2.Compose(steps)
    ids = {"train": train_ids.numpy(), "test": test_ids.numpy()}
    validation = None
    if val is not None:
        if tuple(val["images"].shape[1:]) != tuple(train_images.shape[1:]):
            raise DataError(f"dataset.validation.path: images are {tuple(val['images'].shape[1:])} (C, H, W), "
                            f"the training images {tuple(train_images.shape[1:])}; set dataset.image_size")
        validation = ImageTensorDataset(val["images"], val["labels"], mean, std, scale=scale)
        ids["validation"] = val["ids"].numpy()
    return DataBundle(
        train=ImageTensorDataset(train_images, train_labels, mean, std, scale=scale, transform=transform),
        test=ImageTensorDataset(test_images, test_labels, mean, std, scale=scale),
        calibration=ImageTensorDataset(train_images, train_labels, mean, std, scale=scale),
        class_names=list(class_names),
        mean=list(mean),
        std=list(std),
        sample_size=(1, *train_images.shape[1:]),
        validation=validation,
        split_ids=ids,
        validation_info=None if val is None else val["info"],
    )


def _validation_split(spec: Any, images: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor,
                      test_images: torch.Tensor, test_ids: torch.Tensor, class_names: list[str], cache: Path,
                      next_id: int) -> dict[str, Any] | None:
    """``dataset.validation``: ``{"fraction": f}`` or ``{"count": n}`` of the training split (seeded by
    ``seed``, stratified by class when every class can give a sample), or ``{"path": folder_or_zip}``
    holding ``<class>/*`` images of the same classes. Returns the split, its info and (for a carved
    split) ``keep``, the training rows that remain."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or sum(k in spec for k in ("fraction", "count", "path")) != 1:
        raise ConfigError("dataset.validation: give exactly one of fraction, count or path")
    seed = spec.get("seed", 0)
    if "path" in spec:
        v_images, v_labels = _load_validation_folder(Path(str(spec["path"])).expanduser(), class_names, cache)
        # A validation folder that repeats test images would select on the test set after all.
        test_hashes = {_image_hash(x) for x in test_images}
        repeated = sum(_image_hash(x) in test_hashes for x in v_images)
        if repeated:
            raise DataError(f"dataset.validation.path: {repeated} of its {len(v_labels)} images are also in the test split")
        v_ids = next_id + torch.arange(len(v_labels))
        info = {"source": f"folder {spec['path']}", "size": len(v_labels)}
        return {"images": v_images, "labels": v_labels, "ids": v_ids, "info": info, "keep": torch.arange(len(labels))}
    n = len(labels)
    if "fraction" in spec:
        count = round(n * spec["fraction"])
        source = f"fraction {spec['fraction']} of the training split"
    else:
        count = spec["count"]
        source = f"{count} images of the training split"
    if not 1 <= count < n:
        raise ConfigError(f"dataset.validation: {count} validation images leave none of the {n} training images (or none are held out)")
    classes = np.unique(labels.numpy())
    stratify = labels.numpy() if count >= len(classes) and n - count >= len(classes) and \
        np.bincount(labels.numpy()).min(initial=n) >= 2 else None
    from sklearn.model_selection import train_test_split

    keep, held = train_test_split(np.arange(n), test_size=count, stratify=stratify, random_state=seed)
    keep, held = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))
    info = {"source": f"{source} (seed {seed}{', stratified' if stratify is not None else ''})", "size": count}
    return {"images": images[held], "labels": labels[held], "ids": ids[held], "info": info, "keep": keep}


def _load_validation_folder(path: Path, class_names: list[str], cache: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.exists():
        raise DataError(f"dataset.validation.path: {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".zip":
        st = path.stat()
        root = safe_extract_zip(path, cache / f"{path.stem}-{_short_hash(path.resolve(), st.st_size, st.st_mtime_ns)}")
    elif path.is_dir():
        root = path
    else:
        raise DataError(f"dataset.validation.path: {path} is neither a directory nor a .zip file")
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "__MACOSX"))]
    if len(subdirs) == 1 and subdirs[0].name not in class_names:
        root = subdirs[0]  # zips often hold one top folder
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    unknown = sorted(set(_class_folders(root)) - set(class_names))
    if unknown:
        raise DataError(f"dataset.validation.path: class folders {unknown} are not training classes")
    samples = make_dataset(str(root), {c: i for i, c in enumerate(class_names)}, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise DataError(f"dataset.validation.path: no images in {root}")
    arrays = [_decode_image(f, None) for f, _ in samples]
    if len({a.shape for a in arrays}) > 1:
        raise DataError(f"dataset.validation.path: images in {root} differ in size")
    images = torch.from_numpy(np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2)))
    return images, torch.tensor([label for _, label in samples], dtype=torch.int64)


def _image_hash(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.numpy().tobytes(), digest_size=16).digest()


def _digits_ids(cfg: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``load_digits()`` indices of the digits train and test rows (the same split as :func:`_load_digits`)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train_idx, test_idx = train_test_split(np.arange(len(target)), test_size=cfg.get("test_fraction", 0.25),
                                           stratify=target, random_state=0)
    return torch.from_numpy(train_idx), torch.from_numpy(test_idx)


_Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, list[str]]


def _load_digits(cfg: dict[str, Any]) -> _Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    test_fraction = cfg.get("test_fraction", 0.25)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ConfigError(f"dataset.test_fraction: must be a number between 0 and 1, got {test_fraction!r}")
    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.uint8)[:, None])  # values 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))
    # random_state is fixed on purpose: every run must be evaluated on the same test set.
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=test_fraction, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    class_names = [str(c) for c in range(10)]
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], class_names


def _load_image_folder(cfg: dict[str, Any], cache_dir: Path) -> _Splits:
    raw_path = cfg.get("path")
    if not isinstance(raw_path, (str, os.PathLike)) or not str(raw_path):
        raise ConfigError("dataset.path: required for dataset 'image_folder' (a directory or a .zip file)")
    path = Path(raw_path).expanduser()
    if not path.exists():
        raise DataError(f"dataset.path: {path} does not exist")
    image_size = _positive_int(cfg, "image_size")

    if path.is_file() and path.suffix.lower() == ".zip":
        st = path.stat()
        source_key = _short_hash(path.resolve(), st.st_size, st.st_mtime_ns)
        npz = cache_dir / f"{path.stem}-{_short_hash(source_key, image_size, _CACHE_VERSION)}.npz"
        # The archive's identity is the key, so a cache hit needs neither extraction nor a file scan.
        arrays = _read_cache(npz)
        if arrays is None:
            root = safe_extract_zip(path, cache_dir / f"{path.stem}-{source_key}")
            train_files, test_files, class_names = _list_splits(*_find_split_dirs(root, path))
            arrays = _decode_splits(train_files, test_files, class_names, image_size)
            _write_cache(npz, arrays)
    elif path.is_dir():
        train_files, test_files, class_names = _list_splits(*_find_split_dirs(path, path))
        # A directory's mtime misses changes inside class folders, so key on every file's stat.
        stats = [(f, st.st_size, st.st_mtime_ns) for f, _ in train_files + test_files for st in [os.stat(f)]]
        npz = cache_dir / f"{path.resolve().name}-{_short_hash(path.resolve(), stats, image_size, _CACHE_VERSION)}.npz"
        arrays = _read_cache(npz)
        if arrays is None:
            arrays = _decode_splits(train_files, test_files, class_names, image_size)
            _write_cache(npz, arrays)
    else:
        raise DataError(f"dataset.path: {path} is neither a directory nor a .zip file")

    t = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "class_names"}
    class_names = [str(c) for c in arrays["class_names"]]
    return t["train_images"], t["train_labels"], t["test_images"], t["test_labels"], class_names


def _find_split_dirs(root: Path, shown: Path) -> tuple[Path, Path]:
    """``root/train`` and ``root/test``, or the same one directory level down (as zips often are)."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / "train", root / "test"
    below = [
        d
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith((".", "__MACOSX")) and (d / "train").is_dir() and (d / "test").is_dir()
    ]
    if len(below) != 1:
        found = "" if not below else f" (found several candidates: {', '.join(d.name for d in below)})"
        raise DataError(f"dataset.path: {shown} must contain train/ and test/ folders, or one folder holding them{found}")
    return below[0] / "train", below[0] / "test"


def _list_splits(train_dir: Path, test_dir: Path) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[str]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    train_classes, test_classes = _class_folders(train_dir), _class_folders(test_dir)
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"dataset.path: class folders differ between {train_dir} and {test_dir} "
            f"(only in train: {only_train}; only in test: {only_test})"
        )
    class_to_idx = {c: i for i, c in enumerate(train_classes)}
    splits = []
    for split_dir in (train_dir, test_dir):
        samples = make_dataset(str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
        empty = sorted(set(train_classes) - {train_classes[i] for _, i in samples})
        if empty:
            raise DataError(
                f"dataset.path: no images ({', '.join(IMG_EXTENSIONS)}) in class folder(s) "
                + ", ".join(str(split_dir / c) for c in empty)
            )
        splits.append(samples)
    return splits[0], splits[1], train_classes


def _class_folders(split_dir: Path) -> list[str]:
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"dataset.path: {split_dir} has no class folders")
    return classes


def _decode_splits(
    train_files: list[tuple[str, int]], test_files: list[tuple[str, int]], class_names: list[str], image_size: int | None
) -> dict[str, np.ndarray]:
    from rich.progress import track

    files = train_files + test_files
    arrays = [_decode_image(f, image_size) for f, _ in track(files, description=f"Decoding {len(files)} images", transient=True)]
    # Mixed grayscale/colour folders become colour; all-grayscale folders stay one channel.
    if any(a.shape[2] == 3 for a in arrays):
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        first = files[0][0]
        odd = next(f for (f, _), a in zip(files, arrays) if a.shape[:2] != arrays[0].shape[:2])
        raise DataError(
            f"dataset.image_size: images differ in size ({first} is {arrays[0].shape[0]}x{arrays[0].shape[1]}, "
            f"{odd} is not); set dataset.image_size to resize them"
        )
    images = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
    labels = np.array([label for _, label in files], dtype=np.int64)
    n = len(train_files)
    return {
        "train_images": images[:n],
        "train_labels": labels[:n],
        "test_images": images[n:],
        "test_labels": labels[n:],
        "class_names": np.array(class_names, dtype=str),
    }


def _decode_image(path: str, image_size: int | None) -> np.ndarray:
    """One image as uint8 ``H x W x C`` with ``C`` 1 (grayscale files) or 3."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in _GRAY_MODES else "RGB")
            if image_size is not None:
                img = img.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as err:
        raise DataError(f"dataset.path: cannot decode image {path} ({err})") from err
    return array[:, :, None] if array.ndim == 2 else array


def _read_cache(npz: Path) -> dict[str, np.ndarray] | None:
    if not npz.is_file():
        return None
    try:
        with np.load(npz, allow_pickle=False) as z:
            return {k: z[k] for k in _CACHE_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # unreadable cache: decode again and overwrite it


def _write_cache(npz: Path, arrays: dict[str, np.ndarray]) -> None:
    # Write then rename, so a concurrent or interrupted run never sees a half-written cache.
    atomic_write(npz, lambda f: np.savez(f, **arrays))


def _short_hash(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def _subset(images: torch.Tensor, labels: torch.Tensor, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or limit >= len(labels):
        return images, labels
    # A private, fixed-seed generator: the subset must not depend on (or disturb) the run's RNG.
    keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:limit].sort().values
    return images[keep], labels[keep]


def _channel_stats(images: torch.Tensor, scale: float) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of ``images * scale``."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    # Chunks of ~4M values keep the float64 copy small even for large images.
    rows = max(1, (1 << 22) // max(1, images[0].numel()))
    for chunk in images.split(rows):
        x = chunk.to(torch.float64) * scale
        total += x.sum(dim=(0, 2, 3))
        total_sq += (x * x).sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    # A constant channel carries no information; dividing it by 1 keeps it finite.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


def _stat_override(cfg: dict[str, Any], key: str, default: list[float], channels: int) -> list[float]:
    value = cfg.get(key)
    if value is None:
        return list(default)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"dataset.{key}: expected a list of numbers, got {value!r}")
    if len(value) != channels:
        raise ConfigError(f"dataset.{key}: expected {channels} value(s), one per image channel, got {len(value)}")
    return [float(v) for v in value]


def _positive_int(cfg: dict[str, Any], key: str) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"dataset.{key}: must be a positive integer or null, got {value!r}")
    return value
