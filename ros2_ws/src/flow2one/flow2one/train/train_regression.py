"""Train the MSE regression baseline (same U-Net, no time input) on an episode dataset: the
collapse baseline. Writes a checkpoint directory; TensorBoard logs go to OUT/tb; --resume continues.
"""

from __future__ import annotations

import argparse

from flow2one.train import fit_cli

add_arguments = fit_cli.add_arguments


def main(args: argparse.Namespace) -> int:
    return fit_cli.run(args, "regression")
