"""Datasets and archive extraction, on real sklearn digits and real image files written here."""

from __future__ import annotations

import math
import shutil
import stat
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from nncf_lossless.archive import safe_extract_zip
from nncf_lossless.data import DIGITS_MEAN, DIGITS_STD, load_dataset
from nncf_lossless.errors import ConfigError, DataError

DIGITS = {"name": "digits", "test_fraction": 0.25, "max_train_samples": None, "max_test_samples": None}


def folder_cfg(path: Path, **overrides) -> dict:
    cfg = {"name": "image_folder", "path": str(path), "image_size": None, "mean": None, "std": None, "augment": True}
    cfg.update(max_train_samples=None, max_test_samples=None, **overrides)
    return cfg


def write_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size: int = 8, mode: str = "RGB") -> Path:
    """``root/{train,test}/<class>/<i>.png`` with distinct random pixels per image."""
    rng = np.random.default_rng(123)
    channels = 3 if mode == "RGB" else 1
    for split in ("train", "test"):
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
                Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(root / split / cls / f"{i}.png")
    return root


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)


def zip_dir(src: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted(src.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(src).as_posix())
    return zip_path


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


# ---------------------------------------------------------------- digits


def test_digits_split_is_stratified_and_fixed():
    a = load_dataset(DIGITS, seed=0)
    b = load_dataset(DIGITS, seed=7)
    assert len(a.train) + len(a.test) == 1797
    assert len(a.test) == math.ceil(0.25 * 1797)
    all_counts = Counter(load_digits().target.tolist())
    test_counts = Counter(a.test.labels.tolist())
    for cls, n in all_counts.items():
        assert abs(test_counts[cls] - 0.25 * n) <= 1, (cls, test_counts[cls], n)
    # The split must not follow the run seed: reference and compressed runs share the test set.
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.class_names == [str(c) for c in range(10)]


def test_digits_constants_match_real_statistics():
    x = load_digits().images / 16
    assert DIGITS_MEAN[0] == pytest.approx(x.mean(), abs=1e-4)
    assert DIGITS_STD[0] == pytest.approx(x.std(), abs=1e-4)


def test_digits_items_are_normalised_and_shaped():
    bundle = load_dataset(DIGITS)
    x, y = stack(bundle.train)
    assert bundle.sample_size == (1, 1, 8, 8)
    assert x.shape == (len(bundle.train), 1, 8, 8) and x.dtype == torch.float32
    assert isinstance(bundle.train[0][1], int)
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    # Calibration is the train set, unaugmented.
    cx, cy = stack(bundle.calibration)
    assert torch.equal(x, cx) and torch.equal(y, cy)
    raw = load_digits()
    first = torch.from_numpy(raw.images / 16).float()
    assert any(torch.allclose(x[0, 0] * DIGITS_STD[0] + DIGITS_MEAN[0], img, atol=1e-5) for img in first)


def test_max_samples_keep_a_fixed_subset():
    cfg = dict(DIGITS, max_train_samples=100, max_test_samples=40)
    torch.manual_seed(1)
    a = load_dataset(cfg)
    torch.manual_seed(2)
    b = load_dataset(cfg)
    assert (len(a.train), len(a.calibration), len(a.test)) == (100, 100, 40)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    full = load_dataset(DIGITS)
    assert not torch.equal(a.test.labels, full.test.labels[:40])  # a random subset, not a prefix


@pytest.mark.parametrize("cfg, error, text", [
    ({"name": "mnist"}, DataError, "dataset.name: unknown dataset 'mnist'"),
    (dict(DIGITS, test_fraction=1.5), ConfigError, "dataset.test_fraction"),
    (dict(DIGITS, max_train_samples=0), ConfigError, "dataset.max_train_samples"),
])
def test_bad_dataset_config(cfg, error, text):
    with pytest.raises(error, match=text):
        load_dataset(cfg)


# ---------------------------------------------------------------- image folders


def test_image_folder_contents_and_normalisation(tmp_path):
    root = write_folder(tmp_path / "ds")
    bundle = load_dataset(folder_cfg(root, augment=False), cache_dir=tmp_path / "cache")
    assert bundle.class_names == ["cat", "dog"]
    assert (len(bundle.train), len(bundle.test)) == (6, 6)
    assert bundle.sample_size == (1, 3, 8, 8)
    assert bundle.test.labels.tolist() == [0, 0, 0, 1, 1, 1]

    train_pixels = np.stack([read_png(p) for p in sorted((root / "train").rglob("*.png"))]) / 255
    assert bundle.mean == pytest.approx(train_pixels.mean(axis=(0, 1, 2)).tolist(), abs=1e-6)
    assert bundle.std == pytest.approx(train_pixels.std(axis=(0, 1, 2)).tolist(), abs=1e-6)

    x, y = bundle.test[4]
    expected = (read_png(root / "test" / "dog" / "1.png") / 255 - bundle.mean) / bundle.std
    assert y == 1
    assert torch.allclose(x, torch.from_numpy(expected.transpose(2, 0, 1)).float(), atol=1e-5)


def test_image_folder_augments_train_only(tmp_path):
    root = write_folder(tmp_path / "ds")
    bundle = load_dataset(folder_cfg(root), cache_dir=tmp_path / "cache")
    torch.manual_seed(0)
    draws = torch.stack([bundle.train[0][0] for _ in range(8)])
    assert draws.shape == (8, 3, 8, 8)
    assert not all(torch.equal(draws[0], d) for d in draws[1:])  # random crops/flips happen
    assert torch.equal(bundle.test[0][0], bundle.test[0][0])
    assert torch.equal(bundle.calibration[0][0], bundle.calibration[0][0])
    # Augmentation draws from the global RNG, so reseeding replays it.
    torch.manual_seed(0)
    assert torch.equal(draws, torch.stack([bundle.train[0][0] for _ in range(8)]))


def test_trivial_augment_changes_pixels_beyond_crop_and_flip(tmp_path):
    root = write_folder(tmp_path / "ds")
    plain = load_dataset(folder_cfg(root), cache_dir=tmp_path / "cache")
    strong = load_dataset(folder_cfg(root, augment="trivial"), cache_dir=tmp_path / "cache")
    # A crop (pad 4) and a flip only move pixels: each draw's values are the image's or padding.
    image = plain.calibration[0][0]
    allowed = set(image.flatten().tolist()) | set(((0 - torch.tensor(plain.mean)) / torch.tensor(plain.std)).tolist())
    torch.manual_seed(0)
    assert all(set(plain.train[0][0].flatten().tolist()) <= allowed for _ in range(16))
    torch.manual_seed(0)
    draws = [strong.train[0][0] for _ in range(16)]
    assert any(not set(d.flatten().tolist()) <= allowed for d in draws)  # colour/contrast ops make new values
    torch.manual_seed(0)
    assert all(torch.equal(d, strong.train[0][0]) for d in draws)  # seeded like the default augmentation
    assert torch.equal(strong.test[0][0], plain.test[0][0])


def test_image_folder_resize_grayscale_and_stat_overrides(tmp_path):
    root = write_folder(tmp_path / "gray", mode="L", size=10)
    bundle = load_dataset(folder_cfg(root, image_size=4, mean=[0.5], std=[0.25]), cache_dir=tmp_path / "cache")
    assert bundle.sample_size == (1, 1, 4, 4)
    assert (bundle.mean, bundle.std) == ([0.5], [0.25])
    with pytest.raises(ConfigError, match="dataset.mean: expected 1 value"):
        load_dataset(folder_cfg(root, mean=[0.5, 0.5, 0.5]), cache_dir=tmp_path / "cache")


def test_zipped_folder_one_level_down_matches_directory(tmp_path):
    root = write_folder(tmp_path / "ds")
    zip_path = zip_dir(root, tmp_path / "ds.zip", prefix="ds/")
    cache = tmp_path / "cache"
    from_dir = load_dataset(folder_cfg(root, augment=False), cache_dir=tmp_path / "cache_dir")
    from_zip = load_dataset(folder_cfg(zip_path, augment=False), cache_dir=cache)
    assert torch.equal(from_zip.train.images, from_dir.train.images)
    assert torch.equal(from_zip.test.labels, from_dir.test.labels)
    assert from_zip.class_names == ["cat", "dog"]

    # The decoded cache is keyed by the archive, so a second load needs no extracted images.
    extracted = [d for d in cache.iterdir() if d.is_dir()]
    assert len(extracted) == 1 and (extracted[0] / ".complete").is_file()
    shutil.rmtree(extracted[0])
    again = load_dataset(folder_cfg(zip_path, augment=False), cache_dir=cache)
    assert torch.equal(again.test.images, from_zip.test.images)
    assert not any(d.is_dir() for d in cache.iterdir())


def test_directory_cache_is_reused_and_invalidated(tmp_path):
    root = write_folder(tmp_path / "ds")
    cache = tmp_path / "cache"
    first = load_dataset(folder_cfg(root), cache_dir=cache)
    (npz,) = cache.glob("*.npz")
    # Tamper with the cache: if the next load decodes the PNGs again, it will not see the 7s.
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["test_images"][:] = 7
    np.savez(npz, **arrays)
    assert torch.all(load_dataset(folder_cfg(root), cache_dir=cache).test.images == 7)
    # Changing an image changes the key, so the images are decoded afresh.
    Image.new("RGB", (8, 8), (1, 2, 3)).save(root / "test" / "cat" / "0.png")
    fresh = load_dataset(folder_cfg(root), cache_dir=cache)
    assert fresh.test.images[0, :, 0, 0].tolist() == [1, 2, 3]
    assert torch.equal(fresh.test.images[1:], first.test.images[1:])


def test_class_mismatch_names_both_folders(tmp_path):
    root = write_folder(tmp_path / "ds")
    (root / "test" / "dog").rename(root / "test" / "bird")
    with pytest.raises(DataError) as err:
        load_dataset(folder_cfg(root), cache_dir=tmp_path / "cache")
    msg = str(err.value)
    assert str(root / "train") in msg and str(root / "test") in msg and "'dog'" in msg and "'bird'" in msg
    assert "\n" not in msg


def test_empty_class_folder(tmp_path):
    root = write_folder(tmp_path / "ds")
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=f"class folder\\(s\\) {root / 'test' / 'dog'}"):
        load_dataset(folder_cfg(root), cache_dir=tmp_path / "cache")


