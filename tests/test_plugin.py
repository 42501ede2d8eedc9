"""A third-party algorithm installed as its own package (samples/plugin_example) is found through the
``nncf_lossless.algorithms`` entry point, validated without torch, and trains; a broken plugin is one error line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, digits_config

PROBE = ("import sys; from nncf_lossless.cli.main import main; rc = main(sys.argv[1:]); "
         "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr); sys.exit(rc)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The example plugin pip-installed (offline, no deps) into its own directory."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    shutil.copytree(REPO / "samples" / "plugin_example", source)  # the build writes into its source tree
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, capture_output=True)
    return target


def _run(args, *paths, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def _config(tmp_path, **overrides):
    raw = digits_config(compression=[{"algorithm": "quantization", "subset_size": 64},
                                     {"algorithm": "logit_l2", "weight": 0.5}], **overrides)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return path


def test_validate_config_lists_the_plugin_entry_without_importing_torch(site, tmp_path):
    result = _run(["-c", PROBE, "validate-config", str(_config(tmp_path))], site)
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["compression"][1]
    assert entry == {"algorithm": "logit_l2", "weight": 0.5, "until_epoch": None}, "the plugin's schema filled the default"
    assert "torch not imported" in result.stderr


def test_the_plugin_is_named_among_the_known_algorithms(site, tmp_path):
    path = tmp_path / "typo.json"
    path.write_text(json.dumps(digits_config(compression=[{"algorithm": "logit_l3"}])))
    result = _run(["-m", "nncf_lossless", "validate-config", str(path)], site)
    assert result.returncode == 2
    assert "known: frozen_bn, hint_distillation, label_preserving_distillation, logit_l2, multi_bit, pruning" in result.stderr


def test_the_plugin_schema_and_check_reject_bad_values(site, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(digits_config(compression=[{"algorithm": "logit_l2", "weight": 0, "until_epoch": 2}])))
    result = _run(["-m", "nncf_lossless", "validate-config", str(path)], site)
    assert result.returncode == 2 and result.stderr.strip() == "error: compression[0].until_epoch: has no effect with weight 0"


def test_a_short_train_run_uses_the_plugin_loss(site, tmp_path):
    out = tmp_path / "run"
    result = _run(["-m", "nncf_lossless", "train", "--config", str(_config(tmp_path)), "--output-dir", str(out),
                   "--set", "training.epochs=1", "--set", "training.reference.epochs=2", "--set", "export.enabled=false"], site)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads((out / "results.json").read_text())["statistics"]
    assert stats["logit_l2"]["terms_added"] > 0 and stats["quantization"]["num_quantizers"] > 0


def test_validate_config_of_every_shipped_config_imports_no_torch():
    probe = ("import sys; from nncf_lossless.cli.main import main; "
             "codes = [main(['validate-config', p]) for p in sys.argv[1:]]; "
             "print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr); sys.exit(max(codes))")
    result = _run(["-c", probe, *map(str, sorted((REPO / "configs").glob("*.json")))])
    assert result.returncode == 0, result.stderr
    assert "torch not imported" in result.stderr


def test_a_broken_plugin_is_one_error_line_naming_it(tmp_path):
    dist = tmp_path / "site" / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[nncf_lossless.algorithms]\nbroken = no_such_module_here:ENTRY\n")
    config = tmp_path / "c.json"
    config.write_text(json.dumps(digits_config()))
    result = _run(["-m", "nncf_lossless", "validate-config", str(config)], tmp_path / "site")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: plugin 'broken' (no_such_module_here:ENTRY") and "No module named" in line
