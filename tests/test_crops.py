import numpy as np

from objalign.crops.masks import mask_to_rle, rle_to_mask, segmentation_to_rle
from objalign.crops.render import crop_window, render_crop


def test_crop_window_pads_and_squares():
    assert crop_window(10, 20, 40, 20, padding=0.0, square=False) == (10, 20, 50, 40)
    x0, y0, x1, y1 = crop_window(10, 20, 40, 20, padding=0.1, square=True)
    assert x1 - x0 == y1 - y0 == 48  # longer side 40 + 2 * 0.1 * 40
    assert (x0 + x1) / 2 == 30 and (y0 + y1) / 2 == 30  # centred on the box


def test_render_fills_outside_image_and_mask():
    img = np.zeros((10, 10, 3), np.uint8)
    img[...] = 200
    out = render_crop(img, (-5, -5, 5, 5), 10, fill=(1, 2, 3), resample="nearest")
    assert (out[0, 0] == (1, 2, 3)).all() and (out[9, 9] == 200).all()
    mask = np.zeros((10, 10), bool)
    mask[5:, 5:] = True
    out = render_crop(img, (0, 0, 10, 10), 10, mask=mask, fill=(9, 9, 9), resample="nearest")
    assert (out[0, 0] == 9).all() and (out[7, 7] == 200).all()


def test_rle_round_trip_and_polygons():
    m = np.zeros((30, 40), bool)
    m[5:20, 10:33] = True
    rle = mask_to_rle(m)
    assert isinstance(rle["counts"], str)
    assert np.array_equal(rle_to_mask(rle), m)
    poly = [[10, 5, 33, 5, 33, 20, 10, 20]]
    r = segmentation_to_rle(poly, 30, 40)
    assert abs(rle_to_mask(r).sum() - 23 * 15) < 40
    assert segmentation_to_rle([], 30, 40) is None
    assert segmentation_to_rle({"size": [30, 40], "counts": rle["counts"]}, 30, 40)["counts"] == rle["counts"]
