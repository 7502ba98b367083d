"""Development-only code: `make run`'s demo and the embedded broker; not needed in the image."""
