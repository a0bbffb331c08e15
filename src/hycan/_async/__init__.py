"""The trio client. ``client.py`` here is the source the sync client is generated from."""
