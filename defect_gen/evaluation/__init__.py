"""Evaluation: do the generated pairs help a segmentation model? (`defect-gen evaluate`)

- data: the real few-shot split, its held-out rest, synthetic `sample` folders;
- segmenter: a small UNet trained from scratch (DeepLabV3 where torchvision imports);
- metrics: per-class IoU, mIoU, defect-pixel precision / recall / F1, mean ± std;
- quality: memorisation, diversity, mask consistency, defect areas, optional KID / FID;
- run: the experiment itself; report: report.md, results.json and the plots.
"""
