"""G.711 mu-law and A-law codec, compiled or pure as ``accel`` decides.

The choice is made once, when this module is first imported; see
``warden_ext/g711.pyi`` for the contract both implementations keep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from warden.media.accel import load

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["alaw_decode", "alaw_encode", "ulaw_decode", "ulaw_encode"]

_impl = load("g711")

ulaw_decode: Callable[[Buffer], bytes] = _impl.ulaw_decode
alaw_decode: Callable[[Buffer], bytes] = _impl.alaw_decode
ulaw_encode: Callable[[Buffer], bytes] = _impl.ulaw_encode
alaw_encode: Callable[[Buffer], bytes] = _impl.alaw_encode
