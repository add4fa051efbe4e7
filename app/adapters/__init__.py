"""Adapters to the outside world: the database, the broker, the cache and object storage, each with an embedded twin."""
