"""QoS profiles, chosen once for the whole graph (measurements: docs/TRANSPORT.md,
`flow2one bench ros_transport`).

Sensor streams keep only the newest sample (a late frame is worthless to a 125 Hz policy); chunks and
commands are reliable with depth 1 so the executor never acts on a dropped-then-resent old chunk.
"""

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

SENSOR_QOS = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
CHUNK_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
STATE_QOS = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
# Latched-style topics (calibration, model info): late joiners get the last message.
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Streams where every message matters (the executed commands become a demo's action labels): a slow
# subscriber such as the recorder must not lose any while it catches up.
RECORD_QOS = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
