"""Detectors that train a network on the normal data (needs PyTorch at fit time).

Importing this package registers them; torch and the knowledge models are imported only
when a detector is constructed or fitted, so the rest of oddkit works without them.

* :mod:`.knowledge_exposure`: ``ke_head`` and ``ke_resnet18``, Knowledge Exposure
  (Akhavan Anvari et al., arXiv 2406.10617).
"""

from .knowledge_exposure import KEHead, KEResNet18

__all__ = ["KEHead", "KEResNet18"]
