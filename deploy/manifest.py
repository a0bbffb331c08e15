#!/usr/bin/env python3
"""The install manifest of deploy/install.sh: record what an install creates, remove exactly that.

One line per path the install created, tab-separated::

    PART  TYPE  PATH  [TARGET]

PART is the install step that made it (``files``, ``venv``, ``wheel``, ``python``); TYPE is
``dir`` (removed only if still a real directory and empty), ``file`` (removed only if still
a regular file), ``link`` (removed only if still a symlink to TARGET) or ``tree`` (the venv:
removed as a whole, only if still a real directory holding ``pyvenv.cfg``). PATH is
absolute and normalised, as on the installed system (without DESTDIR).

Every path is reached from ROOT (DESTDIR, or ``/``) one component at a time with
``O_NOFOLLOW``, so a component replaced by a symlink stops the walk instead of leading
outside the install; the venv is removed with ``shutil.rmtree(dir_fd=...)``, which follows
no symlinks either. Needs Python 3.11 (``rmtree`` with ``dir_fd``).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import os
import py_compile
import shlex
import shutil
import stat
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PARTS = ("files", "venv", "wheel", "python")
TYPES = ("dir", "file", "link", "tree")
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
HEADER = "# hycan install manifest: PART TYPE PATH [TARGET], tab-separated (deploy/manifest.py)\n"


class ManifestError(Exception):
    """A refusal with a message for the person running install.sh."""


@dataclass(frozen=True)
class Entry:
    """One line of the manifest."""

    part: str
    type: str
    path: str
    target: str = ""

    def line(self) -> str:
        fields = [self.part, self.type, self.path] + ([self.target] if self.target else [])
        return "\t".join(fields) + "\n"


def components(path: str) -> list[str]:
    """PATH's components below /, refusing anything but an absolute, normalised path."""
    bad = any(c in path for c in "\0\t\n")
    if bad or not path.startswith("/") or path == "/" or os.path.normpath(path) != path:
        raise ManifestError(f"not an absolute, normalised path without tabs/newlines: {path!r}")
    return path[1:].split("/")


def parse(text: str, origin: str) -> list[Entry]:
    """The entries of a manifest's text (comment and blank lines skipped)."""
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        fields = raw.split("\t")
        if len(fields) not in (3, 4) or fields[0] not in PARTS or fields[1] not in TYPES:
            raise ManifestError(f"{origin}:{number}: not a manifest line: {raw!r}")
        if (fields[1] == "link") != (len(fields) == 4):
            raise ManifestError(f"{origin}:{number}: a link needs a target, nothing else does")
        components(fields[2])
        entries.append(Entry(*fields))
    return entries


def writable_by_others(st: os.stat_result) -> str:
    """Why someone other than root (or us) could change this file or directory, or ''."""
    if st.st_uid not in (0, os.geteuid()):
        return f"it belongs to uid {st.st_uid}"
    sticky_dir = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX
    if st.st_mode & stat.S_IWGRP and not sticky_dir:
        return f"it is writable by group {st.st_gid}"
    if st.st_mode & stat.S_IWOTH and not sticky_dir:
        return "it is writable by everyone"
    return ""


