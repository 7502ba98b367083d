"""Kafka adapters over aiokafka: options, administration, record batches, the writers, the
group consumer."""
