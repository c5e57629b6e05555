"""Media plane: codecs now; relay and mixer to come.

Each hot path exists twice, compiled in ``warden_ext`` and pure in
``warden.media.pure``; ``accel`` picks one per process (see there for
``WARDEN_NO_EXTENSIONS``). Import codecs from here, e.g.
``warden.media.g711``, never from either implementation directly.
"""

from warden.media.accel import implementation, load

__all__ = ["implementation", "load"]