class Root:
    """The tree the install lives in (DESTDIR or /), walked without following symlinks."""

    def __init__(self, path: str, *, check_owner: bool = False) -> None:
        self.path = os.path.realpath(path)
        self.check_owner = check_owner
        self.fd = os.open(self.path, DIR_FLAGS)

    def host(self, path: str) -> str:
        """PATH as seen from here (below DESTDIR when staging)."""
        return self.path.rstrip("/") + path

    @contextlib.contextmanager
    def parent(
        self, path: str, created: Callable[[str], None] | None = None, *, trust: bool = False
    ) -> Iterator[tuple[int, str]]:
        """(an fd of PATH's directory, PATH's last component).

        Missing directories are created (mode 0755) and reported to ``created`` if it is
        given, else the walk fails with FileNotFoundError. A component that is a symlink or
        not a directory fails it with a ManifestError; so does, with ``trust``, a directory
        that someone other than root could write.
        """
        parts = components(path)
        fd = os.dup(self.fd)
        try:
            if trust:
                self._trust(fd, "/")
            for i, part in enumerate(parts[:-1]):
                here = "/" + "/".join(parts[: i + 1])
                try:
                    new = os.open(part, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if created is None:
                        raise
                    os.mkdir(part, 0o755, dir_fd=fd)
                    created(here)
                    new = os.open(part, DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    raise ManifestError(
                        f"{self.host(here)} is a symlink or not a directory: hycan installs and "
                        "removes only paths without symlinks (use the resolved path)"
                    ) from exc
                os.close(fd)
                fd = new
                if trust:
                    self._trust(fd, here)
            yield fd, parts[-1]
        finally:
            os.close(fd)

    def _trust(self, fd: int, where: str) -> None:
        reason = writable_by_others(os.fstat(fd))
        if reason:
            raise ManifestError(
                f"refusing to trust the manifest: {self.host(where)}: {reason}, so someone other "
                "than root could have changed what it lists; fix the permissions, or remove "
                "the files by hand"
            )

    def read(self, path: str) -> str | None:
        """The text of the regular file PATH, or None if it does not exist.

        With ``check_owner``, PATH and its directories must be writable by root only.
        """
        try:
            with self.parent(path, trust=self.check_owner) as (dirfd, name):
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ManifestError(f"cannot read {self.host(path)}: {exc.strerror}") from exc
        with os.fdopen(fd, encoding="utf-8") as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ManifestError(f"{self.host(path)} is not a regular file")
            reason = writable_by_others(st) if self.check_owner else ""
            if reason:
                raise ManifestError(f"refusing to trust {self.host(path)}: {reason}")
            return file.read()


def write_file(dirfd: int, name: str, data: bytes, mode: int) -> None:
    """Replace NAME in the directory DIRFD with DATA, atomically (a symlink there is replaced)."""
    tmp = f".{name}.hycan-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dirfd)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dirfd)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)
        file.write(data)
        file.flush()
        os.fsync(fd)
    os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)


class Recorder:
    """Appends what an install creates to the new manifest (a work file outside ROOT)."""

    def __init__(self, root: Root, manifest: str, new: str) -> None:
        self.root = root
        self.new = Path(new)
        old = root.read(manifest)
        self.old = parse(old, root.host(manifest)) if old is not None else []
        self.old_dirs = {e.path for e in self.old if e.type == "dir"}
        text = self.new.read_text(encoding="utf-8") if self.new.exists() else ""
        self.entries = parse(text, new)
        self.paths = {e.path for e in self.entries}

    def add(self, entry: Entry) -> None:
        """Record ENTRY once."""
        components(entry.path)
        if entry.path not in self.paths:
            self.paths.add(entry.path)
            self.entries.append(entry)
            with self.new.open("a", encoding="utf-8") as file:
                file.write(entry.line())

    @contextlib.contextmanager
    def parent(self, part: str, path: str) -> Iterator[tuple[int, str]]:
        """Root.parent, creating and recording missing directories.

        A directory that exists is recorded too if the previous install had recorded it.
        """
        parts = components(path)
        for i in range(1, len(parts)):
            here = "/" + "/".join(parts[:i])
            if here in self.old_dirs:
                self.add(Entry(part, "dir", here))
        with self.root.parent(path, lambda d: self.add(Entry(part, "dir", d))) as found:
            yield found

    def mkdir(self, part: str, path: str) -> None:
        """Create PATH and its missing parents, recording them."""
        with self.parent(part, path) as (dirfd, name):
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(name, 0o755, dir_fd=dirfd)
                self.add(Entry(part, "dir", path))
                return
            if not stat.S_ISDIR(st.st_mode):
                raise ManifestError(f"{self.root.host(path)} exists and is not a directory")
            if path in self.old_dirs:
                self.add(Entry(part, "dir", path))

    def install(self, part: str, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write a file at PATH and record it."""
        with self.parent(part, path) as (dirfd, name):
            write_file(dirfd, name, data, mode)
        self.add(Entry(part, "file", path))

    def link(self, part: str, target: str, path: str) -> None:
        """Make PATH a symlink to TARGET (replacing a file or symlink there) and record it."""
        with self.parent(part, path) as (dirfd, name):
            tmp = f".{name}.hycan-tmp"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dirfd)
            os.symlink(target, tmp, dir_fd=dirfd)
            os.replace(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        self.add(Entry(part, "link", path, target))

    def tree(self, part: str, path: str) -> None:
        """Record PATH (the venv, created by the caller) as removable as a whole."""
        with self.parent(part, path):
            pass
        self.add(Entry(part, "tree", path))

    def extract_wheel(self, part: str, wheel: str, site: str) -> None:
        """Unpack a pure-Python wheel into SITE, byte-compiled for this interpreter."""
        components(site)
        self.mkdir(part, site)
        with (
            zipfile.ZipFile(wheel) as archive,
            tempfile.TemporaryDirectory(dir=self.new.parent) as scratch,
        ):
            for info in archive.infolist():
                if info.is_dir():
                    continue
                rel = info.filename
                top = rel.split("/")[0]
                if rel.startswith("/") or ".." in rel.split("/") or top.endswith(".data"):
                    raise ManifestError(f"{wheel}: cannot install {rel!r} into {site}")
                path = f"{site}/{rel}"
                self.install(part, archive.read(info), path)
                if rel.endswith(".py"):
                    self._compile(part, path, scratch)

    def _compile(self, part: str, path: str, scratch: str) -> None:
        # Every optimisation level, so that no interpreter run adds an unrecorded .pyc.
        for level in (0, 1, 2):
            cache = importlib.util.cache_from_source(path, optimization=level or "")
            tmp = os.path.join(scratch, "out.pyc")
            py_compile.compile(
                self.root.host(path), cfile=tmp, dfile=path, doraise=True, optimize=level
            )
            self.install(part, Path(tmp).read_bytes(), cache)


def is_venv(dirfd: int, name: str) -> bool:
    """Whether the directory NAME (in DIRFD) holds a regular file pyvenv.cfg."""
    fd = os.open(name, DIR_FLAGS, dir_fd=dirfd)
    try:
        cfg = os.stat("pyvenv.cfg", dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return stat.S_ISREG(cfg.st_mode)


class Remover:
    """Removes manifest entries from ROOT, never following a symlink."""

    def __init__(self, root: Root, *, dry_run: bool = False) -> None:
        self.root = root
        self.dry_run = dry_run

    def show(self, *argv: str) -> None:
        print("+", shlex.join(argv), flush=True)

    def warn(self, message: str) -> None:
        print(f"install.sh: warning: {message}", file=sys.stderr, flush=True)

    def remove(self, entries: Iterable[Entry], *, last: str = "") -> None:
        """Files, links, trees; then LAST (the manifest); then directories, deepest first."""
        entries = list(entries)
        for entry in reversed(entries):
            if entry.type != "dir" and entry.path != last:
                self._one(entry)
        if last:
            self._one(Entry("files", "file", last))
        dirs = [e for e in entries if e.type == "dir"]
        for entry in sorted(dirs, key=lambda e: len(components(e.path)), reverse=True):
            self._one(entry)

    def _one(self, entry: Entry) -> None:
        host = self.root.host(entry.path)
        try:
            with self.root.parent(entry.path) as (dirfd, name):
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                reason = self._mismatch(entry, st, dirfd, name)
                if reason:
                    self.warn(f"not removing {host}: {reason}")
                    return
                self._apply(entry, dirfd, name, host)
        except FileNotFoundError:
            return  # already gone
        except ManifestError as exc:
            self.warn(f"not removing {host}: {exc}")

    def _mismatch(self, entry: Entry, st: os.stat_result, dirfd: int, name: str) -> str:
        """Why PATH is no longer what the install made, or ''."""
        kind = entry.type
        if kind == "link":
            if not stat.S_ISLNK(st.st_mode):
                return "it is no longer a symlink"
            target = os.readlink(name, dir_fd=dirfd)
            return "" if target == entry.target else f"it now points to {target}"
        if stat.S_ISLNK(st.st_mode):
            made = {"file": "a file", "dir": "a directory", "tree": "the venv, a directory"}
            return f"it is a symlink now (the install made {made[kind]})"
        if kind == "file" and not stat.S_ISREG(st.st_mode):
            return "it is no longer a regular file"
        if kind in ("dir", "tree") and not stat.S_ISDIR(st.st_mode):
            return "it is no longer a directory"
        if kind == "tree" and not is_venv(dirfd, name):
            return "it holds no pyvenv.cfg (not a venv)"
        return ""

    def _clear_cache(self, dirfd: int, name: str, host: str) -> None:
        """Remove the ``.pyc`` files an interpreter wrote into a ``__pycache__`` the install
        made after it (pytest's assertion rewriting writes ``*-pytest-X.pyc``, say): derived
        files, removed as pip's uninstall removes them. Only regular files, no symlinks."""
        fd = os.open(name, DIR_FLAGS, dir_fd=dirfd)
        try:
            for entry in os.listdir(fd):
                st = os.stat(entry, dir_fd=fd, follow_symlinks=False)
                if entry.endswith(".pyc") and stat.S_ISREG(st.st_mode):
                    self.show("rm", f"{host}/{entry}")
                    if not self.dry_run:
                        os.unlink(entry, dir_fd=fd)
        finally:
            os.close(fd)

    def _apply(self, entry: Entry, dirfd: int, name: str, host: str) -> None:
        if entry.type == "dir":
            if name == "__pycache__":
                self._clear_cache(dirfd, name, host)
            self.show("rmdir", host)
            if not self.dry_run:
                try:
                    os.rmdir(name, dir_fd=dirfd)
                except OSError as exc:
                    print(
                        f"install.sh: kept {host} ({os.strerror(exc.errno or 0).lower()})",
                        flush=True,
                    )
        elif entry.type == "tree":
            self.show("rm", "-r", host)
            if not self.dry_run:
                shutil.rmtree(name, dir_fd=dirfd)
        else:
            self.show("rm", host)
            if not self.dry_run:
                os.unlink(name, dir_fd=dirfd)


def commit(root: Root, recorder: Recorder, manifest: str, *, partial: bool) -> None:
    """Write the manifest: this run's entries, plus the previous ones of parts not redone.

    With ``partial`` (the install failed half-way) every previous entry is kept too. Else the
    previous entries of the parts this run installed that it did not record again (an older
    version's files) are removed first.
    """
    parts = {e.part for e in recorder.entries}
    recorder.mkdir("files", os.path.dirname(manifest))
    recorder.add(Entry("files", "file", manifest))
    new_paths = recorder.paths
    carried = [e for e in recorder.old if e.path not in new_paths]
    if not partial:
        stale = [e for e in carried if e.part in parts]
        Remover(root).remove(stale)
        carried = [e for e in carried if e.part not in parts]
    text = HEADER + "".join(e.line() for e in carried + recorder.entries)
    with root.parent(manifest) as (dirfd, name):
        write_file(dirfd, name, text.encode(), 0o644)


def main(argv: list[str] | None = None) -> int:
    """Command line: see --help."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/", help="DESTDIR, or / (default)")
    parser.add_argument("--manifest", required=True, help="the manifest's path below ROOT")
    parser.add_argument("--new", help="the manifest being written by this install (a work file)")
    parser.add_argument(
        "--check-owner",
        action="store_true",
        help="refuse a manifest that someone other than root could have written",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, args in {
        "mkdir": ["part", "path"],
        "install": ["part", "source", "path"],
        "link": ["part", "target", "path"],
        "tree": ["part", "path"],
        "extract-wheel": ["part", "wheel", "site"],
    }.items():
        command = sub.add_parser(name)
        command.add_argument("part", choices=PARTS)
        for arg in args[1:]:
            command.add_argument(arg)
    sub.add_parser("commit").add_argument("--partial", action="store_true")
    remove = sub.add_parser("remove", help="uninstall what the manifest lists")
    remove.add_argument("--dry-run", action="store_true")
    remove.add_argument("--entries", help="remove these entries (a file, - for stdin) instead")
    opts = parser.parse_args(argv)

    try:
        root = Root(opts.root, check_owner=opts.check_owner)
        if opts.command == "remove":
            remover = Remover(root, dry_run=opts.dry_run)
            if opts.entries is not None:
                source = sys.stdin if opts.entries == "-" else open(opts.entries)  # noqa: SIM115
                remover.remove(parse(source.read(), opts.entries))
                return 0
            text = root.read(opts.manifest)
            if text is None:
                raise ManifestError(f"no manifest at {root.host(opts.manifest)}")
            remover.remove(parse(text, root.host(opts.manifest)), last=opts.manifest)
            return 0
        if opts.new is None:
            parser.error(f"{opts.command} needs --new")
        recorder = Recorder(root, opts.manifest, opts.new)
        if opts.command == "commit":
            commit(root, recorder, opts.manifest, partial=opts.partial)
        elif opts.command == "mkdir":
            recorder.mkdir(opts.part, opts.path)
        elif opts.command == "install":
            recorder.install(opts.part, Path(opts.source).read_bytes(), opts.path)
        elif opts.command == "link":
            recorder.link(opts.part, opts.target, opts.path)
        elif opts.command == "tree":
            recorder.tree(opts.part, opts.path)
        else:
            recorder.extract_wheel(opts.part, opts.wheel, opts.site)
    except (ManifestError, OSError) as exc:
        print(f"install.sh: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
