"""Evaluate what a server answers: `predict evaluate` and `predict compare`.

metrics.py   the statistics, in plain Python
folder.py    the labelled image folder (the training job's layout)
classes.py   what the model's classes are, learned through TF Serving's public API only
labelled.py  classify a labelled folder through a ModelClient
evaluate.py  one model version: figures, report.json, predictions.jsonl
compare.py   two versions on the same images: agreement, McNemar's exact test
outputs.py   what was asked of which server, the output folder, report.json and predictions.jsonl
figures.py   the PNGs (matplotlib, Agg, imported only when writing them)
"""
