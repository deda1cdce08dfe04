"""Chest X-ray scoring with TorchXRayVision: preprocessing, weights, inference, import, stage."""
