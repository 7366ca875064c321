"""flow2one learning core (ROS-free): CFM teacher, IMLE one-step student, L1 Sample Flow, MSE regression.

Every policy kind is an `nn.Module` with
`sample(obs, n_samples=1, generator=None) -> (B, n_samples, H, A)` in robot units (normalisers inside)
and `export_forward(*inputs, noise) -> (B, H, A)` for ONNX export (inputs: `export_input_names`).
Robot policies read observation dicts (points, proprio, rgb, depth); the generic API below reads plain
condition vectors. Both use the same teacher, student and Chamfer code; only the encoder differs.

Generic example (condition vector -> trajectory)::

    import numpy as np
    from flow2one.policy import api

    rng = np.random.default_rng(0)
    cond = rng.uniform(-1, 1, (4000, 2)).astype(np.float32)                  # (N, C)
    sign = rng.choice([-1.0, 1.0], size=(4000, 1, 1))                         # two modes per condition
    s = np.linspace(0, 1, 32)[None, :, None]
    traj = (cond[:, None, :] + sign * s * np.array([1.0, 0.5])).astype(np.float32)  # (N, H=32, A=2)

    cfg = api.vector_config(cond_dim=2, action_dim=2)
    teacher = api.fit_teacher(cond, traj, cfg, steps=2000, batch_size=128)   # CFM, x-prediction
    sets = api.teacher_sets(teacher, cond[:1000], k=16)                       # (1000, 16, 32, 2), 50 Euler steps
    student = api.fit_student(cond[:1000], sets, cfg, steps=2000)             # set-level IMLE, Chamfer
    samples = student.sample(cond[:8], n_samples=16)                          # (8, 16, 32, 2), one pass

`api.fit("l1flow" | "regression", cond, traj, cfg)` trains the other kinds;
`checkpoint.save_policy(dir, policy)` / `checkpoint.load_policy(dir)` store and restore any of them.
"""

from flow2one.policy.base import Policy
from flow2one.policy.config import PolicyConfig, preset
from flow2one.policy.factory import build_policy

__all__ = ["Policy", "PolicyConfig", "build_policy", "preset"]
