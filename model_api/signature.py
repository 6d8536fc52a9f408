"""Names of the exported serving signatures, their inputs and outputs.

The input name follows TF Serving's ResNet example (`image_bytes`), so stock clients work:
https://github.com/tensorflow/serving/blob/master/tensorflow_serving/example/resnet_client_grpc.py
"""

# TF Serving's default signature key (tensorflow/python/saved_model/signature_constants.py).
SERVING_DEFAULT = "serving_default"
# Second signature: already-preprocessed float32 images in [-1, 1].
PREDICT_IMAGES = "predict_images"
PREDICT_METHOD = "tensorflow/serving/predict"

INPUT_IMAGE_BYTES = "image_bytes"
INPUT_IMAGES = "images"

OUTPUT_PROBABILITIES = "probabilities"
OUTPUT_CLASSES = "classes"
OUTPUT_LABELS = "labels"
OUTPUT_LOGITS = "logits"
OUTPUT_KEYS = (OUTPUT_PROBABILITIES, OUTPUT_CLASSES, OUTPUT_LABELS, OUTPUT_LOGITS)



def is_served_signature(name: str) -> bool:
    """Whether a SignatureDef key names a signature to predict with: False for SavedModel's reserved
    keys (`__saved_model_init_op`, `__saved_model_train_op`: tensorflow/cc/saved_model/constants.h),
    which name ops to run at load or in training. The one rule for the loader's tensor check and for
    Predict; GetModelMetadata lists every SignatureDef, reserved ones included, as TF Serving does."""
    return not name.startswith("__")


# Files inside a version directory (TF Serving reads assets.extra/tf_serving_warmup_requests:
# https://www.tensorflow.org/tfx/serving/saved_model_warmup).
LABELS_FILE = "assets/labels.txt"
MODEL_CARD_FILE = "assets.extra/model_card.json"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

# Largest decoded image the signature accepts, in pixels (width * height), checked from the header
# before decoding. Sized for the 4 GiB serving pod (k8s/serve.yaml): one decode peaks at about
# 16 bytes a pixel (uint8 RGB, then float32 for the scaling; measured 624 MiB for 40 MP), and up to
# --grpc_max_threads (8 on 2 cores) requests decode at once, beside ~0.7 GiB of process and model.
# 16 MP (a 12 MP phone photo fits) keeps 8 decodes at ~2 GiB; at 40 MP, 8 would need ~5 GiB.
# Raise it at export (train-job / export-model --max-pixels, or TRAIN_MAX_PIXELS) with the pod's memory.
DEFAULT_MAX_PIXELS = 16_000_000

# Every refusal of one image by the signature (model_api/preprocess.py) starts with this; it is
# how a client tells an image's own error from a request-level one (model_api/status.py).
IMAGE_ERROR_PREFIX = "image is "
