"""Label formats in and out, pure: safe readers of hostile input and importers to neutral items.

No gRPC server, no database, no Kafka: an import job opens a :class:`~.safety.SafeZip` (or a
single file), hands it to an importer from :mod:`.importers` and gets a stream of
:class:`~.model.ImportedItem` and :class:`~.model.RowError`. ``docs/formats.md`` is the mapping.
"""
