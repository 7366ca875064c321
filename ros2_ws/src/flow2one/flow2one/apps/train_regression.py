"""Train the MSE regression baseline (same U-Net, no time input) on an episode dataset: the
collapse baseline. Writes a checkpoint directory; TensorBoard logs go to OUT/tb; --resume continues.
"""

from __future__ import annotations

import argparse

from flow2one.apps import _fit

add_arguments = _fit.add_arguments


def main(args: argparse.Namespace) -> int:
    return _fit.run(args, "regression")
