"""Shared building blocks: the StyleGAN2 generator, network hooks, z-samples, statistics."""
