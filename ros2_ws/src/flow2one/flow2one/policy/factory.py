"""Config -> module, for every policy kind."""

from __future__ import annotations

from flow2one.policy.base import Policy
from flow2one.policy.cfm import CFMTeacher
from flow2one.policy.config import PolicyConfig
from flow2one.policy.imle import IMLEStudent
from flow2one.policy.l1flow import L1Flow
from flow2one.policy.regression import RegressionPolicy

POLICY_CLASSES: dict[str, type[Policy]] = {
    "teacher": CFMTeacher, "student": IMLEStudent, "l1flow": L1Flow, "regression": RegressionPolicy}


def build_policy(cfg: PolicyConfig) -> Policy:
    return POLICY_CLASSES[cfg.kind](cfg)
