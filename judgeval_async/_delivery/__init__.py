"""Building blocks of the delivery pipeline: payload envelopes, the memory backlog, the disk spool, endpoint health.

Nothing here is public API, and nothing here imports a module above ``_config``: the pipeline modules wire these
pieces together.

Modules: ``_envelope`` (a payload and its metadata), ``_backlog`` (memory, bounded by bytes and age), ``_format`` /
``_segment`` / ``_spool`` (the disk spool: record format, files, the spool), ``_aimd`` / ``_endpoint`` (adaptive
concurrency, endpoint health). Dependency direction inside the package: ``_envelope`` <- ``_format`` / ``_aimd`` /
``_backlog`` <- ``_segment`` / ``_endpoint`` <- ``_spool`` (enforced by ``scripts/check_layers.py``).
"""
