#!/usr/bin/env python3
"""Run ONE command inside a throw-away qemu VM and exit with its status.

The VM boots a stock Debian kernel under software emulation (``-accel tcg``) so
tests get real ``vcan``/``AF_CAN``, which the host kernel lacks.  The guest's
root is the host's ``/`` (read-only over virtio-9p) under a tmpfs overlay: every
host path (checkout, venvs, pyenv) is at the same place, and writes succeed but
are thrown away.  See README.md next to this file.

Usage: run_vm.py [--timeout S] [--append ARGS] [--env N=V ...] [--cwd DIR] -- CMD...
"""

from __future__ import annotations

import argparse
import ctypes
import gzip
import hashlib
import lzma
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

CACHE = Path(os.environ.get("HYCAN_VM_CACHE") or Path(__file__).resolve().parents[2] / ".vm-cache")
EXIT_TIMEOUT, EXIT_VM_FAILURE = 124, 125
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What /init needs to mount the host root; dependencies (virtio_ring, netfs,
# fscache, ...) come from modules.dep.
INITRD_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
NINEP = "trans=virtio,version=9p2000.L,cache=loose"  # loose: much faster imports

# Stage 1, PID 1 in the initramfs (static busybox): load the modules, build the
# new root (9p host root + tmpfs overlay, the kernel's modules bind-mounted from
# the cache), then switch_root into it.  Not chroot: the kernel's module
# autoloader (modprobe) must see the new root.  On failure quit without status.
INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
die() {
    echo "run_vm init: $* failed" >/dev/console
    printf '\\001' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null; poweroff -f
}
mount -t proc proc /proc && mount -t sysfs sysfs /sys &&
    mount -t devtmpfs devtmpfs /dev || die mount
for m in @MODULES@; do insmod /modules/$m.ko || die "insmod $m"; done
set -f  # host paths of the kernel's modules and of this run's scripts:
for arg in $(cat /proc/cmdline); do
    case $arg in hycan.modules=*) mods=${arg#*=};; hycan.run=*) run=${arg#*=};; esac
done
r=/newroot
mkdir -p /lower /upper $r
mount -t 9p -o ro,@NINEP@ hostroot /lower || die "9p mount of the host root"
mount -t tmpfs -o mode=0755 tmpfs /upper && mkdir /upper/data /upper/work &&
    mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work \\
        overlay $r || die "overlay mount"
mkdir -p $r/lib/modules/@VERSION@ && mount --bind /lower$mods $r/lib/modules/@VERSION@ &&
    mount -t tmpfs -o mode=0755 tmpfs $r/run && mkdir $r/run/hycan $r/run/lock &&
    mount --bind /lower$run $r/run/hycan &&
    mount --move /proc $r/proc && mount --move /sys $r/sys && mount --move /dev $r/dev &&
    mkdir -p $r/dev/pts $r/dev/shm && mount -t tmpfs -o mode=1777 tmpfs $r/dev/shm &&
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $r/dev/pts || die "mounts"
exec switch_root $r /bin/busybox sh /run/hycan/stage2.sh
"""

# Stage 2, PID 1 in the new root (the host's static busybox).  The job's output
# goes through a FIFO (so it writes to a pipe as in CI, not to a tty) to ttyS1,
# its exit status to ttyS2; then the isa-debug-exit port ends qemu at once.
STAGE2 = """bb=/bin/busybox
echo run-vm >/proc/sys/kernel/hostname
$bb ip link set lo up
$bb stty -F /dev/ttyS1 raw -echo
$bb mkfifo /run/hycan.out
$bb cat /run/hycan.out >/dev/ttyS1 & cat_pid=$!
$bb setsid /bin/sh /run/hycan/job.sh </dev/null >/run/hycan.out 2>&1 & job_pid=$!
wait $job_pid; rc=$?
kill -9 -$job_pid 2>/dev/null  # the job's leftover background processes
wait $cat_pid
[ -s /run/hycan.status ] || echo $rc >/run/hycan.status
$bb cat /run/hycan.status >/dev/ttyS2
printf '\\000' | $bb dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
echo o >/proc/sysrq-trigger
"""


def fail(msg: str, code: int = EXIT_VM_FAILURE) -> NoReturn:
    print(f"run_vm: {msg}", file=sys.stderr)
    sys.exit(code)


def run(*args: str, cwd: Path | None = None, deadline: float) -> str:
    """Run a set-up command on the host and return its stdout."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C")
    timeout = max(deadline - time.monotonic(), 1)
    out = subprocess.run(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, text=True,
                         stdout=subprocess.PIPE, timeout=timeout, check=True)  # fmt: skip
    return out.stdout


