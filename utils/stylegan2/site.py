"""StyleGAN2's rewrite site (the family-neutral seam is utils/generators/site.py): layer N's split modulated conv."""

from __future__ import annotations

import torch

from utils.generators.site import DataBag, RewriteSite, TargetLayer, rewrite_site

__all__ = ['RewriteSite', 'StyleGAN2Site', 'TargetLayer', 'rewrite_site']


class StyleGAN2Site(RewriteSite):
    """Layer N of a SeqStyleGAN2 (mconv='seq'): `layerN.sconv` is mconv (modulation -> adain -> dconv
    [-> blur]) -> noise -> activate; the rewritten conv is `layerN.sconv.mconv.dconv`, its keys the
    modulated input features, its values the activations."""

    def __init__(self, model: torch.nn.Module, layernum: int):
        if getattr(model, 'mconv', 'seq') != 'seq':
            raise ValueError("the rewriter needs the split modulated conv: build the model with mconv='seq'")
        model.check_layer(layernum)
        super().__init__(model, layernum, f'layer{layernum}.sconv.mconv.dconv', f'layer{layernum}.sconv.activate')
        self.styled = f'layer{layernum}.sconv'

    @property
    def mask_resolution(self) -> int:
        res = self.model.layer_resolution(self.layernum)
        return res // 2 if self.conv_module().upsample else res

    @property
    def noise_index(self) -> int:
        return self.model.get_submodule(f'{self.styled}.noise').index

    def styles(self, zs: torch.Tensor) -> torch.Tensor:
        """The mapping network, the layer's latent pick and its modulation: styles [N, I]."""
        model, layer = self.model, self.model.get_submodule(f'layer{self.layernum}')
        with torch.no_grad():
            bag = model.latents(model.style(model.bag_in(zs)))
            bag = layer[0](bag)                            # the layer's PickLatent: w for this layer
            return layer.sconv.mconv.modulation(bag).style

    def target_layer(self, key) -> TargetLayer:
        sconv, conv = self.model.get_submodule(self.styled), self.conv_module()
        blur = getattr(sconv.mconv, 'blur', None)
        noise_map = key.noise[sconv.noise.index]
        noise = sconv.noise.weight * noise_map if torch.is_tensor(noise_map) else torch.zeros(())
        return TargetLayer(scale=conv.scale, upsample=conv.upsample, demodulate=conv.demodulate,
                           blur=None if blur is None else (lambda x: blur(DataBag(fmap=x)).fmap),
                           noise=noise.detach(), bias=sconv.activate.bias.detach(),
                           style=key['style'].detach()[0])
