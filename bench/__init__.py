"""``python -m bench`` (from the repository root): hycan's performance beside baselines.

Five parts (see docs/perf.md for how to read the table):

1. ``cheap_op`` -- round trip of a cheap op (PING, STATUS, UP on a missing link) through
   the daemon over one persistent connection vs a minimal stdlib thread-per-connection Unix
   echo server answering the same frame sizes, measured by the same client loop, pinned
   with ``taskset`` and unpinned.
2. ``throughput`` -- 64 concurrent clients in several processes vs the same echo server.
3. ``netlink`` -- as root, in a throwaway netns with a veth pair: up/down through the daemon
   vs in-process pyroute2 ``IPRoute`` (reused) vs spawning ``ip link set``, the C
   reference of the C++ design, PING while another client toggles (``_hammer``), and the
   toggle with 10 vs 5,000 links in the namespace (``scale``).
4. ``startup`` -- ``import hycan`` and a one-shot ``hycan up`` vs ``python -c pass``.
5. ``clients`` -- the trio client vs the sync client on PING.

Each part is the module of its name (``bench/cheap_op.py`` ...); ``run`` parses the command
line, runs the parts and prints the table; the ``_`` modules are what they share and the
servers and workers they start as subprocesses.

Goals are ratios against a baseline measured in the same run; tests never assert speed.
Not part of the ``hycan`` package (its wheel has none of this): ``nox -s bench`` runs it.
"""
