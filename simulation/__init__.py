"""simulation: the differentiable twin, synthetic data, metrics and decoders."""
