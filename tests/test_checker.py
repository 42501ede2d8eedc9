"""The device/precision consistency checker, its reports, bundles and CLI, on real OpenVINO CPU.

The models are built with OpenVINO's opset so that the flips are planted exactly: the reference
is the identity on 3 "logits", the compressed model adds +0.5 to class 1, so exactly the samples
whose class-0 lead over class 1 is below 0.5 flip.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

import nncf_lossless
import nncf_lossless.checker
from nncf_lossless.checker.bundle import write_bundle
from nncf_lossless.checker.cli import finish
from nncf_lossless.checker.core import DeviceError, exceeding, load_samples, plan_devices, run_check
from nncf_lossless.checker.ov_runner import compile_ir, infer, infer_async
from nncf_lossless.checker.reports import merge, merged_markdown, to_markdown
from nncf_lossless.cli.main import main
from nncf_lossless.errors import DataError, UserError

PLANTED = [3, 7, 11]


def _save(model: ov.Model, path: Path) -> Path:
    ov.save_model(model, path, compress_to_fp16=False)
    return path


def _linear(path: Path, bias: list[float], features: int = 3) -> Path:
    x = ops.parameter([-1, features], np.float32, name="x")
    weight = np.eye(features, 3, dtype=np.float32)
    out = ops.add(ops.matmul(x, ops.constant(weight), False, False), ops.constant(np.array(bias, dtype=np.float32)))
    return _save(ov.Model([out], [x], "linear"), path)


def _conv(path: Path, seed: int = 0) -> Path:
    """A small random conv classifier (N, 1, 8, 8) -> (N, 10) whose bf16 and f32 results differ."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([-1, 1, 8, 8], np.float32, name="x")
    conv = ops.relu(ops.convolution(x, ops.constant(rng.normal(size=(16, 1, 3, 3)).astype(np.float32)),
                                    [1, 1], [1, 1], [1, 1], [1, 1]))
    pooled = ops.reduce_mean(conv, ops.constant(np.array([2, 3])), False)
    logits = ops.matmul(pooled, ops.constant(rng.normal(size=(16, 10)).astype(np.float32)), False, False)
    return _save(ov.Model([logits], [x], "conv"), path)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("planted")
    rng = np.random.default_rng(0)
    n = 40
    classes = rng.integers(0, 3, n)
    inputs = (5 * np.eye(3)[classes] + rng.uniform(0, 0.1, (n, 3))).astype(np.float32)
    labels = classes.copy()
    for i in PLANTED:  # near-ties: class 0 leads class 1 by 0.2 < 0.5
        inputs[i] = [1.0, 0.8, 0.0]
        labels[i] = 0
    labels[7] = 1  # the reference is wrong on sample 7
    np.savez(d / "data.npz", inputs=inputs, labels=labels)
    return {"dir": d, "ref": _linear(d / "ref.xml", [0, 0, 0]), "comp": _linear(d / "comp.xml", [0, 0.5, 0]),
            "data": d / "data.npz", "inputs": inputs, "labels": labels}


@pytest.fixture(scope="module")
def conv(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("conv")
    inputs = np.random.default_rng(1).normal(size=(200, 1, 8, 8)).astype(np.float32)
    return {"ref": _conv(d / "ref.xml"), "inputs": inputs, "labels": np.zeros(200, dtype=np.int64)}


def test_an_ir_against_itself_in_f32_has_no_flips_and_no_drift(conv):
    report = run_check(conv["ref"], [conv["ref"]], conv["inputs"], conv["labels"], devices=["CPU"], precisions=["f32"])
    (run,) = report["runs"]
    assert (run["precision"], run["mismatches"], run["flips"]) == ("f32", 0, [])
    assert run["drift"]["max_abs_diff"] == 0.0 and run["top_k"]["mean_topk_overlap"] == 1.0
    assert report["reference"]["precision"] == "f32"


def test_finds_exactly_the_planted_flips_with_labels_and_margins(planted):
    report = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                       devices=["CPU"], precisions=["f32"])
    (run,) = report["runs"]
    assert run["mismatch_ids"] == PLANTED and run["mismatches"] == 3
    assert run["mismatches_reference_correct"] == 2  # the reference was wrong on sample 7
    assert run["flip_matrix"][0][1] == 3 and sum(map(sum, run["flip_matrix"])) == 40
    by_id = {f["id"]: f for f in run["flips"]}
    assert (by_id[7]["label"], by_id[7]["reference"], by_id[7]["compressed"]) == (1, 0, 1)
    assert by_id[3]["reference_margin"] == pytest.approx(0.2, abs=1e-5)
    assert by_id[3]["compressed_margin"] == pytest.approx(0.3, abs=1e-5)
    assert run["drift"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-6)
    assert run["top_k"]["reference_top1_in_compressed_topk"] == 1.0
    assert sum(run["margin_histogram"]["flipped"]) == 3 and sum(run["margin_histogram"]["kept"]) == 37
    markdown = to_markdown(report)
    assert "| 7 | 1 | 0 | 1 | 0.2 | 0.3 |" in markdown


