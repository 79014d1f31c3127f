"""Lightning layer: the training module and its callbacks."""
