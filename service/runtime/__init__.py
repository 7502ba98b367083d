"""The process lifecycle: composition, start/handle/stop, rebalances, flow control, health."""