def test_bf16_and_f32_are_reported_as_different_precisions(conv):
    default = compile_ir(conv["ref"], "CPU", None).precision
    if default == "f32":
        pytest.skip("this CPU runs f32 by default")
    report = run_check(conv["ref"], [conv["ref"]], conv["inputs"], conv["labels"], devices=["CPU"])
    precisions = {r["requested_precision"]: r["precision"] for r in report["runs"]}
    assert precisions == {"f32": "f32", "default": default}
    runs = {r["requested_precision"]: r for r in report["runs"]}
    assert runs["f32"]["drift"]["max_abs_diff"] == 0.0 < runs["default"]["drift"]["max_abs_diff"]


@pytest.mark.parametrize("precision", ["f32", None])
def test_async_throughput_inference_equals_sync(conv, precision):
    compiled = compile_ir(conv["ref"], "CPU", precision, throughput=True)
    seen = []
    async_logits = infer_async(compiled, conv["inputs"][:101], batch_size=8, progress=seen.append)
    np.testing.assert_array_equal(async_logits, infer(compiled, conv["inputs"][:101], batch_size=8))
    assert sum(seen) == 101


def test_absent_devices_are_listed_and_named_ones_fail_unless_skipped(planted):
    assert plan_devices(None, ["CPU"]) == {"CPU": "available", "GPU": "absent", "NPU": "absent"}
    with pytest.raises(DeviceError, match="GPU not available here"):
        plan_devices(["CPU", "GPU"], ["CPU"])
    report = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                       devices=["CPU", "GPU", "NPU"], precisions=["f32"], skip_missing=True)
    assert report["devices"]["GPU"] == report["devices"]["NPU"] == "absent"
    assert {r["device"] for r in report["runs"]} == {"CPU"}
    assert "| GPU | absent |" in to_markdown(report)


def test_user_errors_are_one_line_and_name_the_culprit(planted, tmp_path):
    args = (planted["inputs"], planted["labels"])
    with pytest.raises(DataError, match=r"missing\.xml is not an existing OpenVINO \.xml"):
        run_check(tmp_path / "missing.xml", [planted["comp"]], *args)
    # (N, 1, 3) output: not a classifier
    x = ops.parameter([-1, 3], np.float32, name="x")
    not_classifier = _save(ov.Model([ops.unsqueeze(x, ops.constant(np.array([1])))], [x]), tmp_path / "seg.xml")
    with pytest.raises(DataError, match=r"seg\.xml output shape .* is not a classifier's") as err:
        run_check(planted["ref"], [not_classifier], *args)
    assert "\n" not in str(err.value)
    wide = _linear(tmp_path / "wide.xml", [0, 0, 0], features=4)
    with pytest.raises(DataError, match=r"wide\.xml: input shape \[-1, 4\] does not take samples of shape \[3\]"):
        run_check(planted["ref"], [wide], *args)
    with pytest.raises(DataError, match=r"ref\.xml: input shape \[-1, 3\] does not take samples of shape \[5\]"):
        run_check(planted["ref"], [planted["comp"]], np.zeros((4, 5), np.float32), np.zeros(4))
    np.savez(tmp_path / "bad.npz", x=np.zeros(3))
    with pytest.raises(DataError, match=r"bad\.npz has no 'inputs' array"):
        load_samples(tmp_path / "bad.npz")


