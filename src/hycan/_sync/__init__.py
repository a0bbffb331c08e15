"""The blocking client (stdlib only). ``client.py`` is generated from ``_async/client.py``."""
