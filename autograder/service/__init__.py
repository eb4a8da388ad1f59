"""The grading service: HTTP API, durable queue, workers (see README, "The grading service")."""
