"""The agent: claims runs for its queues and launches them through a backend."""
