"""Per-node diagnostics on /diagnostics (diagnostic_updater is not on PyPI; this is its small core)."""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from flow2one.spec import DIAGNOSTICS_TOPIC

OK, WARN, ERROR, STALE = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR,
                          DiagnosticStatus.STALE)


class Diagnostics:
    """Holds a node's current status and values; publishes them once per `period` seconds."""

    def __init__(self, node: Node, period: float = 1.0, hardware_id: str = "") -> None:
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._hardware_id = hardware_id
        self.level: int = OK
        self.message = "starting"
        self.values: dict[str, object] = {}
        node.create_timer(period, self.publish)

    def set(self, level: int, message: str, **values: object) -> None:
        self.level, self.message = level, message
        self.values.update(values)

    def update(self, **values: object) -> None:
        self.values.update(values)

    def publish(self) -> None:
        status = DiagnosticStatus(
            level=self.level,
            name=f"flow2one/{self._node.get_name()}",
            message=self.message,
            hardware_id=self._hardware_id,
            values=[KeyValue(key=k, value=f"{v:.4g}" if isinstance(v, float) else str(v))
                    for k, v in self.values.items()],
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._node.get_clock().now().to_msg()
        self._pub.publish(msg)
