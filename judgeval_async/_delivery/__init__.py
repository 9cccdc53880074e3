"""Building blocks of the delivery pipeline: payload envelopes, the memory backlog, the disk spool, endpoint health.

Nothing here is public API, and nothing here imports a module above ``_config``: the pipeline modules wire these
pieces together.

Modules: ``_envelope`` (a payload and its metadata); ``_backlog`` (memory, bounded by bytes and age); the disk
spool: ``_format`` (record format), ``_segment`` (files, locks, scans), ``_writer`` (this process's segments),
``_counters`` (``SpoolStats``), ``_spool`` (the ``Spool``); ``_aimd`` / ``_endpoint`` (adaptive concurrency,
endpoint health). Each imports only from the rows before it in ``scripts/check_layers.py`` (``DELIVERY_ROWS``).
"""
