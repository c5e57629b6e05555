"""RTP relay data plane, compiled or pure as ``accel`` decides.

The choice is made once, when this module is first imported; see
``warden_ext/relay.pyi`` for the contract both implementations keep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warden.media.accel import load

__all__ = ["MAX_PACKET", "Relay"]

_impl = load("relay")

if TYPE_CHECKING:
    from warden_ext.relay import Relay
else:
    Relay = _impl.Relay

MAX_PACKET: int = _impl.MAX_PACKET
