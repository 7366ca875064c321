"""CDR payloads of recorded messages -> rosbags message objects (shared by convert, replay and the topic
profiles, so none of them imports another for it)."""

from __future__ import annotations

from functools import lru_cache


class BagInvalid(ValueError):
    """The bag cannot become an episode; the message says why."""


@lru_cache(maxsize=1)
def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def deserialize(data: bytes, msgtype: str):
    """CDR -> rosbags message object, tolerating trailing padding.

    rmw_fastrtps (seen with the Kilted wheels) sends messages with float64 sequences (JointState,
    JointTrajectory) 4-12 bytes longer than their content; rosbags' deserialize_cdr rejects more than 3
    spare bytes, so this calls the same generated decoder without that final length check.
    """
    data = bytes(data)
    if len(data) < 4 or data[:2] not in (b"\x00\x00", b"\x00\x01"):
        raise BagInvalid(f"{msgtype}: not a CDR payload")
    store = typestore()
    md = store.get_msgdef(msgtype)
    decode = md.deserialize_cdr_le if data[1] else md.deserialize_cdr_be
    try:
        return decode(data[4:], 0, md.cls, store)[0]
    except Exception as exc:  # struct.error, UnicodeDecodeError, IndexError on a truncated payload
        raise BagInvalid(f"{msgtype}: undecodable message ({type(exc).__name__}: {exc})") from exc
