"""Train the Conditional Flow Matching teacher (x-prediction, logit-normal t, time-dependent masking)
on an episode dataset. Writes a checkpoint directory; TensorBoard logs go to OUT/tb; --resume continues.
Multi-GPU: torchrun --nproc_per_node=N -m flow2one.cli train-teacher ... (DDP).
"""

from __future__ import annotations

import argparse

from flow2one.apps import _fit

add_arguments = _fit.add_arguments


def main(args: argparse.Namespace) -> int:
    return _fit.run(args, "teacher")
