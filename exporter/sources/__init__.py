"""Sources read the world (broker, workers, events) and return plain data."""
