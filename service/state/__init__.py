"""What the service remembers and how it is restored: the dedupe state and the tables."""
