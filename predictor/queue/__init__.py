"""Queue mode: jobs in a Redis stream, the worker that classifies them, the /v1/jobs routes."""
