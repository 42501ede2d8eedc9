"""``nncf-lossless``: train, demo, export, data, validate-config, diff-layers, select-hints, check, bundle, repair,
merge-reports.

User errors (:class:`~nncf_lossless.errors.UserError`) print one line, ``error: ...``, and exit
with status 2; anything else is a bug and keeps its traceback. Output piped into a reader that
stops early (``| head``) is a user matter too: one line, status 2, no traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# config needs neither torch nor NNCF: `validate-config` and argument errors stay fast.
from nncf_lossless.config import load_config
from nncf_lossless.errors import UserError

DEMO_CONFIG = "digits_int8.json"
# The demo's test split, written into its run directory for `check` and `bundle --data`.
TEST_NPZ = "test.npz"


def configs_dir() -> Path:
    """The shipped configs (the repository's ``configs/``, linked into the package so wheels carry it)."""
    return Path(__file__).resolve().parents[1] / "configs"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _quiet_third_party_logs()
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return status
    except BrokenPipeError:
        # Python's own exit flush would hit the closed pipe again and print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("error: the output pipe closed before nncf-lossless finished writing (broken pipe)", file=sys.stderr)
        return 2
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nncf-lossless", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train/load the FP32 reference, compress, fine-tune, evaluate, export")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--output-dir", required=True, type=Path)
    p.add_argument("--stop-after-epoch", type=_positive_int, metavar="N",
                   help="end this run after fine-tuning epoch N's checkpoint (a job's time limit); continue with --resume")
    _add_reference_checkpoint(p)
    _add_run_mode(p)
    _add_set(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("demo", help=f"the main job on the bundled digits data ({DEMO_CONFIG})")
    p.add_argument("--output-dir", type=Path, default=Path("nncf-lossless-demo"))
    _add_reference_checkpoint(p)
    _add_run_mode(p)
    _add_set(p)
    # A demo rerun starts over rather than asking; --resume still continues.
    p.set_defaults(func=_demo, overwrite=True)

    p = sub.add_parser("export", help="write reference.xml and compressed.xml from a training checkpoint")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint.pt of a train run")
    p.add_argument("--output-dir", required=True, type=Path)
    _add_set(p)
    p.set_defaults(func=_export)

    p = sub.add_parser("data", help="write a config's test/validation/train split as the .npz that check and bundle read")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--split", required=True, choices=("test", "validation", "train"),
                   help="train: the training images without augmentation")
    p.add_argument("--output", required=True, type=Path, help="the .npz to write ('inputs' float32 normalised, 'labels')")
    _add_set(p)
    p.set_defaults(func=_data)

    p = sub.add_parser("diff-layers", help="compare a compressed PyTorch model with its IR layer by layer")
    p.add_argument("--model", required=True, type=Path,
                   help="a train run directory, its checkpoint.pt, or a config (post-training quantization)")
    p.add_argument("--ir", required=True, type=Path, help="the compressed IR exported from that model")
    p.add_argument("--config", type=Path, help="the config, if not next to the checkpoint")
    p.add_argument("--data", type=Path, help=".npz with an 'inputs' array (default: the config's test split)")
    p.add_argument("--samples", type=_positive_int, default=256, help="how many samples to run (default 256)")
    p.add_argument("--output", type=Path, help="write the full report as JSON here")
    _add_reference_checkpoint(p)
    _add_set(p)
    p.set_defaults(func=_diff_layers)

    p = sub.add_parser("select-hints", help="cluster the FP32 reference's layers and print the hint points (JSON + heatmap)")
    p.add_argument("--config", required=True, type=Path)
    p.add_argument("--output-dir", type=Path, default=Path("hint-points"))
    p.add_argument("--num-points", dest="num_points", type=_positive_int, help="K (default: the entry's num_points, or 3)")
    p.add_argument("--metric", choices=["linear_cka", "rbf_cka", "cca"], help="default: the entry's, or linear_cka")
    p.add_argument("--samples", type=_positive_int, help="teacher inputs to compare layers on (default 1000)")
    _add_reference_checkpoint(p)
    _add_set(p)
    p.set_defaults(func=_select_hints)

    p = sub.add_parser("validate-config", help="check a config and print it with defaults filled in")
    p.add_argument("config", type=Path)
    _add_set(p)
    p.set_defaults(func=_validate)

    # check / bundle / merge-reports need only openvino and numpy (check_cli is torch-free).
    from nncf_lossless.checker import cli as check_cli

    p = sub.add_parser("check", help="label consistency of compressed IRs vs the FP32 reference IR on OpenVINO devices",
                       epilog="exit status: 0 ok, 1 a run exceeds --max-mismatches, 2 a user error")
    check_cli.add_check_arguments(p)
    p.set_defaults(func=check_cli.check_command)

    p = sub.add_parser("bundle", help="a portable checker bundle (IRs, samples, FP32 reference outputs, "
                       "check_bundle.py needing only openvino and numpy) for other machines")
    p.add_argument("--reference", required=True, type=Path, help="the FP32 reference IR (.xml)")
    p.add_argument("--compressed", required=True, type=Path, nargs="+", help="compressed IR(s) (.xml)")
    p.add_argument("--data", required=True, type=Path, help=".npz with 'inputs' (N, ...) float32 and 'labels' (N,)")
    p.add_argument("--output", required=True, type=Path, help="bundle directory to write")
    p.set_defaults(func=_bundle)

    from nncf_lossless.repair import cli as repair_cli

    p = sub.add_parser("repair", help="put the fewest quantizer groups of a compressed IR back in float so that at most N "
                       "validation labels differ from the FP32 reference IR", epilog="exit status: 0 budget met, 1 not met, 2 a user error")
    repair_cli.add_arguments(p)
    p.set_defaults(func=repair_cli.command)

    p = sub.add_parser("merge-reports", help="merge consistency.json reports from several machines into one table")
    p.add_argument("reports", nargs="+", type=Path)
    p.add_argument("--output-dir", type=Path, default=Path("consistency-merged"))
    p.set_defaults(func=check_cli.merge_command)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_run_mode(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in OUTPUT_DIR from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="start over in an OUTPUT_DIR that holds a run")