def test_cli_gate_exit_codes_and_outputs(planted, tmp_path, capsys):
    base = ["check", "--reference", str(planted["ref"]), "--compressed", str(planted["comp"]),
            "--data", str(planted["data"]), "--devices", "CPU", "--precisions", "f32"]
    assert main([*base, "--max-mismatches", "3", "--output-dir", str(tmp_path / "ok")]) == 0
    assert main([*base, "--max-mismatches", "2", "--output-dir", str(tmp_path / "gate")]) == 1
    assert "3 mismatches > 2" in capsys.readouterr().err
    report = json.loads((tmp_path / "ok" / "consistency.json").read_text())
    assert report["runs"][0]["mismatch_ids"] == PLANTED == report["runs"][0]["throughput"]["mismatch_ids"]
    assert main([*base, "--streams", "one", "--output-dir", str(tmp_path / "one")]) == 0
    assert "throughput" not in json.loads((tmp_path / "one" / "consistency.json").read_text())["runs"][0]
    assert (tmp_path / "ok" / "consistency.md").is_file() and list((tmp_path / "ok" / "plots").glob("*.png"))
    assert main([*base, "--devices", "CPU", "GPU", "--output-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --devices: GPU not available") and err.count("\n") == 1
    assert main([*base, "--devices", "CPU", "GPU", "--skip-missing", "--output-dir", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "consistency.json").read_text())["devices"]["GPU"] == "absent"
    assert main(["check", "--reference", str(tmp_path / "nope.xml"), "--compressed", str(planted["comp"]),
                 "--data", str(planted["data"])]) == 2


def test_merge_reports_from_two_machines(planted, tmp_path):
    report = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                       devices=["CPU"], precisions=["f32"])
    other = json.loads(json.dumps(report))
    other["host"], other["devices"] = "gpu-box", {"CPU": "available", "GPU": "available", "NPU": "absent"}
    other["runs"].append({**other["runs"][0], "device": "GPU", "requested_precision": "default", "precision": "f16"})
    for i, r in enumerate((report, other)):
        (tmp_path / f"{i}.json").write_text(json.dumps(r))
    assert main(["merge-reports", str(tmp_path / "0.json"), str(tmp_path / "1.json"),
                 "--output-dir", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "merged.json").read_text())
    assert [(r["host"], r["device"], r.get("precision", r.get("status"))) for r in merged["rows"]] == [
        (report["host"], "CPU", "f32"), (report["host"], "GPU", "absent"), (report["host"], "NPU", "absent"),
        ("gpu-box", "CPU", "f32"), ("gpu-box", "GPU", "f16"), ("gpu-box", "NPU", "absent")]
    assert "| gpu-box | comp.xml | GPU | f16 (asked default) |" in merged_markdown(merged)
    with pytest.raises(DataError, match="not a consistency report"):
        merge([{"x": 1}], ["junk.json"])


