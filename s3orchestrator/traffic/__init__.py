"""Monthly traffic of the stores (bytes and requests the daemon sends them) against their caps."""
