"""``server.workers``: the supervisor process and the worker processes it keeps running."""