def _add_reference_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", dest="reference_checkpoint", type=Path, metavar="REF.pt",
                   help="FP32 reference weights (a state dict); skips training the reference. "
                        "Same as --set model.checkpoint=REF.pt")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The config with ``--set`` overrides and, if given, ``--checkpoint`` as ``model.checkpoint``."""
    overrides = list(args.overrides)
    if getattr(args, "reference_checkpoint", None) is not None:
        overrides.append(f"model.checkpoint={args.reference_checkpoint}")
    return load_config(args.config, overrides)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a config value, e.g. --set training.epochs=1 --set compression[0].ratio=0.7")


def _train(args: argparse.Namespace, write_test_split: bool = False) -> int:
    from nncf_lossless.training.trainer import run

    config = config_from_args(args)
    results = run(config, args.output_dir, resume=args.resume,
                  overwrite=args.overwrite, stop_after_epoch=getattr(args, "stop_after_epoch", None))
    # Under torchrun every rank returns; one summary is enough.
    if os.environ.get("RANK", "0") == "0" and "stopped_after_epoch" not in results:
        test_npz = None
        if write_test_split:
            from nncf_lossless.export.split_npz import write_split

            test_npz, _ = write_split(config, "test", args.output_dir / TEST_NPZ)
        _print_summary(results, args.output_dir, test_npz, args.config)
    return 0


def _demo(args: argparse.Namespace) -> int:
    args.config = configs_dir() / DEMO_CONFIG
    return _train(args, write_test_split=True)


def _data(args: argparse.Namespace) -> int:
    from nncf_lossless.export.split_npz import write_split

    path, count = write_split(load_config(args.config, args.overrides), args.split, args.output)
    print(f"{args.split} split: {count} samples -> {path} (inputs float32 normalised, labels)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from nncf_lossless.training.trainer import export_from_checkpoint

    paths = export_from_checkpoint(load_config(args.config, args.overrides), args.checkpoint, args.output_dir)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


def _diff_layers(args: argparse.Namespace) -> int:
    from nncf_lossless.cli.diff_layers import run_diff_layers

    return run_diff_layers(args)


def _select_hints(args: argparse.Namespace) -> int:
    from nncf_lossless.cli.select_hints import run_select_hints

    return run_select_hints(args)


def _validate(args: argparse.Namespace) -> int:
    import json

    print(json.dumps(load_config(args.config, args.overrides), indent=2))
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from nncf_lossless.checker.bundle import write_bundle
    from nncf_lossless.checker.core import load_samples

    inputs, labels = load_samples(args.data)
    script = write_bundle(args.reference, args.compressed, inputs, labels, args.output)
    print(f"bundle: {args.output}; on the target machine run: python {script.name} --output-dir report")
    return 0


def _print_summary(results: dict[str, Any], out: Path, test_npz: Path | None = None, config: Path | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{results['num_samples']} test samples; the reference always runs in f32",
                  caption="mismatches: compressed label != reference label; ref-right: of those, the reference was right")
    for col in ("run", "precision", "ref acc", "comp acc", "mismatches", "ref-right"):
        table.add_column(col, justify="right" if col != "run" else "left")

    def row(name: str, precision: str, r: dict[str, Any]) -> None:
        table.add_row(name, precision, f"{100 * r['reference']['accuracy']:.2f}%", f"{100 * r['compressed']['accuracy']:.2f}%",
                      str(r["mismatches"]), str(r["mismatches_reference_correct"]))

    row("PyTorch", "f32", results)
    for r in results.get("openvino", {}).get("runs", []):
        row(f"OpenVINO {r['device']}", r["precision"], r)
    Console().print(table)
    print(f"PyTorch flips (reference -> compressed class: count): {_flips(results['flip_matrix']) or 'none'}")
    print(f"results: {out / 'results.json'}")
    ir = results.get("openvino", {})
    if test_npz is not None:
        print(f"test split: {test_npz} (inputs + labels, the --data of check and bundle)")
    elif ir:
        print(f"test split for check/bundle --data: nncf-lossless data --config {config} --split test --output {out / TEST_NPZ}")
    if ir:
        print(f"next: nncf-lossless check --reference {ir['reference_ir']} --compressed {ir['compressed_ir']} "
              f"--data {test_npz or out / TEST_NPZ}")


def _flips(matrix: list[list[int]]) -> str:
    """The off-diagonal entries of a flip matrix, most frequent first."""
    cells = [(n, i, j) for i, row in enumerate(matrix) for j, n in enumerate(row) if i != j and n]
    return ", ".join(f"{i}->{j}: {n}" for n, i, j in sorted(cells, key=lambda c: (-c[0], c[1], c[2])))


def _quiet_third_party_logs() -> None:
    # torch warns about a missing CUDA runtime on every CPU-only import of NNCF's extensions.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    # torchao (imported by nncf.strip) registers an Enum with torch's pytree, which warns each time.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


if __name__ == "__main__":
    sys.exit(main())
