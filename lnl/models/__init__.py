"""Backbones (timm registry) and teacher / meta networks."""

from lnl.models.backbones import create_backbone, features_and_logits

__all__ = ["create_backbone", "features_and_logits"]
