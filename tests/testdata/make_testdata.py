#!/usr/bin/python3
"""Regenerates the committed test images from photographs shipped in Debian's
python3-skimage (chelsea: a cat, coffee: a cup, astronaut), in the encodings
the server must handle. Run from this directory; outputs are committed."""
import numpy as np
from PIL import Image
from skimage import data

chelsea = Image.fromarray(data.chelsea())       # 451x300 RGB
coffee = Image.fromarray(data.coffee())         # 600x400 RGB
astronaut = Image.fromarray(data.astronaut()).resize((384, 384), Image.BILINEAR)

chelsea.save("chelsea.jpg", quality=90)
coffee.save("coffee.jpg", quality=90)
astronaut.save("astronaut.jpg", quality=90)
chelsea.save("chelsea.png")
chelsea.convert("L").save("chelsea_gray.png")
chelsea.convert("P", palette=Image.ADAPTIVE, colors=256).save("chelsea_palette.png")
rgba = chelsea.convert("RGBA")
rgba.putalpha(255)
rgba.save("chelsea_rgba.png")
# 16-bit RGB PNG: PIL cannot write 16-bit RGB, so write the file with
# OpenCV-compatible raw bytes via numpy and zlib.
import struct, zlib
arr16 = (np.asarray(chelsea).astype(np.uint16) * 257)
h, w, _ = arr16.shape
raw = b"".join(b"\x00" + arr16[y].astype(">u2").tobytes() for y in range(h))
def chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
open("chelsea_16bit.png", "wb").write(png)
# EXIF orientation 6 (rotate 90 CW to display): store the pixels rotated so
# that honouring the tag gives back the upright cat.
exif = Image.Exif()
exif[0x0112] = 6
chelsea.rotate(90, expand=True).save("chelsea_exif_rot.jpg", quality=90, exif=exif)
