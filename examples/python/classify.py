"""Classify images with an edgecnn bundle: python classify.py MODEL.edgecnn.tar.gz IMAGE [IMAGE ...]"""
import sys

import edgecnn.runtime

with edgecnn.runtime.load(sys.argv[1]) as model:
    for path, prediction in zip(sys.argv[2:], model.predict(sys.argv[2:], k=3)):
        top = ", ".join(f"{label} {score:.1%}" for label, score in prediction.top)
        print(f"{path}: {top}")
