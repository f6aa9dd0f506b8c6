"""The tornado_kerb demo server; run ``python -m demo`` (see ``demo/__main__.py``)."""
