"""`defect-gen info`: receptive field, parameters and GFLOPs of a model config."""

from __future__ import annotations

# The library's parameter names -> this command's flags (see errors.DefectGenError.with_params).
FLAGS = {"overrides": "--set", "num_defect": "--num_defect"}


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="receptive field, parameters and GFLOPs of a model config")
    p.add_argument("--config", required=True)
    p.add_argument("--num_defect", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")


def run(args) -> int:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from defect_gen.config import load_config, resolve_num_defect
    from defect_gen.core.unet import build_unet, num_channels, receptive_field

    cfg = resolve_num_defect(load_config(args.config, args.overrides), args.num_defect)
    size = cfg.model.image_size
    # On the meta device: shapes and FLOPs without weights or activations (a 256 px large
    # config in 5 s instead of 22 s and gigabytes, and any size fits).
    with torch.device("meta"):
        model = build_unet(cfg.model, cfg.num_defect).eval()
        x = torch.zeros(1, num_channels(cfg.num_defect), size, size)
        t = torch.zeros(1, dtype=torch.long)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, t)
    rf = receptive_field(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    scope = "global (attention)" if rf.is_global else f"{rf.pixels} px"
    print(f"config:           {args.config}")
    print(f"image size:       {size} px, {cfg.num_defect} defect classes, {num_channels(cfg.num_defect)} channels")
    print(f"receptive field:  {scope}; convolutions alone: {rf.conv_pixels} px "
          f"= {rf.conv_pixels / size:.2f} x image side")
    print(f"parameters:       {params / 1e6:.2f} M")
    print(f"forward GFLOPs:   {counter.get_total_flops() / 1e9:.2f} per image")
    return 0
