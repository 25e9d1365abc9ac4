"""Virtual machines through libvirt: `pool`, `network`, `image`, `vm`.

Nothing here imports the libvirt bindings at module import time: a run that
only manages files on hosts never pays for them (see _client.libvirt_conn).
"""
