#!/usr/bin/env bash
# Run hycan's whole test suite on a fresh Debian 12 machine (as root):
# installs what the tests need (apt), nox into a venv of Debian's python3, then
# runs `nox` (lint, tests, units, vm, fresh). Extra arguments go to nox, e.g.
# `scripts/run-tests.sh -s tests`.
#
# Debian's /usr/bin/python3 is "externally managed" (PEP 668): pip may not install
# into it. So nox lives in .venv-nox/ in this checkout (git-ignored), made from
# that interpreter, and nox's sessions get the same base interpreter.
# Environment: PYTHON (the interpreter; default /usr/bin/python3; sudo drops it).
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-/usr/bin/python3}
venv=.venv-nox

# gcc + libcap-dev: python-prctl builds from source; iproute2: netns tests;
# systemd: systemd-analyze for `nox -s units`; qemu/busybox/kmod/cpio: the vcan VM
# (`nox -s vm`); shellcheck: the deploy scripts are linted in the tests; libcap2-bin:
# capsh, which tests/test_caps.py checks the capability names against;
# debootstrap + systemd-container: the fresh Debian root of `nox -s fresh`.
packages=(gcc libc6-dev libcap-dev iproute2 systemd qemu-system-x86 busybox-static kmod cpio shellcheck can-utils
    libcap2-bin debootstrap systemd-container)
if [[ ! -x $python ]]; then
    packages+=(python3 python3-venv python3-dev)
else
    # ensurepip (for the venvs) is Debian's python3-venv; python-prctl needs Python.h.
    "$python" -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)
    "$python" -c 'import os, sysconfig; exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        || packages+=(python3-dev)
fi
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "run-tests: missing packages ${missing[*]}: run as root (sudo) to install them" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# (Re)create the venv unless it has nox and was made from $python.
base=$("$python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
if ! "$venv/bin/python" -c 'import os, sys; sys.exit(os.path.realpath(sys._base_executable) != sys.argv[1])' \
    "$base" 2>/dev/null || ! "$venv/bin/python" -m nox --version >/dev/null 2>&1; then
    "$python" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check nox
fi
exec "$venv/bin/python" -m nox "$@"