def _bare_venv(root: Path) -> Path:
    """A virtualenv whose site-packages holds only openvino (+ its telemetry dependency) and numpy."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python*/site-packages"))
    import numpy as _np
    import openvino as _ov

    installed = Path(_ov.__file__).parents[1]
    for name in ("openvino", "openvino_telemetry", "numpy", "numpy.libs"):
        if (installed / name).exists():
            (site / name).symlink_to(installed / name)
    for info in [*installed.glob("openvino-*.dist-info"), *installed.glob("numpy-*.dist-info")]:
        (site / info.name).symlink_to(info)
    assert Path(_np.__file__).parents[1] == installed
    return root / "bin" / "python"


def test_bundle_checker_runs_in_a_venv_with_only_openvino_and_numpy(planted, tmp_path):
    script = write_bundle(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"], tmp_path / "bundle")
    python = _bare_venv(tmp_path / "venv")
    probe = subprocess.run([str(python), "-c", "import torch"], check=False, capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    proc = subprocess.run([str(python), str(script), "--devices", "CPU", "GPU", "--skip-missing", "--precisions",
                           "f32", "default", "--output-dir", str(tmp_path / "out"), "--max-mismatches", "3"],
                          check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    remote = json.loads((tmp_path / "out" / "consistency.json").read_text())
    stored = np.load(tmp_path / "bundle" / "reference_outputs.npz")["logits"]
    local = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                      devices=["CPU", "GPU"], precisions=["f32", "default"], skip_missing=True,
                      reference_logits=stored)

    def strip(report: dict) -> dict:
        return {**report, "runs": [{k: v for k, v in r.items() if k not in ("model", "images_per_second")}
                                   for r in report["runs"]], "reference": {**report["reference"], "path": None}}

    assert strip(remote) == strip(local)
    assert remote["reference_reproduction"]["mismatches"] == 0 and remote["devices"]["GPU"] == "absent"
    assert not (tmp_path / "out" / "plots").exists()  # no matplotlib in the venv: plots are optional


def test_deploy_sample_classifies_an_npz(planted):
    script = Path(__file__).resolve().parents[1] / "samples" / "deploy_openvino.py"
    proc = subprocess.run([sys.executable, str(script), "--model", str(planted["comp"]), "--npz", str(planted["data"])],
                          check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 40 and lines[3].startswith("#3: 1 (") and lines[0].startswith(f"#0: {planted['labels'][0]} (")


def test_the_checker_subpackage_imports_in_a_venv_with_only_openvino_and_numpy(tmp_path):
    python = _bare_venv(tmp_path / "venv")
    root = Path(nncf_lossless.__file__).parents[1]
    code = ("import sys, nncf_lossless.checker as c; c.run_check; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'nncf', 'sklearn')); "
            "assert not bad, bad")
    proc = subprocess.run([str(python), "-c", code], check=False, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr


def test_the_bundle_ships_the_checker_subpackage_as_it_is(planted, tmp_path):
    write_bundle(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"], tmp_path / "bundle")
    source = Path(nncf_lossless.checker.__file__).parent
    shipped = tmp_path / "bundle" / "nncf_lossless_checker"
    names = sorted(p.name for p in source.glob("*.py"))
    assert names == sorted(p.name for p in shipped.glob("*.py")) and "core.py" in names
    assert all((source / n).read_bytes() == (shipped / n).read_bytes() for n in names)


def test_merged_rows_name_their_report_so_one_hosts_reports_differ(planted, tmp_path):
    report = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                       devices=["CPU"], precisions=["f32"])
    paths = [tmp_path / "before" / "consistency.json", tmp_path / "after" / "consistency.json"]
    for path in paths:
        path.parent.mkdir()
        path.write_text(json.dumps(report))
    assert main(["merge-reports", *map(str, paths), "--output-dir", str(tmp_path / "m")]) == 0
    markdown = (tmp_path / "m" / "merged.md").read_text()
    assert markdown.splitlines()[2].startswith("| report | host |")
    cpu_rows = [line for line in markdown.splitlines() if "| CPU | f32 |" in line]
    assert len(cpu_rows) == 2 and len(set(cpu_rows)) == 2
    assert cpu_rows[0].startswith(f"| {paths[0]} | {report['host']} |")
    assert cpu_rows[1].startswith(f"| {paths[1]} | {report['host']} |")


def test_the_flip_heatmap_says_no_flips_when_there_are_none(planted, conv):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nncf_lossless.checker.plots import run_figure

    clean = run_check(conv["ref"], [conv["ref"]], conv["inputs"], conv["labels"], devices=["CPU"], precisions=["f32"])
    flipped = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                        devices=["CPU"], precisions=["f32"])
    for report, has_flips in ((clean, False), (flipped, True)):
        fig = run_figure(report["runs"][0], plt, np)
        texts = [t.get_text() for t in fig.axes[0].texts]
        # A colour bar is an axes of its own: only a heatmap with flips gets one.
        assert (len(fig.axes), "no flips" in texts) == ((4, False) if has_flips else (3, True))
        plt.close(fig)


def test_mismatches_are_counted_with_one_stream_and_again_with_throughput_streams(planted):
    report = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                       devices=["CPU"], precisions=["f32"])
    (run,) = report["runs"]
    assert run["streams"] == report["reference"]["streams"] == 1
    parallel = compile_ir(planted["comp"], "CPU", "f32", throughput=True)
    assert run["throughput"]["streams"] == parallel.streams >= 1
    assert run["throughput"]["mismatch_ids"] == run["mismatch_ids"] == PLANTED
    assert run["throughput"]["labels_differ_from_one_stream"] == 0
    one = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                    devices=["CPU"], precisions=["f32"], streams="one")
    assert "throughput" not in one["runs"][0] and one["runs"][0]["mismatch_ids"] == PLANTED
    with pytest.raises(UserError, match="--streams: 'two' is not one of both, one"):
        run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"], streams="two")


def test_the_gate_takes_the_worse_of_one_stream_and_throughput(planted, tmp_path, capsys):
    """OpenVINO once gave a 4-bit IR other labels with two streams: a report where that happened fails the gate."""
    report = run_check(planted["ref"], [planted["comp"]], planted["inputs"], planted["labels"],
                       devices=["CPU"], precisions=["f32"])
    assert exceeding(report, 3) == []
    broken = copy.deepcopy(report)
    broken["runs"][0]["throughput"].update(mismatches=9, labels_differ_from_one_stream=6)
    assert exceeding(broken, 3) == broken["runs"]
    assert "**6 labels differ from 1 stream**" in to_markdown(broken)
    args = argparse.Namespace(output_dir=tmp_path / "out", max_mismatches=3)
    assert finish(broken, args) == 1
    assert "9 mismatches with THROUGHPUT streams > 3" in capsys.readouterr().err
