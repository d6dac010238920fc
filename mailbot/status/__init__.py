"""What the operator observes: the health board and the Prometheus metrics."""
