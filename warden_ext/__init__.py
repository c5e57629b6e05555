"""Compiled (Cython) hot paths of Warden PBX.

This package is a leaf: it imports nothing from ``warden``. Each module has a
pure-Python twin with the same API in ``warden.media``; ``warden.media`` picks
one (``WARDEN_NO_EXTENSIONS=1`` forces the pure twins).
"""
