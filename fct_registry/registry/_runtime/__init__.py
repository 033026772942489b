"""The pyfunc runtime shipped inside every fct-flavored model (see :mod:`.fct_pyfunc`).

Nothing here may import ``fct_registry``: the module is copied into each model's ``code/``
folder and must run where only numpy, onnxruntime and mlflow are installed.
"""
