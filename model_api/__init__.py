"""The API contract shared by export, serving and client: nothing here imports TensorFlow.

One definition of each name, so the exporter, the local server and the clients cannot drift.
"""
