"""The pure core: text rules, the decision order, wire models and settlement (contract §2-§7).

Nothing in this package does I/O or reads the clock; a test imports it in a fresh interpreter
and checks that no Kafka, HTTP or metrics library was loaded.
"""
