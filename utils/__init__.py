"""Shared building blocks, below everything in rewrite/ (they import nothing of it).

    stylegan2/     the StyleGAN2 generator as nested Sequentials, checkpoints, NVlabs .pkl reading, its rewrite site
    generators/    the family-neutral seam: DataBag, RewriteSite, rewrite_site; families and their checkpoints
    nethook.py     cutting nested Sequentials into pieces; tracing and editing named layers
    zdataset.py    seeded z-samples (image numbers mean the same images everywhere)
    runningstats.py  streaming statistics (second moment, quantiles)
    masks.py       mask PNG data URLs, decoded as the original tool did; geometry.py: boxes and clip placement
    imgviz.py      images to uint8, tiles, outlines; paintwidget.py: the canvas widget
    fileio.py      atomic writes; distributed.py: torchrun helpers (World, reductions)
    demo/          the procedural demo world, its segmenter and trainers (used by metrics and experiments)
"""