def apt(*args: str, cwd: Path | None = None, deadline: float) -> str:
    """apt-get/apt-cache, running `apt-get update` once if the lists are stale."""
    try:
        return run(*args, cwd=cwd, deadline=deadline)
    except subprocess.CalledProcessError:
        run("apt-get", "update", deadline=deadline)
        return run(*args, cwd=cwd, deadline=deadline)


def ensure_host_tools(deadline: float) -> None:
    """Install qemu, static busybox and kmod (depmod) if missing (fresh CI host)."""
    query = ["dpkg-query", "-W", "-f=${Status}", "busybox-static"]
    busybox = subprocess.run(query, capture_output=True, text=True).stdout
    tools = {"qemu-system-x86": shutil.which("qemu-system-x86_64"),
             "busybox-static": busybox == "install ok installed",
             "kmod": shutil.which("depmod", path=SBIN_PATH)}  # fmt: skip
    if missing := [pkg for pkg, ok in tools.items() if not ok]:
        print(f"run_vm: installing {' '.join(missing)}", file=sys.stderr)
        apt("apt-get", "install", "-y", "--no-install-recommends", *missing, deadline=deadline)


def ensure_kernel(deadline: float) -> tuple[str, Path]:
    """(version, unpacked tree) of the cached kernel; fetch it on first use."""
    if cached := sorted(CACHE.glob("kernel-*/boot/vmlinuz-*"), key=lambda p: p.stat().st_mtime):
        return cached[-1].name.removeprefix("vmlinuz-"), cached[-1].parents[1]
    # The package linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64.
    deps = apt("apt-cache", "depends", "linux-image-amd64", deadline=deadline).split()
    pkg = deps[deps.index("Depends:") + 1]
    version = pkg.removeprefix("linux-image-")
    print(f"run_vm: fetching {pkg} into {CACHE}", file=sys.stderr)
    tmp = Path(tempfile.mkdtemp(prefix="kernel.tmp-", dir=CACHE))
    sandbox = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    apt("apt-get", *sandbox, "download", pkg, cwd=tmp, deadline=deadline)
    for deb in tmp.glob("*.deb"):
        run("dpkg-deb", "-x", str(deb), str(tmp), deadline=deadline)
        deb.unlink()
    # The .deb ships no modules.dep: make it (for modprobe in the guest and for us).
    depmod = shutil.which("depmod", path=SBIN_PATH) or "depmod"
    run(depmod, "-b", str(tmp), version, deadline=deadline)
    extract_vmlinux(tmp / f"boot/vmlinuz-{version}")
    try:
        tmp.rename(CACHE / f"kernel-{version}")
    except OSError:  # a concurrent runner was faster
        shutil.rmtree(tmp)
    return version, CACHE / f"kernel-{version}"


def extract_vmlinux(vmlinuz: Path) -> None:
    """Decompressing the kernel takes ~4 s under TCG: do it once, on the host.
    qemu boots the ELF vmlinux through its PVH entry point (CONFIG_PVH=y)."""
    data = vmlinuz.read_bytes()
    start = data.find(b"\xfd7zXZ\x00")  # Debian's kernels are xz-compressed
    elf = lzma.LZMADecompressor().decompress(data[start:]) if start >= 0 else b""
    # ELF note XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen") = PVH-bootable.
    if elf.startswith(b"\x7fELF") and (18).to_bytes(4, "little") + b"Xen\0" in elf:
        vmlinuz.with_name(vmlinuz.name.replace("vmlinuz", "vmlinux")).write_bytes(elf)


def mod_name(path: str) -> str:
    return Path(path).name.partition(".ko")[0].replace("-", "_")


