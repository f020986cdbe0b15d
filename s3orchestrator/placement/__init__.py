"""The placement engine: choose stores, write copies, commit, read with failover, delete, clean up."""
