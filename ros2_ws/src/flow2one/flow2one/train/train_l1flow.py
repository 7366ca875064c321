"""Train L1 Sample Flow (x-prediction with an L1 loss, 2-step sampler) on an episode dataset.
Writes a checkpoint directory; TensorBoard logs go to OUT/tb; --resume continues.
"""

from __future__ import annotations

import argparse

from flow2one.train import fit_cli

add_arguments = fit_cli.add_arguments


def main(args: argparse.Namespace) -> int:
    return fit_cli.run(args, "l1flow")
