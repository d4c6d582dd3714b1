#!/bin/sh
# Install pitstop from the source tree in the current folder into a new virtualenv.
#   sh deploy/install.sh TARGET [EXTRAS]       e.g. sh deploy/install.sh /opt/pitstop s3,sklearn
# The container image's build stage runs exactly this; tests/deploy/test_image.py runs it too.
set -eu
target="$1"
extras="${2:-}"
python -m venv "$target"
"$target/bin/pip" install --upgrade pip
if [ -n "$extras" ]; then
    "$target/bin/pip" install ".[$extras]"
else
    "$target/bin/pip" install .
fi
"$target/bin/pitstop" --version
