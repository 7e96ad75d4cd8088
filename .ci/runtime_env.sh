#!/usr/bin/env bash
# The torch-free runtime in a small environment of its own: numpy < 2 and tflite-runtime, no torch, no bfcnn
# install (bfcnn/runtime.py is loaded as a plain module), on model files exported in the main environment.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 .ci/runtime_fixture.py "$work/files"
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q -c .ci/runtime-constraints.txt numpy tflite-runtime
"$work/venv/bin/python" .ci/runtime_check.py "$work/files"
