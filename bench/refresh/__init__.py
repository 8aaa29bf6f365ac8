"""Refresh benchmark: broker read and full refresh cost against growing queues."""
