"""Pure-Python twins of the compiled ``warden_ext`` modules, same API each.

Selected by ``warden.media.accel.load`` when ``WARDEN_NO_EXTENSIONS`` is set;
slower, but needs no compiler, and the tests hold each to its compiled twin.
"""
