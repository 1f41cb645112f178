"""The bundled models served by NVIDIA Triton: the model repository generator (`repository`) and the
Python-back-end adapter every generated `model.py` re-exports (`model`). It sits above both
inference packages, since a repository holds the models of both."""
