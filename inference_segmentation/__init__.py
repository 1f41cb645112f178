"""Semantic segmentation models (label maps) and their serving."""
