"""Sinks: where SMS requests are handed over (contract §6, §10), one module per provider.

The seam they implement (`Sink`, `Delivery`) is in `service.pipeline.seams`; `memory` is its
test double, `limits` the rate limit and circuit breaker the delivering sinks share.
"""
