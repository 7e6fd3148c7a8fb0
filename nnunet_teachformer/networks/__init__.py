"""Architectures: the transformer teachers and the light students, each with distillation taps."""
