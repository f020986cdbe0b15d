"""Placement: where an object's bytes go, how they are written, committed, read and removed."""
