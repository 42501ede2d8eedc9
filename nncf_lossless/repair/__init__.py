"""Flip repair on the IR: the fewest quantizer groups of a compressed IR put back in float so that its
labels disagree with the FP32 reference IR's on at most a budget of validation samples.

Needs ``openvino``, ``numpy`` and NNCF's OpenVINO helpers (no training code, nothing of ours that
imports torch). :func:`~nncf_lossless.repair.run.repair` is the whole job; ``cli`` the command.
"""
