"""The simulated backend on virtual time: latency, clock and fault models, a runner, profiles."""
