"""What the benchmarks (wss/bench/, flags and main only) measure with: synthetic batches,
timing and memory, the step's parts, and the learnability probe's models."""
