"""Zero-Shot Super-Resolution (Shocher, Cohen & Irani, CVPR 2018) in PyTorch.

Pure compute: arrays and tensors in, arrays and tensors out.
"""

from .api import super_resolve
from .config import ConfigError, ZSSRConfig, config_from_dict, config_to_dict
from .inference import predict
from .model import ZSSRNet, build_model
from .normalize import Normalizer
from .sampling import ArrayCropSource, CropSource, Window
from .train import TrainingHistory, train

__version__ = "0.1.0"

__all__ = [
    "super_resolve", "predict", "train", "ZSSRNet", "build_model", "ZSSRConfig",
    "config_from_dict", "config_to_dict", "ConfigError", "Normalizer", "ArrayCropSource",
    "CropSource", "Window", "TrainingHistory", "__version__",
]
