"""defect-gen: few-shot generation of defect image + pixel-mask pairs with two diffusion
UNets of different receptive fields (a reimplementation of Defect-Gen, ECCV 2024)."""

__version__ = "0.1.0"
