"""defect-gen: few-shot generation of defect image + pixel-mask pairs with two diffusion
UNets of different receptive fields (a reimplementation of Defect-Gen, ECCV 2024).

    from defect_gen import DefectGenerator

    gen = DefectGenerator.from_pretrained("runs/demo/large", "runs/demo/small", step_inference=200)
    out = gen.generate(8, seed=0, steps=20, sampler="dpmpp_2m")   # images, masks, metadata in memory
"""

__version__ = "0.1.0"

__all__ = ["DefectGenError", "DefectGenerator", "GeneratedPairs", "__version__"]

# Imported on first use (PEP 562): `defect-gen --help` and the CLI's other light paths
# start without loading torch.
_EXPORTS = {"DefectGenerator": "defect_gen.pipeline.generator", "GeneratedPairs": "defect_gen.pipeline.generator",
            "DefectGenError": "defect_gen.errors"}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'defect_gen' has no attribute {name!r}")
