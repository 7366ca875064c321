"""Train L1 Sample Flow (x-prediction with an L1 loss, 2-step sampler) on an episode dataset.
Writes a checkpoint directory; TensorBoard logs go to OUT/tb; --resume continues.
"""

from __future__ import annotations

import argparse

from flow2one.apps import _fit

add_arguments = _fit.add_arguments


def main(args: argparse.Namespace) -> int:
    return _fit.run(args, "l1flow")
