"""dataset.validation: a split held out of training (and of a reference the run trains), the only one selection reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import digits_config

from nncf_lossless.config import load_config
from nncf_lossless.data import load_dataset
from nncf_lossless.errors import ConfigError
from nncf_lossless.training import selection as selection_module
from nncf_lossless.training import trainer


@pytest.mark.parametrize("spec, size", [({"fraction": 0.2}, 269), ({"count": 100, "seed": 3}, 100)])
def test_the_validation_split_is_disjoint_from_train_and_test_and_stratified(spec, size):
    data = load_dataset({"name": "digits", "validation": spec, "max_train_samples": 900})
    ids = data.split_ids
    assert len(ids["validation"]) == len(data.validation) == size == data.validation_info["size"]
    assert len(ids["train"]) == len(data.train) == 900 and len(ids["test"]) == len(data.test)
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        assert not np.intersect1d(ids[a], ids[b]).size, (a, b)
    # The ids are load_digits() indices: the split really holds those images.
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images.astype(np.uint8)[:, None])
    assert torch.equal(data.validation.images, images[ids["validation"]])
    assert torch.equal(data.train.images, images[ids["train"]])
    counts = np.bincount(data.validation.labels.numpy(), minlength=10)
    assert counts.max() - counts.min() <= 2 and "stratified" in data.validation_info["source"]


def test_the_split_is_fixed_by_its_seed_and_absent_without_the_key():
    a = load_dataset({"name": "digits", "validation": {"fraction": 0.2}}).split_ids["validation"]
    b = load_dataset({"name": "digits", "validation": {"fraction": 0.2}}).split_ids["validation"]
    c = load_dataset({"name": "digits", "validation": {"fraction": 0.2, "seed": 1}}).split_ids["validation"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    plain = load_dataset({"name": "digits"})
    assert plain.validation is None and len(plain.train) == 1347


def test_a_validation_folder_that_repeats_test_images_is_refused(tmp_path):
    from PIL import Image

    from nncf_lossless.errors import DataError

    for split, value in (("train", 10), ("train", 20), ("test", 30), ("test", 40)):
        for c in ("a", "b"):
            d = tmp_path / "data" / split / c
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), value + (c == "b"), np.uint8)).save(d / f"{value}.png")
    val = tmp_path / "val"
    for c, value in (("a", 50), ("b", 60)):
        (val / c).mkdir(parents=True)
        Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(val / c / "x.png")
    cfg = {"name": "image_folder", "path": str(tmp_path / "data"), "validation": {"path": str(val)}}
    data = load_dataset(cfg, cache_dir=tmp_path / "cache")
    assert len(data.validation) == 2 and data.validation.labels.tolist() == [0, 1]
    assert data.validation_info["source"].startswith("folder")
    Image.fromarray(np.full((4, 4, 3), 30, np.uint8)).save(val / "a" / "copy.png")  # a test image
    with pytest.raises(DataError, match=r"dataset.validation.path: 1 of its 3 images are also in the test split"):
        load_dataset(cfg, cache_dir=tmp_path / "cache")


def test_selection_without_a_validation_split_is_a_one_line_error():
    with pytest.raises(ConfigError) as err:
        load_config(digits_config(training={"select_checkpoint": "fewest_mismatches"}))
    assert str(err.value) == ("training.select_checkpoint: 'fewest_mismatches' needs a validation split "
                              "(dataset.validation); the test set is only reported")
    with pytest.raises(ValueError, match="validation split only"):
        selection_module.CheckpointSelection("fewest_mismatches").offer(
            {"epoch": 1, "split": "test", "mismatches": 0, "compressed_accuracy": 1.0})


class _Watched(torch.utils.data.Dataset):
    """A dataset that logs every read into a shared event list."""

    def __init__(self, inner, name, events):
        self.inner, self.name, self.events = inner, name, events

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.events.append(self.name)
        return self.inner[i]


def test_selection_reads_only_validation_and_the_test_split_only_after_it(tmp_path, monkeypatch):
    """The reference is trained by the run: validation is held out of it too, and results.json says so."""
    events: list[str] = []
    real_load = trainer.load_dataset
    seen: dict = {}

    def load(cfg, seed=0):
        data = real_load(cfg, seed=seed)
        seen["data"] = data
        return type(data)(**{**data.__dict__, "test": _Watched(data.test, "test", events),
                             "validation": _Watched(data.validation, "validation", events),
                             "train": _Watched(data.train, "train", events)})

    real_offer = selection_module.CheckpointSelection.offer

    def offer(self, record):
        events.append(("offer", record["split"], record["epoch"]))
        return real_offer(self, record)

    monkeypatch.setattr(trainer, "load_dataset", load)
    monkeypatch.setattr(selection_module.CheckpointSelection, "offer", offer)
    cfg = digits_config(dataset={"name": "digits", "validation": {"fraction": 0.2}},
                        training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 3e-3,
                                  "select_checkpoint": "fewest_mismatches", "reference": {"epochs": 1, "lr": 3e-3}},
                        export={"enabled": False})
    results = trainer.run(cfg, tmp_path)
    offers = [i for i, e in enumerate(events) if isinstance(e, tuple)]
    assert [events[i] for i in offers] == [("offer", "validation", 1), ("offer", "validation", 2)]
    first_test = events.index("test")
    assert first_test > offers[-1], "the test split was read before selection ended"
    assert "validation" in events[:offers[0]]
    # The reference (trained here) and the fine-tuning only ever read the training split's samples.
    ids = seen["data"].split_ids
    assert not np.intersect1d(ids["train"], ids["validation"]).size
    assert results["validation"] == {"source": "fraction 0.2 of the training split (seed 0, stratified)", "size": 269,
                                     "held_out_of_reference_training": True}
    assert all(h["split"] == "validation" for h in results["history"]) and results["num_samples"] == 450


def test_selection_passes_over_epochs_that_are_not_fully_compressed():
    selection = selection_module.CheckpointSelection("fewest_mismatches")
    assert selection.offer({"epoch": 1, "split": "validation", "mismatches": 9, "compressed_accuracy": 0.9,
                            "fully_compressed": True})
    assert not selection.offer({"epoch": 2, "split": "validation", "mismatches": 0, "compressed_accuracy": 1.0,
                                "fully_compressed": False})
    assert selection.selected_epoch(2) == 1


def test_a_pruning_schedule_is_never_selected_before_it_reaches_its_ratio(tmp_path):
    """Epoch 1 prunes 5% and flips fewer than epoch 2 at 90%: the run must still end pruned at 90%."""
    cfg = digits_config(dataset={"name": "digits", "validation": {"fraction": 0.2}},
                        training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e-3,
                                  "select_checkpoint": "fewest_mismatches", "reference": {"epochs": 3, "lr": 3e-3}},
                        compression=[{"algorithm": "pruning", "ratio": 0.9,
                                      "schedule": {"type": "multistep", "steps": {"0": 0.05, "1": 0.9}}}],
                        export={"enabled": False})
    results = trainer.run(cfg, tmp_path)
    first, second = results["history"]
    assert first["mismatches"] < second["mismatches"], "the premise: the lightly pruned epoch flips fewer"
    assert (first["fully_compressed"], second["fully_compressed"]) == (False, True)
    assert results["selected_epoch"] == 2
    assert results["statistics"]["pruning"]["pruned_ratio"] > 0.85


def test_a_diverging_run_stops_with_a_one_line_error_and_keeps_no_nan_checkpoint(tmp_path):
    cfg = digits_config(training={"seed": 0, "epochs": 2, "batch_size": 64, "lr": 1e30, "momentum": 0.9,
                                  "reference": {"epochs": 1, "lr": 3e-3}},
                        export={"enabled": False})
    with pytest.raises(ConfigError) as err:
        trainer.run(cfg, tmp_path)
    assert str(err.value) == ("training.lr: fine-tuning diverged in epoch 1 (the weights are no longer finite); "
                              "lower the learning rate (1e+30 now)")
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "checkpoint.pt").exists()
