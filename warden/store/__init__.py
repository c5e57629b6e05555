"""The durable store: extensions, registrations (bindings), CDRs and API tokens in SQLite.

One :class:`Store` per process, shared by its threads::

    store = Store(cfg.store.path)
    store.add_extension("1001", password, realm=cfg.sip.realm, display_name="Alice")
    store.credentials("1001")  # (ha1_md5, ha1_sha256, realm) or None

Errors are :class:`warden.errors.StoreError` (``status`` hints 400/404/409/5xx).
"""

from warden.errors import ExtensionExists, NoSuchExtension, StoreError

from ._connection import MEMORY
from .bindings import TRANSPORTS, Binding, binding_key
from .cdrs import CDR, DISPOSITIONS, MAX_QUERY_LIMIT
from .db import Store
from .extensions import MIN_PASSWORD_LENGTH, Extension, check_number, check_password
from .migrations import SCHEMA_VERSION
from .tokens import ROLES, TOKEN_PREFIX, APIToken, check_token_name, hash_token

__all__ = [
    "CDR",
    "DISPOSITIONS",
    "MAX_QUERY_LIMIT",
    "MEMORY",
    "MIN_PASSWORD_LENGTH",
    "ROLES",
    "SCHEMA_VERSION",
    "TOKEN_PREFIX",
    "TRANSPORTS",
    "APIToken",
    "Binding",
    "Extension",
    "ExtensionExists",
    "NoSuchExtension",
    "Store",
    "StoreError",
    "binding_key",
    "check_number",
    "check_password",
    "check_token_name",
    "hash_token",
]
