"""Python clients for models served by TensorFlow Serving (or this project's local server).

    from client import ModelClient
    with ModelClient.grpc("localhost:8500", model="cats_vs_dogs") as model:
        for p in model.predict_files(["cat.jpg"]):
            print(p.source, p.label, p.probability)

Needs tensorflow-serving-api (for the gRPC protos), never the training code.
"""
from client.api import ModelClient, expand_paths
from client.options import CallOptions
from client.results import Prediction, ServerError, VersionStatus

__all__ = ["ModelClient", "CallOptions", "Prediction", "ServerError", "VersionStatus", "expand_paths"]
