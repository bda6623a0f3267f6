"""The model zoo of issue 12: backdoored, clean and weak-class models split into a
tuning half and a held-out half (see manifest.py), built and cached by
`python -m benchmarks.zoo.build`; benchmarks list the built ones with `zoo_models`."""

from benchmarks.zoo.load import ZooModel, zoo_models

__all__ = ["ZooModel", "zoo_models"]
