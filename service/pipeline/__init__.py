"""The pipeline: one batch of input records through the sink, the writer and the commit.

No Kafka client here: records come in as plain attributes (`seams.InputRecord`), and what
reaches Kafka goes out through the seams of `service.pipeline.seams`.
"""
