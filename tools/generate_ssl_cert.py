#!/usr/bin/env python3
"""Create a local CA and a TLS server certificate for Warden PBX.

Thin wrapper around :mod:`warden.certtool`, so it works from a source checkout
(``tools/generate_ssl_cert.py --san pbx.example.com``) as well as installed.
"""

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("warden") is None:
    # Running from a checkout: the package sits next to tools/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import warden.certtool  # noqa: E402  (needs the sys.path fix above)

if __name__ == "__main__":
    sys.exit(warden.certtool.main())
