"""Building blocks of the delivery pipeline: payload envelopes, the memory backlog, the disk spool, endpoint health.

Nothing here is public API, and nothing here imports a module above ``_config``: the pipeline modules wire these
pieces together.

Inside the package the dependency direction is ``_envelope`` <- ``_aimd`` <- ``_endpoint`` and ``_envelope`` <-
``_backlog`` / ``_spool`` (enforced by ``scripts/check_layers.py``).
"""
