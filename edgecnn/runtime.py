"""The Python runtime, as documented: `edgecnn.runtime.load(BUNDLE).predict(images)`. Needs numpy, the
backend's runtime and (for image files) Pillow, never torch. The code lives in edgecnn.deploy.runtime."""

from edgecnn.deploy.runtime import Model, Prediction, load

__all__ = ["Model", "Prediction", "load"]
