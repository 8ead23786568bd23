"""Built-in datasets. Importing this package registers them in ``core.registry.DATASETS``.

Every dataset is a ``torch.utils.data.Dataset`` built as ``Cls(root, split, limit, **load_args)`` whose items are
dicts: ``image`` ``(3, H, W)`` float in [-1, 1], ``index``, ``name``, and when available ``depth`` ``(H, W)``
(ground truth, background at the per-image maximum), ``mask`` ``(H, W)``, ``identity``, ``view`` (yaw, pitch,
roll in degrees) and ``light`` ``(4,)``. ``has_depth`` says whether SIDE/MAD can be computed. The classmethod
``prepare(root, **args)`` generates the data (procedural datasets) or checks it (folders) and returns counts.
"""

from benchmark.datasets import folders, synface_proc  # noqa: F401  (registration)
