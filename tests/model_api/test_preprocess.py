import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from model_api.status import is_image_error
from tests.conftest import encode
from model_api.preprocess import bytes_to_input, decode_checked, format_example, header_size


def seed_format_example(image, label, img_size):
    """The tutorial's function, verbatim."""
    image = tf.cast(image, tf.float32)
    image = (image / 127.5) - 1
    image = tf.image.resize(image, (img_size, img_size))
    return image, label


def test_preprocessing_equals_the_seed_formula():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (123, 77, 3), dtype=np.uint8)
    expected, _ = seed_format_example(image, 0, 160)
    np.testing.assert_array_equal(format_example(image, 160).numpy(), expected.numpy())


def test_scaling_maps_pixels_to_minus_one_one():
    image = np.array([[[0, 127, 255]]], np.uint8).repeat(160, 0).repeat(160, 1)
    out = format_example(image, 160).numpy()
    np.testing.assert_allclose(out[0, 0], [-1.0, 127 / 127.5 - 1, 1.0], atol=1e-6)


@pytest.mark.parametrize("fmt,mode,size", [("JPEG", "RGB", (31, 17)), ("PNG", "RGBA", (5, 300)),
                                           ("GIF", "P", (64, 3)), ("BMP", "RGB", (7, 9))])
def test_header_size_reads_height_and_width_without_decoding(fmt, mode, size):
    data = encode(Image.new(mode, size), fmt)
    height, width = header_size(tf.constant(data))
    assert (int(height), int(width)) == (size[1], size[0])


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"this is not an image at all", "not a JPEG, PNG, GIF or BMP"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated"),
])
def test_bad_bytes_fail_with_a_message_naming_the_problem(data, message):
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        bytes_to_input(tf.constant(data), 32)


@pytest.mark.parametrize("data", [
    b"",
    b"this is not an image at all",
    b"\x89PNG\r\n\x1a\n\x00\x00",
    b"\xff\xd8\xff\xe0" + b"\x00" * 64,  # a JPEG header and no image: TF's decoder refuses it
    b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00",
])
def test_every_refusal_of_one_image_is_recognised_by_the_client_as_that_images_error(data):
    # The client splits a batch only for an image's own error (client/api.py), which it
    # recognises from the message alone (model_api/status.is_image_error).
    with pytest.raises(tf.errors.InvalidArgumentError) as refused:
        bytes_to_input(tf.constant(data), 32)
    assert is_image_error(refused.value.message), refused.value.message


def test_an_image_over_the_pixel_limit_is_refused_before_decoding():
    # A PNG header claiming 100000 x 100000 pixels and no pixel data at all.
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    with pytest.raises(tf.errors.InvalidArgumentError, match="too large"):
        decode_checked(tf.constant(header), max_pixels=40_000_000)
