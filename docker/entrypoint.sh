#!/usr/bin/env bash
# Source ROS 2 and the flow2one workspace, report the real-time settings the Panda needs, run the command.
set -e
source "/opt/ros/${ROS_DISTRO}/setup.bash"
source "${FLOW2ONE_WS:-/ws}/install/setup.bash"
cd "${FLOW2ONE_WS:-/ws}"
rt=$(ulimit -r); ml=$(ulimit -l)
if [ "$rt" != "unlimited" ] && [ "${rt:-0}" -lt 90 ]; then
  echo "flow2one: WARNING rtprio limit is $rt (< 90): libfranka cannot get real-time priority;" \
       "run with --ulimit rtprio=99 --cap-add=SYS_NICE (docker/README.md)" >&2
fi
if [ "$ml" != "unlimited" ]; then
  echo "flow2one: WARNING memlock limit is $ml KiB; run with --ulimit memlock=-1 (docker/README.md)" >&2
fi
if ! uname -v | grep -q PREEMPT_RT; then
  echo "flow2one: note: host kernel is not PREEMPT_RT; libfranka may abort with communication_constraints_violation" >&2
fi
exec "$@"
