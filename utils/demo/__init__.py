"""Demo world: procedural toy-church scenes, their segmenter and a Frechet distance."""

from utils.demo.frechet import frechet_distance
from utils.demo.scenedata import SceneDataset, presence, render_batch, scenes_as_tensor
from utils.demo.scenes import CLASSES, N_CLASSES, TOP_KINDS, Scene, render_scene
from utils.demo.segmenter import Segmenter, load_segmenter

__all__ = ['CLASSES', 'N_CLASSES', 'TOP_KINDS', 'Scene', 'SceneDataset',
           'Segmenter', 'frechet_distance', 'load_segmenter', 'presence',
           'render_batch', 'render_scene', 'scenes_as_tensor']
