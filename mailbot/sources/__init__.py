"""Sources of inbound mail; each hands raw bytes to :func:`mailbot.pipeline.ingest`."""
