"""The HTTPS admin API: Flask under gunicorn, sharing the PBX's TLS policy.

::

    app = create_app(config)                 # Flask app factory
    control_path(config)                     # <folder of store.path>/warden.sock

Served by gunicorn with ``gunicorn -c python:warden.api.gunicorn_conf
warden.api.wsgi:app`` (the config file from ``$WARDEN_CONFIG``), which is
what :class:`warden.api.supervisor.APISupervisor` runs beside the PBX. This
package imports nothing from ``warden.sip``, ``warden.transport``,
``warden.media`` or ``warden_ext`` (the store it uses hashes passwords with
``warden.sip.auth``): it reaches the PBX only through the control socket.
"""

from .app import MAX_BODY, create_app
from .pbx import control_path

__all__ = ["MAX_BODY", "control_path", "create_app"]