def test_missing_or_unusable_paths(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=f"^dataset.path: {missing} does not exist$"):
        load_dataset(folder_cfg(missing), cache_dir=tmp_path / "cache")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="must contain train/ and test/"):
        load_dataset(folder_cfg(tmp_path / "flat"), cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="dataset.path: required"):
        load_dataset({"name": "image_folder"}, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------- archives


def make_zip(path: Path, members: dict[str, bytes], symlinks: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


# "ok/../inside.txt" would land inside dest, but '..' is refused outright, like absolute names.
@pytest.mark.parametrize(
    "bad", ["../evil.txt", "ok/../../evil.txt", "..\\evil.txt", "ok/../inside.txt", "ABSOLUTE", "C:/evil.txt"]
)
def test_zip_escapes_are_rejected_and_nothing_is_written(tmp_path, bad):
    outside = tmp_path / "out"
    outside.mkdir()
    if bad == "ABSOLUTE":
        bad = str(tmp_path / "abs_evil.txt")
    zip_path = make_zip(tmp_path / "a.zip", {"good.txt": b"ok", bad: b"pwned"})
    dest = outside / "dest"
    with pytest.raises(DataError) as err:
        safe_extract_zip(zip_path, dest)
    assert str(zip_path) in str(err.value) and repr(bad) in str(err.value)
    assert list(outside.iterdir()) == []  # no dest, no temp dir, no escaped file
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "abs_evil.txt").exists()


def test_zip_symlink_member_is_rejected(tmp_path):
    zip_path = make_zip(tmp_path / "a.zip", {"good.txt": b"ok"}, symlinks=("link",))
    with pytest.raises(DataError, match="symlink member 'link'"):
        safe_extract_zip(zip_path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_zip_missing_or_not_a_zip(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "none.zip")):
        safe_extract_zip(tmp_path / "none.zip", tmp_path / "dest")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(DataError, match=f"{tmp_path / 'fake.zip'}: not a zip archive"):
        safe_extract_zip(tmp_path / "fake.zip", tmp_path / "dest")


def test_zip_extraction_is_cached_and_replaces_incomplete_leftovers(tmp_path):
    zip_path = make_zip(tmp_path / "a.zip", {"d/x.txt": b"x", "y.txt": b"y"})
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "stale.txt").write_text("interrupted run")  # no .complete marker
    assert safe_extract_zip(zip_path, dest) == dest
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [".complete", "d", "d/x.txt", "y.txt"]
    (dest / "y.txt").unlink()
    zip_path.write_bytes(b"gone")  # marker present: the archive is not even opened again
    assert safe_extract_zip(zip_path, dest) == dest
    assert not (dest / "y.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip", "dest"]  # no temp dirs left behind