def module_files(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """The .ko files of `wanted` and of their dependencies, in load order."""
    deps = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
    by_name = {mod_name(path): path for path in deps}
    order: list[str] = []

    def visit(path: str) -> None:  # depth first: dependencies before dependants
        if path not in order:
            for dep in deps[path]:
                visit(dep)
            order.append(path)

    for name in wanted:
        visit(by_name[name])
    return [moddir / path for path in order]


def cpio_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio 'newc' archive of (name, mode, data); dev/console is char 5:1."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*entries, ("TRAILER!!!", 0, b"")], 1):
        rdev = (5, 1) if name == "dev/console" else (0, 0)
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        out += bytes(-len(out) % 4) + data
        out += bytes(-len(out) % 4)
    return bytes(out)


def ensure_initramfs(version: str, kernel_dir: Path) -> Path:
    """Build the initramfs (busybox, modules, /init) unless cached; keyed by content."""
    mods = module_files(kernel_dir / "lib/modules" / version, INITRD_MODULES)
    init = INIT.replace("@MODULES@", " ".join(mod_name(m.name) for m in mods))
    init = init.replace("@NINEP@", NINEP).replace("@VERSION@", version)
    busybox = Path("/bin/busybox").read_bytes()
    digest = hashlib.sha256(init.encode() + busybox).hexdigest()[:12]
    target = CACHE / f"initramfs-{version}-{digest}.cpio.gz"
    if target.exists():
        return target
    entries = [(d, 0o40755, b"") for d in ("bin", "dev", "proc", "sys", "modules")]
    entries += [("dev/console", 0o20600, b""), ("bin/busybox", 0o100755, busybox),
                ("init", 0o100755, init.encode())]  # fmt: skip
    for mod in mods:  # busybox's insmod wants uncompressed modules (Debian: .ko or .ko.xz)
        data = lzma.decompress(mod.read_bytes()) if mod.suffix == ".xz" else mod.read_bytes()
        entries.append((f"modules/{mod_name(mod.name)}.ko", 0o100644, data))
    tmp = target.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(gzip.compress(cpio_newc(entries)))
    tmp.rename(target)
    for old in CACHE.glob("initramfs-*.cpio.gz"):  # built by older versions of this file
        if old != target:
            old.unlink()
    return target


def write_job(rundir: Path, command: list[str], cwd: str, env: dict[str, str]) -> None:
    """This run's guest scripts; the guest sees `rundir` as /run/hycan."""
    assigns = " ".join(shlex.quote(f"{name}={value}") for name, value in env.items())
    (rundir / "stage2.sh").write_text(STAGE2)
    (rundir / "job.sh").write_text(
        f"cd {shlex.quote(cwd)} && env -i {assigns} {shlex.join(command)}\n"
        "echo $? >/run/hycan.status\n"
    )


def qemu_command(kernel: Path, initrd: Path, moddir: Path, rundir: Path, append: str,
                 fds: tuple[int, int], can_controllers: int = 0) -> list[str]:  # fmt: skip
    """ttyS0: console (-> our stderr), ttyS1: job output (-> our stdout), ttyS2:
    job status (-> file).  A single 9p share, the host root (each virtio device
    costs boot time): /init bind-mounts the modules and the run dir from it.
    ``can_controllers`` emulated SJA1000 boards (kvaser_pci) share one virtual CAN
    bus: in the guest, `modprobe kvaser_pci` makes them can0, can1, ..."""
    smp, mem = os.environ.get("HYCAN_VM_SMP", "1"), os.environ.get("HYCAN_VM_MEM", "1G")
    opts = "-nodefaults -no-user-config -display none -no-reboot -accel tcg -machine pc"
    cmd = ["qemu-system-x86_64", *f"{opts} -cpu max -smp {smp} -m {mem}".split(),
           "-kernel", str(kernel), "-initrd", str(initrd), "-append",
           f"console=ttyS0 quiet panic=-1 hycan.modules={moddir} hycan.run={rundir} {append}",
           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
           "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
           "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot"]  # fmt: skip
    serials = {"con": f"/proc/self/fd/{fds[0]}", "out": f"/proc/self/fd/{fds[1]}",
               "status": str(rundir / "status")}  # fmt: skip
    for name, path in serials.items():
        cmd += ["-chardev", f"file,id={name},path={path}", "-serial", f"chardev:{name}"]
    if can_controllers:
        cmd += ["-object", "can-bus,id=canbus0"]
        cmd += ["-device", "kvaser_pci,canbus=canbus0"] * can_controllers
    if Path("/usr/share/qemu/qboot.rom").exists():  # faster and quieter than SeaBIOS
        cmd += ["-bios", "/usr/share/qemu/qboot.rom"]
    return cmd


def set_pdeathsig() -> None:
    """In qemu, before exec: get SIGKILL when the runner dies, even by SIGKILL."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_vm(cmd: list[str], con: tuple[int, int], out: tuple[int, int], deadline: float) -> bool:
    """Run qemu, relaying console and job output (pipes `con`, `out`); False on
    timeout.  qemu runs in its own process group, killed on every exit path."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr,
                            pass_fds=(con[1], out[1]), start_new_session=True,
                            preexec_fn=set_pdeathsig)  # fmt: skip  # noqa: PLW1509
    try:
        os.close(con[1])  # only qemu holds the write ends now: EOF = qemu is gone
        os.close(out[1])
        sinks = {con[0]: sys.stderr.buffer, out[0]: sys.stdout.buffer}
        sel = selectors.DefaultSelector()
        for fd in sinks:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            if (remaining := deadline - time.monotonic()) <= 0:
                return False
            for key, _ in sel.select(remaining):
                if not (data := os.read(key.fd, 65536)):
                    sel.unregister(key.fd)
                    continue
                if key.fd == con[0]:  # the kernel's console writes CRLF
                    data = data.replace(b"\r\n", b"\n")
                sinks[key.fd].write(data)
                sinks[key.fd].flush()
        proc.wait(max(deadline - time.monotonic(), 0.1))
        return True
    except subprocess.TimeoutExpired:
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=900, help="overall, in seconds")
    parser.add_argument("--append", default="", help="extra kernel command line arguments")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--cwd", default=os.getcwd(), help="guest working directory")
    parser.add_argument(
        "--can-controllers",
        type=int,
        default=0,
        metavar="N",
        help="emulated SJA1000 CAN controllers on one bus (kvaser_pci)",
    )
    parser.add_argument("command", nargs="+", help="command run in the guest (after --)")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    # The host environment does not reach the guest: only this (and --env).
    env = {"PATH": f"{Path(sys.executable).parent}:{SBIN_PATH}", "HOME": "/root",
           "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}  # fmt: skip
    for item in args.env:
        name, eq, value = item.partition("=")
        if not (name and eq):
            parser.error(f"--env wants NAME=VALUE, got {item!r}")
        env[name] = value
    for sig in (signal.SIGTERM, signal.SIGHUP):  # make `finally` clauses run
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if any(c.isspace() for c in str(CACHE)):  # paths go on the kernel command line
        fail(f"the cache path must not contain white space: {CACHE}")
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        try:
            ensure_host_tools(deadline)
            version, kernel_dir = ensure_kernel(deadline)
            initrd = ensure_initramfs(version, kernel_dir)
            for stale in [*CACHE.glob("run-*"), *CACHE.glob("kernel.tmp-*")]:  # SIGKILLed
                if stale.stat().st_mtime < time.time() - 86400:
                    shutil.rmtree(stale, ignore_errors=True)
        except (subprocess.SubprocessError, OSError, ValueError) as exc:
            fail(f"VM set-up failed: {exc}")
        rundir = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
        try:
            write_job(rundir, args.command, os.path.abspath(args.cwd), env)
            kernel = kernel_dir / f"boot/vmlinux-{version}"  # see extract_vmlinux()
            if not kernel.exists():
                kernel = kernel_dir / f"boot/vmlinuz-{version}"
            moddir = kernel_dir / "lib/modules" / version
            con, out = os.pipe(), os.pipe()
            cmd = qemu_command(
                kernel, initrd, moddir, rundir, args.append, (con[1], out[1]), args.can_controllers
            )
            if not run_vm(cmd, con, out, deadline):
                fail(f"timed out after {args.timeout:g} s (qemu killed)", EXIT_TIMEOUT)
            status_file = rundir / "status"
            status = status_file.read_text().strip() if status_file.exists() else ""
        finally:
            shutil.rmtree(rundir, ignore_errors=True)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    if not status.isdigit():
        fail("the VM stopped without reporting the command's exit status (see above)")
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
