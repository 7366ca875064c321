#!/usr/bin/env bash
# Set up a fresh machine: system libraries (Debian), a venv at .venv with every pinned dependency, and
# flow2one installed editable. Idempotent: re-running with unchanged requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FLOW2ONE_VENV:-.venv}

# pyrealsense2 and open3d need libusb; MuJoCo's headless rendering needs EGL + Mesa.
need=()
ldconfig -p | grep -q 'libusb-1.0.so.0' || need+=(libusb-1.0-0)
ldconfig -p | grep -q 'libEGL.so.1' || need+=(libegl1)
ldconfig -p | grep -q 'libGL.so.1' || need+=(libgl1)
[ -e /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so ] || [ -e /usr/lib/aarch64-linux-gnu/dri/swrast_dri.so ] \
  || need+=(libgl1-mesa-dri libegl-mesa0)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

stamp="$VENV/.requirements.sha"
want=$(cat requirements.txt ros2_ws/src/flow2one/setup.py | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setup: creating $VENV and installing requirements.txt (about 2 minutes, 2.8 GB)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
# The machine's pip config lists local wheel folders that may not exist; their warnings are noise.
"$VENV/bin/python" -m pip install -q -r requirements.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
"$VENV/bin/python" -m pip install -q --no-deps -e ros2_ws/src/flow2one 2>&1 | { grep -v "^WARNING: Location" || true; }
"$VENV/bin/python" -c "import rclpy, franky, franky_sim, pyrealsense2, open3d, mujoco, torch, onnxruntime, cv2, mcap_ros2, rerun, flow2one"
echo "$want" > "$stamp"
echo "setup: done"
