"""The model: a timm-compatible ViT encoder (``vit``), a dense tumor head (``head``), their combination with
preprocessing (``predictor.Model``), timm checkpoint loading (``timm_compat.load_encoder``) and our own model
file format (``checkpoint.save_model`` / ``load_model``).

Import the submodules you need; this package itself imports nothing (``config`` works without torch).
"""
