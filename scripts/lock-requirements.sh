#!/usr/bin/env bash
# Refresh the daemon venv's pinned, hash-checked requirements (deploy/install.sh
# installs them with `pip install --require-hashes`):
#
#   deploy/requirements-daemon.txt   pyproject.toml's [daemon] extra and all it needs
#   deploy/requirements-build.txt    deploy/requirements-build.in (setuptools)
#
#   scripts/lock-requirements.sh              # keep today's pins, add what is new
#   scripts/lock-requirements.sh --upgrade    # newest versions allowed (then review the diff)
#   scripts/lock-requirements.sh --upgrade-package trio   # just that one
#
# Runs pip-compile (pip-tools, in a throwaway venv) with Python 3.11 for Linux (the
# interpreter deploy/install.sh uses on Debian 12), against the index in LOCK_INDEX_URL
# (default https://pypi.org/simple) and no local pip configuration, so that the
# hashes are those of the index's files. Extra arguments go to pip-compile.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-/usr/bin/python3}
index=${LOCK_INDEX_URL:-https://pypi.org/simple}

"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
    { echo "lock-requirements.sh: $python is not Python 3.11 (set PYTHON=...)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/hycan-lock.XXXXXX")
trap 'rm -rf -- "$tmp"' EXIT
# Only the index named here: no pip.conf, find-links or extra index of this machine.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX

"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --index-url "$index" 'pip-tools>=7.4,<8'

compile() {
    (cd "$root" && "$tmp/venv/bin/pip-compile" --quiet --generate-hashes --allow-unsafe \
        --strip-extras --no-emit-index-url --index-url "$index" "$@")
}
compile --extra daemon -o deploy/requirements-daemon.txt "$@" pyproject.toml
compile -o deploy/requirements-build.txt "$@" deploy/requirements-build.in
echo "lock-requirements.sh: wrote deploy/requirements-daemon.txt, deploy/requirements-build.txt"
