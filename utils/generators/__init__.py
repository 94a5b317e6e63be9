"""The family-neutral seam between the rewriter and a generator.

    site.py      DataBag, RewriteSite, TargetLayer, rewrite_site(model, layernum): what the rewriter needs to
                 know of one rewritable layer, asked of the generator itself
    families.py  register_family, load_generator, save_generator, sampling_at: how each family's checkpoints
                 are read and written (StyleGAN2 registers itself like any other family)
"""

from utils.generators.families import (
    DEFAULT_FAMILY,
    FAMILIES,
    GeneratorFamily,
    checkpoint_family,
    family,
    family_of,
    load_generator,
    register_family,
    sampling_at,
    save_generator,
)
from utils.generators.site import DataBag, RewriteSite, TargetLayer, rewrite_site

__all__ = ['DEFAULT_FAMILY', 'FAMILIES', 'DataBag', 'GeneratorFamily', 'RewriteSite', 'TargetLayer',
           'checkpoint_family', 'family', 'family_of', 'load_generator', 'register_family', 'rewrite_site',
           'sampling_at', 'save_generator']
