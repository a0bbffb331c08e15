"""The hycan daemon: a thin trio shell around the sans-IO protocol and a backend.

Importing this package imports trio (the server); the entry point is
:func:`hycan.daemon.main.main` (``hycan-daemon``).
"""
