"""image-classifier: a KServe custom predictor that classifies images with dynamic batching."""

__version__ = "0.1.0"
