"""One set of metrics, logs and traces for every backend."""
