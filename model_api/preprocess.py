"""The one preprocessing, shared by the training pipeline and the exported signature.

bytes -> RGB uint8 -> float32 -> (x / 127.5) - 1 -> bilinear resize to img_size x img_size.

The scaling-then-resize order is the tutorial's `format_example`:
    image = tf.cast(image, tf.float32)
    image = (image / 127.5) - 1
    image = tf.image.resize(image, (IMG_SIZE, IMG_SIZE))
Serving calls `decode_checked` + `format_example` inside the SavedModel graph, so clients
send raw bytes and can never resize differently from training.
"""
from __future__ import annotations

import tensorflow as tf

from model_api.signature import DEFAULT_MAX_PIXELS, IMAGE_ERROR_PREFIX


def format_example(image: tf.Tensor, img_size: int) -> tf.Tensor:
    """uint8 (or any numeric) RGB image [H, W, 3] or batch -> float32 in [-1, 1], resized."""
    image = tf.cast(image, tf.float32)
    image = (image / 127.5) - 1
    return tf.image.resize(image, (img_size, img_size))


def decode_rgb(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP -> uint8 [H, W, 3]; grayscale and RGBA become RGB, a GIF
    gives its first frame. Raises InvalidArgumentError on undecodable bytes."""
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _read_uint(image_bytes: tf.Tensor, offset: int, length: int, little_endian: bool) -> tf.Tensor:
    raw = tf.io.decode_raw(tf.strings.substr(image_bytes, offset, length), tf.uint8)
    raw = tf.cast(raw[:length], tf.int64)
    weights = [256 ** i for i in range(length)]
    if not little_endian:
        weights = weights[::-1]
    return tf.reduce_sum(raw * tf.constant(weights, tf.int64))


def header_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 read from the header alone, before any pixel is decoded.

    JPEG: tf.image.extract_jpeg_shape (SOF marker). PNG: IHDR width/height (big-endian,
    bytes 16-23). GIF: logical screen (little-endian, bytes 6-9). BMP: BITMAPINFOHEADER
    (little-endian, bytes 18-25; a negative height means top-down rows).
    Fails with InvalidArgument naming the problem for empty, unknown or truncated input.
    """
    # Each check runs before the next step reads the bytes: explicit control dependencies,
    # since tf.function only orders stateful ops among themselves.
    length = tf.strings.length(image_bytes)
    not_empty = tf.debugging.Assert(length > 0, [IMAGE_ERROR_PREFIX + "empty (0 bytes)"])
    with tf.control_dependencies([not_empty]):
        is_png = tf.equal(tf.strings.substr(image_bytes, 0, 4), b"\x89PNG")
        is_gif = tf.equal(tf.strings.substr(image_bytes, 0, 3), b"GIF")
        is_bmp = tf.equal(tf.strings.substr(image_bytes, 0, 2), b"BM")
        is_jpeg = tf.strings.substr(image_bytes, 0, 3) == b"\xff\xd8\xff"
        known = tf.debugging.Assert(
            is_png | is_gif | is_bmp | is_jpeg,
            [IMAGE_ERROR_PREFIX + "not a JPEG, PNG, GIF or BMP file (unknown or corrupt header); its first bytes:",
             tf.strings.substr(image_bytes, 0, 8)])
    with tf.control_dependencies([known]):
        needed = tf.where(is_png, 24, tf.where(is_gif, 10, tf.where(is_bmp, 26, 4)))
        complete = tf.debugging.Assert(length >= needed, [IMAGE_ERROR_PREFIX + "truncated: its header is incomplete"])

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(image_bytes), tf.int64)
        return shape[0], shape[1]

    def png():
        return _read_uint(image_bytes, 20, 4, False), _read_uint(image_bytes, 16, 4, False)

    def gif():
        return _read_uint(image_bytes, 8, 2, True), _read_uint(image_bytes, 6, 2, True)

    def bmp():
        height = _read_uint(image_bytes, 22, 4, True)
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)  # two's complement
        return height, _read_uint(image_bytes, 18, 4, True)

    with tf.control_dependencies([complete]):
        return tf.case([(is_png, png), (is_gif, gif), (is_bmp, bmp)], default=jpeg, exclusive=False)


def decode_checked(image_bytes: tf.Tensor, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """decode_rgb after refusing, from the header, an image larger than `max_pixels`."""
    height, width = header_size(image_bytes)
    limit_mp = max_pixels / 1e6
    within_limit = tf.debugging.Assert(
        height * width <= tf.constant(max_pixels, tf.int64),
        [f"{IMAGE_ERROR_PREFIX}too large: over the {limit_mp:g}-megapixel limit; its height and width are", height, width])
    with tf.control_dependencies([within_limit]):
        return decode_rgb(image_bytes)


def bytes_to_input(image_bytes: tf.Tensor, img_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """One encoded image -> the model's float32 [img_size, img_size, 3] input."""
    return format_example(decode_checked(image_bytes, max_pixels), img_size)


def bytes_batch_to_input(image_bytes: tf.Tensor, img_size: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> tf.Tensor:
    """A batch of encoded images [N] -> the model's float32 [N, img_size, img_size, 3]: bytes_to_input per
    image (images differ in size, so each is decoded and resized alone, in a map_fn loop)."""
    return tf.map_fn(lambda one: bytes_to_input(one, img_size, max_pixels), image_bytes,
                     fn_output_signature=tf.TensorSpec([img_size, img_size, 3], tf.float32))
