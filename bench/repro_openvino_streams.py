"""Does an IR's output on OpenVINO CPU depend on the number of streams? One JSON line per configuration.

    python bench/repro_openvino_streams.py --reference R.xml --compressed C.xml --data test.npz [--samples 2000] [--busy 1]

Found on the 4-bit PTQ IR of ``bench/repair.py`` (AMD EPYC, avx512_vnni + avx512_bf16, no AMX, OpenVINO
2026.4.1), f32, 2,000 test images: one stream (one or two threads, or the LATENCY hint) flips 127 labels
against the reference, the same 127 as the PyTorch model the IR was exported from (0 disagreements).
``NUM_STREAMS 2`` flipped 1,100; the THROUGHPUT hint 1,187 in one process and 127 in the next; two
streams in a process that had imported torch first, 127. Within one compiled model the labels repeat, so
the error is fixed at compile time: a race on state the streams share is our guess, not verified. On all
10,000 test images, in a later process: 1,077 flips with one stream, ``NUM_STREAMS 2`` or LATENCY, 8,063 with
THROUGHPUT, whose compiled model reports the same properties as ``NUM_STREAMS 2`` but for the hint. The
checker now counts with one stream and again with THROUGHPUT (1,080 and 8,061 for this IR).

It depends on load: on an idle machine (2 cores) every configuration flipped the correct 127 (three runs,
2,000 images) or 1,077 (one run, 10,000); with one busy process beside it (``--busy 1``, or a busy loop
started by hand) ``NUM_STREAMS 2`` was wrong in 4 runs of 4 and THROUGHPUT in 3 of 4 (1,100 of 2,000, or
8,063 of 10,000).
Load changes the threads' timing, not the arithmetic: a race between the streams, decided when the first
requests run and then fixed for that compiled model.
The reference IR and the QAT IRs of ``bench/flip_first.py`` showed no such spread as far as measured.

Each output line: the configuration, the streams it got, the flips against the reference (compiled with
one stream, f32), and whether a second pass over the same compiled model repeats them.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from pathlib import Path

import numpy as np
import openvino as ov

CONFIGS = [{"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": 1}, {"NUM_STREAMS": 1}, {"NUM_STREAMS": 2},
           {"PERFORMANCE_HINT": "LATENCY"}, {"PERFORMANCE_HINT": "THROUGHPUT"}]


def labels(compiled: ov.CompiledModel, x: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate([compiled(x[i:i + batch])[0] for i in range(0, len(x), batch)]).argmax(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True)
    p.add_argument("--compressed", required=True)
    p.add_argument("--data", required=True, help=".npz with 'inputs'")
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--busy", type=int, default=0, help="busy-loop processes to run beside it (the error needs load)")
    a = p.parse_args()
    for flag in ("reference", "compressed", "data"):
        if not Path(getattr(a, flag)).is_file():
            p.error(f"--{flag}: no such file {getattr(a, flag)}")
    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(a.busy)]
    for proc in busy:
        proc.start()
    core = ov.Core()
    x = np.load(a.data)["inputs"][: a.samples]
    ref = labels(core.compile_model(a.reference, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": 1}), x)
    for config in CONFIGS:
        compiled = core.compile_model(a.compressed, "CPU", {"INFERENCE_PRECISION_HINT": "f32", **config})
        first, second = labels(compiled, x), labels(compiled, x)
        print(json.dumps({"config": config, "streams": compiled.get_property("NUM_STREAMS"),
                          "flips": int((first != ref).sum()), "repeatable": bool((first == second).all()),
                          "samples": len(x), "busy_processes": a.busy, "openvino": ov.__version__}), flush=True)
    for proc in busy:
        proc.terminate()


def _spin() -> None:
    while True:
        pass


if __name__ == "__main__":
    main()
