"""POSIX access ACLs on the daemon's socket file, so ``--allow-uid`` never opens it to all.

The socket stays ``0660`` (owner and access group); each allowed uid gets a named-user
entry ``u:UID:rw``, written as the kernel's ``system.posix_acl_access`` extended
attribute (the format of linux/posix_acl_xattr.h), with no libacl needed. A uid that is
neither the owner, in the group, nor listed is then refused by the kernel at ``connect()``
and never reaches the daemon.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

XATTR = "system.posix_acl_access"
_VERSION = 2  # POSIX_ACL_XATTR_VERSION
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")  # e_tag, e_perm, e_id
_UNDEFINED_ID = 0xFFFFFFFF
# e_tag values (linux/posix_acl.h); entries must come in this order, users sorted by id.
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def _perm(mode: int, shift: int) -> int:
    return (mode >> shift) & 0o7


def access_acl(mode: int, uids: Iterable[int]) -> bytes:
    """The ACL for a file of ``mode`` that also grants read+write to each of ``uids``."""
    users = sorted(set(uids))
    entries = [(_USER_OBJ, _perm(mode, 6), _UNDEFINED_ID)]
    entries += [(_USER, 0o6, uid) for uid in users]
    entries.append((_GROUP_OBJ, _perm(mode, 3), _UNDEFINED_ID))
    if users:  # named entries need a mask; it caps them and the group entry
        entries.append((_MASK, 0o6 | _perm(mode, 3), _UNDEFINED_ID))
    entries.append((_OTHER, _perm(mode, 0), _UNDEFINED_ID))
    return _HEADER.pack(_VERSION) + b"".join(_ENTRY.pack(*entry) for entry in entries)


def grant(path: str, uids: Iterable[int]) -> None:
    """Let ``uids`` connect to the socket at ``path`` without loosening its mode.

    Raises OSError (EOPNOTSUPP) on a file system without POSIX ACLs.
    """
    mode = os.lstat(path).st_mode
    os.setxattr(path, XATTR, access_acl(mode, uids), follow_symlinks=False)
