#!/usr/bin/env bash
# Run hycan's whole test suite on a fresh Debian 12 machine (as root):
# installs what the tests need (apt + nox), then runs `nox` (lint, tests, units, vm).
# Extra arguments go to nox, e.g. `scripts/run-tests.sh -s tests`.
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc + libcap-dev: python-prctl builds from source; iproute2: netns tests;
# systemd: systemd-analyze for `nox -s units`; qemu/busybox/kmod/cpio: the vcan VM
# (`nox -s vm`); shellcheck: the deploy scripts are linted in the tests; libcap2-bin:
# capsh, which tests/test_caps.py checks the capability names against.
packages=(gcc libc6-dev libcap-dev iproute2 systemd qemu-system-x86 busybox-static kmod cpio shellcheck libcap2-bin)
# python-prctl also needs Python.h of the interpreter that runs nox.
python3 -c 'import os, sysconfig; exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
    || packages+=(python3-dev)
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
python3 -m pip --version >/dev/null 2>&1 || { echo "run-tests: python3 with pip is required" >&2; exit 2; }
python3 -m nox --version >/dev/null 2>&1 || python3 -m pip install -q nox
exec python3 -m nox "$@"
