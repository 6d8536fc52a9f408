"""Publishing a trained classifier: the SavedModel archive, its checks, and the atomic placement.

Imports only model_api (the contract); training calls it, serving never does."""
